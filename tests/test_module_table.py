"""The README's module table is the map of the package: every module is on it, by name.

A newcomer looks a module up there before opening it (issue 17: "the layout in the
README's module table matches the folders"). No cluster: reads the README and lists the
package's files.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cxr_dask"
#: Old import paths kept as aliases of the moved modules (``cxr_dask.testing``).
ALIASES = {"synth", "synth_text"}


def module_table() -> str:
    """The rows of the README's ``| module | stage |`` table."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("| module | stage |")
    end = readme.index("\n\n", start)
    return readme[start:end]


def names_in(table: str) -> set[str]:
    """Every `code` span of the table, split into its path parts (``deid/header/``, ``pipeline.py``)."""
    names: set[str] = set()
    for span in re.findall(r"`([^`]+)`", table):
        for part in span.strip("/").split("/"):
            names.add(part.removesuffix(".py"))
    return names


def test_every_module_of_the_package_is_on_the_module_table() -> None:
    named = names_in(module_table())
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).with_suffix("")
        if module.name == "__init__" or (len(module.parts) == 1 and module.name in ALIASES):
            continue
        # a package's modules are named on its row, the package as a folder
        if not all(part in named for part in module.parts):
            missing.append(str(module))
    assert missing == [], f"modules not on the README's module table: {missing}"


def test_the_table_names_no_module_that_is_gone() -> None:
    """A row's ``.py`` files and folders exist (a moved module leaves no stale row)."""
    table = module_table()
    for span in re.findall(r"^\| ([^|]+) \|", table, flags=re.M)[2:]:
        for name in re.findall(r"`([^`]+)`", span):
            assert (PACKAGE / name).exists(), name
