"""The PS3.15 Table E.1-1 resolution: options, combined codes and group patterns."""

from __future__ import annotations

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword

from cxr_dask.deid.profile import (
    Action,
    ProfileOptions,
    action_for,
    get_profile,
    load_defined_terms,
    load_keep_list,
    load_table,
    load_type2_requirements,
    resolve_combined,
)

NO_OPTIONS = ProfileOptions(retain_modified_dates=False, clean_descriptors=frozenset())


def tag(keyword: str) -> int:
    value = tag_for_keyword(keyword)
    assert value is not None, keyword
    return value


def test_table_loads_all_rows_once() -> None:
    rows = load_table()
    assert len(rows) == 621
    assert load_table() is rows  # cached: read once per process
    assert get_profile() is get_profile(ProfileOptions())


@pytest.mark.parametrize(
    ("keyword", "with_options", "without_options"),
    [
        ("PatientName", Action.EMPTY, Action.EMPTY),  # then replaced by the research id
        ("PatientID", Action.EMPTY, Action.EMPTY),  # Z/D, Type 2 -> Z
        ("AccessionNumber", Action.EMPTY, Action.EMPTY),
        ("StudyDate", Action.SHIFT_DATE, Action.EMPTY),
        ("StudyTime", Action.KEEP, Action.EMPTY),
        ("AcquisitionDateTime", Action.SHIFT_DATE, Action.REMOVE),  # X/Z/D, Type 3
        ("ContentDate", Action.SHIFT_DATE, Action.DUMMY),  # Z/D, Type 1 in DX Image
        ("ContentTime", Action.KEEP, Action.DUMMY),
        ("SeriesDescription", Action.CLEAN, Action.REMOVE),
        ("StudyDescription", Action.CLEAN, Action.REMOVE),
        ("PerformedProcedureStepDescription", Action.CLEAN, Action.REMOVE),
        ("ImageComments", Action.REMOVE, Action.REMOVE),  # cleanDescOpt C, not in the set
        ("InstitutionName", Action.REMOVE, Action.REMOVE),  # X/Z/D, Type 3
        ("AcquisitionContextSequence", Action.EMPTY, Action.EMPTY),  # X/Z, Type 2 for DX
        ("OperatorsName", Action.REMOVE, Action.REMOVE),
        ("SourceImageSequence", Action.REMOVE, Action.REMOVE),  # X/Z/U*, Type 3
        ("SOPInstanceUID", Action.UID, Action.UID),
        ("StudyInstanceUID", Action.UID, Action.UID),
        ("PatientBirthDate", Action.EMPTY, Action.EMPTY),
        ("InstanceCreationDate", Action.SHIFT_DATE, Action.REMOVE),
        ("ContentSequence", Action.DUMMY, Action.DUMMY),
    ],
)
def test_resolutions(keyword: str, with_options: Action, without_options: Action) -> None:
    assert action_for(tag(keyword)) is with_options
    assert action_for(tag(keyword), NO_OPTIONS) is without_options


def test_clean_descriptors_only_for_the_chosen_keywords() -> None:
    only_study = ProfileOptions(clean_descriptors=frozenset({"StudyDescription"}))
    assert action_for(tag("StudyDescription"), only_study) is Action.CLEAN
    assert action_for(tag("SeriesDescription"), only_study) is Action.REMOVE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0x60003000, Action.REMOVE),  # OverlayData
        (0x60023000, Action.REMOVE),  # OverlayData, second overlay group
        (0x601E4000, Action.REMOVE),  # OverlayComments
        (0x50001234, Action.REMOVE),  # curve
        (0x50FE0000, Action.REMOVE),
    ],
)
def test_group_patterns(value: int, expected: Action) -> None:
    assert action_for(value) is expected


def test_tags_outside_the_table_are_none() -> None:
    assert action_for(tag("Rows")) is None
    assert action_for(tag("ViewCodeSequence")) is None
    assert action_for(0x60020010) is None  # OverlayRows: not a table row (the walk drops 60xx)


@pytest.mark.parametrize(
    ("code", "keyword", "expected"),
    [
        ("X/Z", "PatientSexNeutered", Action.REMOVE),
        ("X/Z", "AcquisitionContextSequence", Action.EMPTY),
        ("X/D", "ContentDate", Action.DUMMY),
        ("X/D", "DetectorID", Action.REMOVE),
        ("Z/D", "ContentDate", Action.DUMMY),
        ("Z/D", "PatientID", Action.EMPTY),
        ("Z/D", "ContentCreatorName", Action.EMPTY),
        ("X/Z/D", "InstitutionName", Action.REMOVE),
        ("X/Z/D", "StudyDate", Action.EMPTY),
        ("X/Z/D", "ContentTime", Action.DUMMY),
        ("X/Z/U*", "ReferencedImageSequence", Action.REMOVE),
        ("X/Z/U*", "SOPInstanceUID", Action.UID),
        ("D", "", Action.DUMMY),
    ],
)
def test_combined_codes(code: str, keyword: str, expected: Action) -> None:
    assert resolve_combined(code, keyword) is expected


def test_every_row_resolves_for_both_option_sets() -> None:
    for options in (ProfileOptions(), NO_OPTIONS):
        profile = get_profile(options)
        assert len(profile.exact) + len(profile.patterns) == 620  # + the private-groups row
        assert all(isinstance(action, Action) for action in profile.exact.values())


# ------------------------------------------------------- keep-list, defined terms, type 2


def test_keep_list_is_outside_the_table_and_every_entry_has_a_reason() -> None:
    kept = load_keep_list()
    assert len(kept) > 100
    profile = get_profile()
    assert [k.keyword for tag, k in kept.items() if profile.action_for(tag) is not None] == []
    assert all(len(k.reason) > 20 for k in kept.values())
    assert load_keep_list() is kept  # read once per process


def test_every_kept_coded_attribute_has_defined_terms() -> None:
    """A CS value passes its syntax with a name in capitals: only defined terms stay."""
    terms = load_defined_terms()
    missing = [k.keyword for tag, k in load_keep_list().items() if dictionary_VR(tag) == "CS" and tag not in terms]
    assert missing == []


def test_type2_table_loads_and_conditions_apply() -> None:
    requirements = load_type2_requirements()
    rt_image = "1.2.840.10008.5.1.4.1.1.481.1"
    operators = tag("OperatorsName")
    assert any(r.applies(rt_image, False) and operators in r.tags for r in requirements)
    assert not any(r.applies("1.2.840.10008.5.1.4.1.1.1", False) and operators in r.tags for r in requirements)
    responsible = tag("ResponsiblePerson")
    assert any(r.applies("", True) and responsible in r.tags for r in requirements)
    assert not any(r.applies("", False) and responsible in r.tags for r in requirements)


@pytest.mark.parametrize("value", sorted(load_defined_terms()[0x00185101].terms))
def test_every_defined_view_position_is_kept(value: str) -> None:
    assert load_defined_terms()[tag("ViewPosition")].allows(value)
