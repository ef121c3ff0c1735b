"""The synthetic corpus: deterministic, readable, and carrying the PHI it claims to carry."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import pydicom

from cxr_dask.testing.synth import TRANSFER_SYNTAXES, synthesize


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.dcm"))}


def as_text(value: object) -> str:
    """Private values read from implicit VR files come back as raw bytes."""
    return value.decode().strip() if isinstance(value, bytes) else str(value)


def element_values(ds: pydicom.Dataset):
    for element in ds.iterall():
        if element.VR != "SQ" and element.tag != 0x7FE00010:
            yield as_text(element.value)


def test_same_seed_same_bytes_other_seed_other_patients(tmp_path):
    a = synthesize(str(tmp_path / "a"), patients=3, seed=4, rows=64, columns=48)
    synthesize(str(tmp_path / "b"), patients=3, seed=4, rows=64, columns=48)
    c = synthesize(str(tmp_path / "c"), patients=3, seed=5, rows=64, columns=48)
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert {i.patient_id for i in a.images}.isdisjoint({i.patient_id for i in c.images})


def test_every_file_decodes_in_every_transfer_syntax(tmp_path):
    corpus = synthesize(str(tmp_path), patients=4, seed=1, rows=80, columns=64)
    assert {i.transfer_syntax for i in corpus.images} == set(TRANSFER_SYNTAXES)
    seen = set()
    for image in corpus.images:
        ds = pydicom.dcmread(tmp_path / image.relpath)
        pixels = ds.pixel_array
        assert pixels.shape == (80, 64)
        assert int(pixels.max()) < (1 << ds.BitsStored) and np.ptp(pixels) > 100
        assert ds.PhotometricInterpretation in {"MONOCHROME1", "MONOCHROME2"}
        assert ds.file_meta.TransferSyntaxUID == image.transfer_syntax
        if image.transfer_syntax not in seen:
            seen.add(image.transfer_syntax)
            result = subprocess.run(["dcmdump", "-q", str(tmp_path / image.relpath)], capture_output=True)
            assert result.returncode == 0, result.stderr


def test_planted_phi_is_really_in_the_files_and_names(tmp_path):
    corpus = synthesize(str(tmp_path), patients=2, seed=2, rows=32, columns=32)
    for image in corpus.images:
        ds = pydicom.dcmread(tmp_path / image.relpath)
        text = "\n".join(element_values(ds))
        for value in image.phi:
            assert value in text, value
        assert image.patient_id in image.relpath and image.patient_name.split("^")[0] in image.relpath
        assert as_text(ds[0x0009, 0x1001].value) == image.patient_name  # private, with its creator
        assert as_text(ds.RequestAttributesSequence[0][0x0011, 0x1001].value).startswith("Ordered for")


def test_patients_have_studies_over_years_with_cxr_views(tmp_path):
    corpus = synthesize(str(tmp_path), patients=30, seed=3, rows=32, columns=32)
    per_study = Counter(i.study_instance_uid for i in corpus.images)
    assert set(per_study.values()) <= {1, 2, 3}
    assert {i.view for i in corpus.images} == {"PA", "AP", "LATERAL"}
    spans = [
        (max(i.study_date for i in imgs) - min(i.study_date for i in imgs)).days
        for imgs in corpus.by_patient().values()
    ]
    assert max(spans) > 365


def test_writes_through_fsspec_urls():
    corpus = synthesize("memory://synth-test/raw", patients=1, seed=0, rows=32, columns=32)
    fs = fsspec.filesystem("memory")
    assert all(fs.exists(f"/synth-test/raw/{i.relpath}") for i in corpus.images)


def test_the_corpus_is_written_through_the_storage_layer(tmp_path):
    """Atomic writes: a run killed earlier left a temporary file; the corpus has none."""
    from cxr_dask import synth  # the old name stays an alias of the moved module
    from cxr_dask.storage import PARTIALS_DIR
    from cxr_dask.testing import synth as moved

    assert synth is moved
    (tmp_path / PARTIALS_DIR).mkdir()
    (tmp_path / PARTIALS_DIR / "killed.tmp").write_bytes(b"half")
    corpus = synthesize(str(tmp_path), patients=2, seed=3, rows=32, columns=32)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(image.relpath for image in corpus.images)
