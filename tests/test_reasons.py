"""The audit's reason classes are stated once (``cxr_dask.reasons``): the README's table
lists exactly them, and no module, fixture or corpus uses a reason outside them.

No cluster: reads the README and the package's source, and writes the small bad-input
corpus once (about a second).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cxr_dask.adversarial import all_cases
from cxr_dask.reasons import MEANING, Reason, markdown_table
from cxr_dask.testing.synth import bad_corpus

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cxr_dask"
#: verify is an independent auditor with its own vocabulary; synth and adversarial are
#: fixtures whose expected reasons are checked below by value
NOT_WRITERS = ("verify", "synth.py", "adversarial", "reasons.py")


def _sources() -> list[tuple[Path, ast.Module]]:
    return [
        (path, ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
        if not any(part in path.relative_to(PACKAGE).parts for part in NOT_WRITERS)
    ]


def test_every_member_has_one_meaning() -> None:
    assert set(MEANING) == set(Reason)
    assert all(meaning and "\n" not in meaning and "|" not in meaning for meaning in MEANING.values())
    assert all(reason == reason.lower() and reason.value == str(reason) for reason in Reason)


def test_readme_has_one_reason_table_equal_to_the_enum() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.count("| reason |") == 1, "one reason table (others point to it)"
    section = readme[readme.index("### What a run writes") :]
    section = section[: section.index("\n### ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert "\n".join(rows) + "\n" == markdown_table(), "regenerate with: python -m cxr_dask.reasons"
    listed = [re.match(r"\| `([a-z_]+)` \|", row) for row in rows[2:]]
    assert [m.group(1) for m in listed if m] == [r.value for r in Reason]


def test_quarantine_errors_take_members_not_literals() -> None:
    """A new ``QuarantineError("some_reason")`` fails here: reasons are ``Reason.X``."""
    calls = 0
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "QuarantineError" and node.args:
                calls += 1
                literals = [n for n in ast.walk(node.args[0]) if isinstance(n, ast.Constant)]
                assert not literals, f"{path.name}:{node.lineno}: a reason literal, not Reason.X"
    assert calls > 40  # the scan sees the call sites (header, containers, pixels, process)


def test_reason_attributes_name_members_and_no_module_spells_one_out() -> None:
    """``Reason.X`` names a member; no writer keeps a reason as a string literal (in an
    ``error`` column, a ``reason=`` argument, a set of classes)."""
    values = {r.value for r in Reason}
    spelt: list[str] = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "Reason":
                assert node.attr in Reason.__members__, f"{path.name}:{node.lineno}: Reason.{node.attr}"
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in values:
                spelt.append(f"{path.name}:{node.lineno}: {node.value}")
    assert not spelt, "reasons spelt out instead of Reason.X"


def test_expected_reasons_of_the_corpora_are_members(tmp_path: Path) -> None:
    bad = bad_corpus(str(tmp_path / "bad"), seed=5, huge_value_bytes=4096)
    expected = {f.reason for f in bad if f.reason is not None}
    expected |= {case.reason for case in all_cases() if case.reason is not None}
    assert len(expected) > 8
    assert expected <= set(Reason), expected - set(Reason)
