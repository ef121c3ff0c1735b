"""Free text that Clean Descriptors keeps, with PHI nobody wrote down anywhere else.

Each case is a small archive of ``PATIENTS`` patients (one file each) whose descriptions
are ordinary, one of whom carries the PHI in every kept free-text place: StudyDescription,
SeriesDescription, PerformedProcedureStepDescription, the CodeMeaning of
ProcedureCodeSequence and a TEXT item's TextValue in ContentSequence. An archive this
size is the realistic setting for the k-patient rule (k = 10): the ordinary words are
seen with every patient, the planted ones with one, and a referring doctor named on
every patient's studies is frequent but a name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from cxr_dask.adversarial import Case, base_image, save

#: Patients per case: more than the default k, so ordinary words are frequent.
PATIENTS = 12
#: Where each case plants its text (the coded and structured places included).
PLACES = (
    "StudyDescription",
    "SeriesDescription",
    "PerformedProcedureStepDescription",
    "ProcedureCodeSequence.CodeMeaning",
    "ContentSequence.TextValue",
)
ORDINARY = ("CHEST (PA AND LAT)", "CHEST PA", "CHEST (PORTABLE AP)")


def _text_item(text: str) -> Dataset:
    """A ContentSequence TEXT item (SR content item) holding ``text``."""
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "121106", "DCM", "Comment"
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([concept])
    item.TextValue = text
    return item


def _place(ds: Dataset, text: str) -> None:
    """``text`` in every place of PLACES."""
    ds.StudyDescription = ds.SeriesDescription = ds.PerformedProcedureStepDescription = text
    ds.ProcedureCodeSequence[0].CodeMeaning = text
    ds.ContentSequence = Sequence([_text_item(text)])


def _archive(
    seed: int,
    text: str,
    *,
    name: str | None = None,
    ordinary: Callable[[int], str] = lambda i: ORDINARY[i % len(ORDINARY)],
    referrer: str | None = None,
    utf8: bool = False,
) -> Callable[[Path], None]:
    """A writer of PATIENTS files: patient 0 carries ``text`` (and ``name`` as its
    PatientName), the others ``ordinary(i)``; ``referrer`` is everyone's referring doctor."""

    def write(folder: Path) -> None:
        for i in range(PATIENTS):
            ds = base_image(seed * 1000 + i)
            if utf8:
                ds.SpecificCharacterSet = "ISO_IR 192"
            if referrer is not None:
                ds.ReferringPhysicianName = ds.RequestingPhysician = referrer
            if i == 0:
                if name is not None:
                    ds.PatientName = name
                _place(ds, text)
            else:
                _place(ds, ordinary(i))
            save(ds, folder / f"patient{i:02d}.dcm")

    return write


def _case(name: str, planted: tuple[str, ...], write: Callable[[Path], None]) -> Case:
    return Case(name=f"freetext/{name}", kind="freetext", planted=planted, write=write)


CASES: tuple[Case, ...] = (
    _case("mrn_with_separators", ("4471-902-18",), _archive(1, "CHEST PA MRN 4471-902-18")),
    _case("date_with_month_name", ("14 March 2019",), _archive(2, "CHEST PA 14 March 2019")),
    _case(
        "referring_doctor_and_pager",
        ("Quennell", "pager 55127"),
        _archive(
            3,
            "CHEST PA CALL DR QUENNELL pager 55127",
            ordinary=lambda i: f"{ORDINARY[i % 3]} DR QUENNELL",  # frequent: on every patient
            referrer="QUENNELL^ALISTAIR",
        ),
    ),
    _case("street_address", ("Wrenfield Crescent",), _archive(4, "CHEST PA 1187 Wrenfield Crescent")),
    _case("social_security_number", ("078-05-1120",), _archive(5, "CHEST SSN 078-05-1120")),
    _case("age_over_89", ("94 year old",), _archive(6, "CHEST PA 94 YEAR OLD")),
    _case("next_of_kin", ("Perpetua", "Abernethy-Froste"), _archive(7, "NOK WIFE PERPETUA ABERNETHY-FROSTE")),
    _case(
        "name_without_its_punctuation",
        ("OShaughnessyVoss", "OShaughnessy Voss"),
        _archive(8, "CHEST PA OSHAUGHNESSYVOSS", name="O'SHAUGHNESSY-VOSS^ROSALEEN"),
    ),
    _case("name_parts_under_three", ("Ng Yu Li",), _archive(9, "CHEST PA NG YU LI", name="NG^YU LI")),
    _case(
        "name_transliterated",
        ("Muellersohn", "Juergen"),
        _archive(10, "CHEST PA MUELLERSOHN JUERGEN", name="MÜLLERSOHN^JÜRGEN"),
    ),
    _case(
        "name_accent_dropped",
        ("Letourneau", "Berangere"),
        _archive(11, "CHEST LETOURNEAU BERANGERE", name="LÉTOURNEAU^BÉRANGÈRE"),
    ),
    _case(
        "name_decomposed_nfd",
        ("Ångström",),
        _archive(12, "CHEST PA A\u030angstro\u0308m", name="ÅNGSTRÖM^ZOE", utf8=True),  # header NFC, text NFD
    ),
    _case(
        "name_full_width",
        ("Winterbottom",),
        _archive(13, "ＣＨＥＳＴ ＰＡ ＷＩＮＴＥＲＢＯＴＴＯＭ", utf8=True),
    ),
    _case(
        "japanese_name_without_boundaries",
        ("山田花子", "山田", "花子"),
        _archive(14, "胸部正面山田花子", name="YAMADA^HANAKO=山田^花子", utf8=True),
    ),
)


# ----------------------------------------------------- what a researcher needs survives

#: The descriptors whose survival the issue measures.
MEASURED = ("StudyDescription", "PerformedProcedureStepDescription")


def kept_share(corpus, output: Path, private: Path) -> dict[str, tuple[int, int]]:
    """Per MEASURED attribute: (values that came out unchanged, values measured).

    A synthetic corpus (``cxr_dask.testing.synth``) after a run to local ``output`` and
    ``private``: each input image is found through the crosswalk; a value holding any
    of its image's planted PHI (or a part of the patient's name) is not measured.
    """
    import pyarrow.parquet as pq
    import pydicom

    from cxr_dask.dicom.layout import image_path

    images = pq.read_table(private / "crosswalk" / "images.parquet").to_pylist()
    where = {r["sop_instance_uid"]: image_path(r["subject_id"], r["study_id"], r["dicom_id"]) for r in images}
    counts = {keyword: [0, 0] for keyword in MEASURED}
    for image in corpus.images:
        path = output / where[image.sop_instance_uid]
        if not path.exists():
            continue
        source = pydicom.dcmread(Path(corpus.root) / image.relpath, stop_before_pixels=True)
        result = pydicom.dcmread(path, stop_before_pixels=True)
        phi = {p.lower() for p in (*image.phi, *image.patient_name.split("^")) if len(p) >= 2}
        for keyword in MEASURED:
            value = str(source.get(keyword, ""))
            if not value or any(p in value.lower() for p in phi):
                continue
            counts[keyword][1] += 1
            counts[keyword][0] += str(result.get(keyword, "")) == value
    return {keyword: (kept, total) for keyword, (kept, total) in counts.items()}
