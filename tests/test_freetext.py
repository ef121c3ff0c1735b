"""Free text kept only when known safe (deid/freetext.py): tokens, vocabulary, cleaner,
pass-1 counting, and end to end on the LocalCluster over the adversarial free-text cases."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from cxr_dask import inventory, pipeline
from cxr_dask.adversarial import base_image, find_planted
from cxr_dask.adversarial import freetext as cases
from cxr_dask.config import build_config
from cxr_dask.deid import freetext
from cxr_dask.deid.freetext import (
    MARK,
    Vocabulary,
    WordCounts,
    build_vocabulary,
    clean_value,
    fold,
    identifying_keys,
    keys,
    shipped_vocabulary,
    tokens,
)
from cxr_dask.deid.header import FileIdentity, deidentify_header, descriptor_words
from cxr_dask.errors import ConfigError
from cxr_dask.storage import Location

SHIPPED = shipped_vocabulary()


# ------------------------------------------------------------------ tokens and folding


def test_fold_drops_case_accents_width_and_format_characters() -> None:
    assert fold("Ｍüller") == "muller"
    assert fold("Mu\u0308ller") == "muller"  # NFD
    assert fold("Sm\u200bith") == "smith"  # zero-width space inside a word
    assert fold("ﬁlm") == "film"  # a ligature


def test_tokens_are_spans_of_the_text_as_written() -> None:
    text = "CHEST (PA), Mu\u0308ller-Smith"
    found = tokens(text)
    assert [text[t.start : t.end] for t in found] == ["CHEST", "PA", "Mu\u0308ller", "Smith"]
    assert [t.key for t in found] == ["chest", "pa", "muller", "smith"]


def test_scripts_without_word_spaces_are_one_token_a_character() -> None:
    assert [t.key for t in tokens("胸部正面山田")] == ["胸", "部", "正", "面", "山", "田"]
    assert [t.key for t in tokens("タナカ chest")] == ["タ", "ナ", "カ", "chest"]


def test_symbols_that_spell_letters_are_tokens_not_punctuation() -> None:
    assert keys("🅼🅰🆁🆈 ⓂⒶⓇⓎ") == {"🅼🅰🆁🆈", "mary"}


# ----------------------------------------------------------------------- the cleaner


def test_safe_text_comes_out_byte_for_byte() -> None:
    for text in ("CHEST (PA AND LAT)", "CHEST (PORTABLE AP)", "Chest 2 views, upright", "胸部正面"):
        assert clean_value(text, SHIPPED) == text


def test_unknown_tokens_become_the_mark_and_a_name_becomes_one_mark() -> None:
    assert clean_value("CHEST PA Quixbury", SHIPPED) == f"CHEST PA {MARK}"
    assert clean_value("CHEST PA O'Shaughnessy-Voss, Rosaleen", SHIPPED) == f"CHEST PA {MARK}"
    assert clean_value("胸部正面山田花子", SHIPPED) == f"胸部正面{MARK}"
    assert clean_value("ＣＨＥＳＴ ＰＡ ＷＩＮＴＥＲ", SHIPPED) == f"ＣＨＥＳＴ ＰＡ {MARK}"
    assert clean_value("CHEST (Quixbury) PA", SHIPPED) == f"CHEST ({MARK}) PA"


def test_numbers_need_the_vocabulary_and_no_digit_neighbour() -> None:
    assert clean_value("CHEST 2 VIEWS", SHIPPED) == "CHEST 2 VIEWS"
    assert clean_value("CHEST 4 4 7 1 9", SHIPPED) == f"CHEST {MARK}"  # an MRN spelt digit by digit
    assert clean_value("CHEST 3/6/2015", SHIPPED) == f"CHEST {MARK}/{MARK}/{MARK}"
    everything_safe = Vocabulary(frozenset({"chest", "3", "2015", "june"}))
    assert clean_value("CHEST June 3, 2015", everything_safe) == f"CHEST June {MARK}"  # one mark for the run


def test_a_cleaned_value_stays_within_its_vr_length() -> None:
    text = "A B C D E F G H I J K L M N O P Q " * 2  # 68 characters of one-letter tokens
    cleaned = clean_value(text.strip(), Vocabulary(frozenset()), freetext.MAX_CHARS["LO"])
    assert len(cleaned) <= 64 and set(cleaned) <= set(MARK)


def test_identifying_keys_cover_the_forms_a_name_takes_in_text() -> None:
    found = identifying_keys("O'SHAUGHNESSY-VOSS^MÜLLER^J")
    assert {"oshaughnessy", "shaughnessy", "voss", "oshaughnessyvoss", "muller", "mueller"} <= found
    assert "j" not in found and "o" not in found  # a single letter identifies nobody


# -------------------------------------------------------------------- the vocabulary


def _counts(k: int, rows: list[tuple[str, int]], denied: set[str] = frozenset()) -> WordCounts:
    counts = WordCounts(cap=k)
    for text, patient in rows:
        counts.add(keys(text), patient)
    counts.denied |= set(denied)
    return counts


def test_frequent_token_kept_frequent_physician_dropped_rare_token_replaced() -> None:
    rows = [(f"BEDSIDE FILM DR HALVORSEN {'RARETOKEN' if p == 0 else ''}", p) for p in range(10)]
    rows.append(("BEDSIDE FILM DR HALVORSEN", 10))  # repeats do not count twice
    vocabulary = build_vocabulary(_counts(10, rows, identifying_keys("HALVORSEN^MAGNUS")), 10, shipped=())
    assert clean_value("BEDSIDE FILM DR HALVORSEN RARETOKEN", vocabulary) == f"BEDSIDE FILM DR {MARK}"
    assert "halvorsen" not in vocabulary and "raretoken" not in vocabulary
    nine = build_vocabulary(_counts(10, rows[:9]), 10, shipped=())
    assert "bedside" not in nine  # nine patients are fewer than k


def test_frequent_numbers_and_months_are_never_kept_by_frequency() -> None:
    rows = [(f"CHEST 2019 MARCH {p}", p) for p in range(20)]
    vocabulary = build_vocabulary(_counts(10, rows), 10, shipped=())
    assert "chest" in vocabulary and "march" not in vocabulary and "2019" not in vocabulary


def test_shipped_words_lose_to_a_name_and_the_keep_list_wins() -> None:
    counts = _counts(10, [], identifying_keys("NG^YU LI"))
    assert "ng" in SHIPPED and "ng" not in build_vocabulary(counts)
    assert "ng" in build_vocabulary(counts, keep=["NG"])


def test_counts_keep_at_most_k_patients_a_token_and_merge() -> None:
    first, second = _counts(3, [("chest", p) for p in range(5)]), _counts(3, [("chest", p) for p in range(5, 9)])
    assert len(first.patients["chest"]) == 3
    first.merge(second)
    assert len(first.patients["chest"]) == 3 and first.frequent(3) == {"chest"}


def test_pass_one_counts_kept_descriptors_and_denies_names() -> None:
    ds = base_image(5)
    ds.StudyDescription = "CHEST PA ZORBLAT"
    ds.ReferringPhysicianName = "QUENNELL^ALISTAIR"
    words, denied = descriptor_words(ds)
    assert {"chest", "pa", "zorblat"} <= words
    assert {"quennell", "alistair", *(fold(part) for part in str(ds.PatientName).split("^") if len(part) > 1)} <= denied
    assert "zorblat" not in denied
    # ids are digit-bearing keys, never kept by frequency: not collected (the set stays small)
    assert fold(str(ds.PatientID)) not in denied and not any(c.isdigit() for key in denied for c in key)


# ----------------------------------------------------------------------------- config


def test_config_freetext_table() -> None:
    config = build_config(
        {"freetext": {"min_patients": 25, "keep": ["PA"]}}, {"input": "a", "output": "b", "private": "c"}
    )
    assert config.freetext.min_patients == 25 and config.freetext.keep == ("PA",)
    assert build_config({}, {"input": "a", "output": "b", "private": "c"}).freetext.min_patients == 10
    for bad in ({"min_patients": 0}, {"min_patients": "10"}, {"keep": "PA"}, {"k": 3}):
        with pytest.raises(ConfigError):
            build_config({"freetext": bad}, {"input": "a", "output": "b", "private": "c"})


# ------------------------------------------------------------------------ end to end


def _run(client, root: Path, **settings) -> pipeline.RunSummary:
    flags = {"input": str(root / "raw"), "output": str(root / "dataset"), "private": str(root / "private")}
    config = build_config(settings, {**flags, "progress": False, "dashboard_address": None, "partition_size": 5})
    return pipeline.run(client, config)


@pytest.fixture(scope="module")
def adversarial_run(client, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("freetext")
    for case in cases.CASES:
        case.write(root / "raw" / case.name.replace("/", "_"))
    summary = _run(client, root)
    return {"root": root, "summary": summary}


def test_no_planted_free_text_reaches_any_output(adversarial_run) -> None:
    summary = adversarial_run["summary"]
    assert summary.quarantined == 0 and summary.written == len(cases.CASES) * cases.PATIENTS
    output = adversarial_run["root"] / "dataset"
    leaks = {case.name: find_planted(output, case.planted) for case in cases.CASES}
    assert not {name: hits for name, hits in leaks.items() if hits}
    assert (output / "metadata.parquet").exists()


def test_every_case_leaks_through_the_phrase_layer_alone(tmp_path) -> None:
    """Each case beats the old cleaner (the file's own phrases, found verbatim): a case
    that leaks nothing without the vocabulary would prove nothing with it."""
    identity = FileIdentity(subject_id=10_000_001, study_id=50_000_001, dicom_id="0" * 40, shift_days=7)
    for case in cases.CASES:
        folder = tmp_path / case.name.replace("/", "_")
        case.write(folder)
        ds = pydicom.dcmread(folder / "patient00.dcm")
        deidentify_header(ds, identity, lambda uid: "2.25.1", vocabulary=None)
        out = tmp_path / "out" / folder.name
        out.mkdir(parents=True)
        ds.save_as(out / "patient00.dcm")
        assert find_planted(out, case.planted), case.name


def test_one_vocabulary_on_every_worker(adversarial_run) -> None:
    root = adversarial_run["root"]
    audit = pq.read_table(next((root / "private" / "runs").iterdir()) / "audit.parquet")
    assert len(set(audit.column("worker").to_pylist())) == 2  # both workers cleaned files
    outputs: dict[str, set[str]] = {}
    inputs = {
        pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID: path for path in (root / "raw").rglob("*.dcm")
    }
    images = pq.read_table(root / "private" / "crosswalk" / "images.parquet").to_pylist()
    for row in images:
        source = pydicom.dcmread(inputs[row["sop_instance_uid"]], stop_before_pixels=True)
        out = next((root / "dataset").rglob(f"{row['dicom_id']}.dcm"))
        result = pydicom.dcmread(out, stop_before_pixels=True)
        outputs.setdefault(str(source.StudyDescription), set()).add(str(result.StudyDescription))
    # the same input text came out the same on every worker and partition
    assert all(len(outs) == 1 for outs in outputs.values())
    assert outputs["CHEST (PA AND LAT)"] == {"CHEST (PA AND LAT)"}
    # the doctor is on every patient's studies (frequent) but a name: "dr" stays, the name goes
    assert outputs["CHEST PA DR QUENNELL"] == {f"CHEST PA DR {MARK}"}
    vocabulary = json.loads(next((root / "private" / "runs").iterdir()).joinpath("vocabulary.json").read_text())
    assert "quennell" not in vocabulary and "dr" in vocabulary


def test_descriptors_without_phi_survive_on_the_synthetic_corpus(corpus_run, corpus) -> None:
    """On the session's run of the synthetic corpus (conftest's ``corpus_run``)."""
    workspace = corpus_run["workspace"]
    share = cases.kept_share(corpus, workspace["output"], workspace["private"])
    for keyword, (kept, total) in share.items():
        assert total >= len(corpus.images) // 2, keyword  # most values hold no PHI
        assert kept >= 0.95 * total, (keyword, kept, total)
    metadata = pq.read_table(workspace["output"] / "metadata.parquet").column("PerformedProcedureStepDescription")
    assert set(metadata.to_pylist()) <= {"CHEST (PA AND LAT)", "CHEST (PA)", "CHEST (PORTABLE AP)"}


def test_scan_partition_with_words_returns_records_and_counts(corpus) -> None:
    files = sorted((str(p.relative_to(corpus.root)), p.stat().st_size) for p in Path(corpus.root).rglob("*.dcm"))
    items = [(i, key, size) for i, (key, size) in enumerate(files)]
    plain = inventory.scan_partition(items, Location(corpus.root))
    (part,) = inventory.scan_partition_with_words(
        items, Location(corpus.root), build_config({}, {"input": "a", "output": "b", "private": "c"}).profile, 10
    )
    assert part.records == plain  # counting changes no record
    assert len(part.words.patients["chest"]) == 10  # capped at k
    assert all(len(seen) <= 10 for seen in part.words.patients.values())


def test_pass_one_reads_sequences_from_their_bytes_as_pydicom_would(corpus, tmp_path) -> None:
    """The fast path (sequences parsed from their bytes) gives pydicom's words exactly."""
    for case in cases.CASES[:4] + cases.CASES[-3:]:
        case.write(tmp_path / case.name.replace("/", "_"))
    paths = [*Path(corpus.root).rglob("*.dcm"), *tmp_path.rglob("*.dcm")]
    for path in paths:
        fast = descriptor_words(pydicom.dcmread(path, stop_before_pixels=True), fast=True)
        slow = descriptor_words(pydicom.dcmread(path, stop_before_pixels=True), fast=False)
        assert fast == slow, path.name
    assert len(paths) > 50
