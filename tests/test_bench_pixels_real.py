"""``bench/pixels_real.py`` (what ``make bench`` prints for burned-in text): its totals on
registry files and the machine reference its cost figures are divided by."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench" / "pixels_real.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pixels_real", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_totals_state_the_median_in_references_too(tmp_path: Path) -> None:
    """A run over labelled text-free files: nothing changed, and the cost figure that
    compares across machines (the median over images with text, here none, in runs of the
    reference) with the reference it was divided by."""
    bench = _bench()
    only = ("pydicom/CT_small.dcm", "pydicom/MR_small.dcm")
    result = bench.run(repeats=1, cache=tmp_path, only=only, synthetic=False)
    total = result["total"]
    assert total["images"] == 2 and total["text_free_changed"] == 0 and total["reference_ms"] > 0
    assert total["core_text_median_in_references"] == round(total["core_ms_text_median"] / total["reference_ms"], 2)
    rows = {row["what"]: row["value"] for row in bench.rows(result)}
    assert rows["the median above in runs of the machine's reference (detector, 512x512)"].endswith(
        f"({total['reference_ms']} ms a run)"
    )
