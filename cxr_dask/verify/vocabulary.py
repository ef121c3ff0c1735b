"""Verify's own idea of what identifies a person, written from PS3.15 and HIPAA's 18 identifiers.

Nothing here comes from the de-identifier (``cxr_dask.deid``): an auditor that shared the
cleaner's stop words, date formats or profile would share its blind spots. Where the two
disagree, verify is the stricter: its stop words are only words no person, place or id is
named (a patient may be called ``KNEE`` or ``PORT``), and it renders dates and names in
more ways than a cleaner needs to.

HIPAA Safe Harbor's identifiers and the DICOM attributes that carry them:

- (A) names: every PN attribute, at any depth, and the names of persons in free text;
- (B) geography smaller than a state: addresses, region of residence;
- (C) dates (except year) related to the individual: every DA and DT, at any depth;
- (D, E, F) telephone, fax, e-mail: telephone and telecom attributes, and the patterns
  below in free text;
- (G-K) SSN, medical record, health plan, account, certificate numbers: ids and numbers;
- (L, M) vehicle and device identifiers and serial numbers: DeviceSerialNumber, plate,
  cassette, detector ids, ...;
- (N, O) URLs and IP addresses: patterns in free text;
- (P, Q) biometric ids and full-face images: not in a chest film's header;
- (R) any other unique identifying number or code: UIDs (not the standard's own ones),
  private elements' values.
"""

from __future__ import annotations

import re

from cxr_dask.dicom import vrs

#: Attributes whose whole value identifies a person, a place or an order (PS3.15 E.1-1
#: rows with action D, Z, X or U that hold ids, numbers, names of places and people).
IDENTIFYING_KEYWORDS = frozenset(
    {
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "PatientBirthName",
        "PatientMotherBirthName",
        "MedicalRecordLocator",
        "AccessionNumber",
        "StudyID",
        "AdmissionID",
        "ServiceEpisodeID",
        "RequestedProcedureID",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "PlacerOrderNumberImagingServiceRequestRetired",
        "FillerOrderNumberImagingServiceRequestRetired",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "RegionOfResidence",
        "CountryOfResidence",
        "MilitaryRank",
        "BranchOfService",
        "Occupation",
        "PatientInsurancePlanCodeSequence",
        "InsurancePlanIdentification",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "PlateID",
        "CassetteID",
        "DetectorID",
        "GantryID",
        "DeviceID",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "PersonAddress",
        "PersonTelephoneNumbers",
        "PersonTelecomInformation",
        "ResponsibleOrganization",
        "CurrentPatientLocation",
        "PatientInstitutionResidence",
        "ScheduledStationName",
        "PerformedStationName",
        "PerformedLocation",
        "ScheduledProcedureStepLocation",
        "OrderEntererLocation",
        "ClinicalTrialSponsorName",
        "ClinicalTrialSiteName",
        "ClinicalTrialSubjectID",
        "ClinicalTrialSubjectReadingID",
        "ClinicalTrialProtocolID",
        "ClinicalTrialSiteID",
        "IssuerOfAdmissionIDSequence",
        "IssuerOfTheContainerIdentifierSequence",
        "ContainerIdentifier",
        "SpecimenIdentifier",
        "VerifyingOrganization",
        "InstitutionDepartmentTypeCodeSequence",
    }
)
#: Keyword endings that mark an identifying attribute the list above does not name.
IDENTIFYING_SUFFIX = re.compile(r"(?:ID|IDs|Identifier|Number|Numbers|Address|Telephone\w*|Telecom\w*|Location)$")
#: Keywords that end like an identifier but hold counts or positions, not identities.
NOT_IDENTIFYING = frozenset(
    {
        "InstanceNumber",
        "SeriesNumber",
        "AcquisitionNumber",
        "ImagesInAcquisition",
        "TemporalPositionIdentifier",
        "StackID",
        "InStackPositionNumber",
        "ReferencedFrameNumber",
        "FrameNumber",
        "ConcatenationFrameOffsetNumber",
        "DimensionIndexPointer",
        "WaveformChannelNumber",
        "ReferencedSegmentNumber",
        "SegmentNumber",
        "FiducialIdentifier",
        "ObservationNumber",
        "ContentItemIdentifier",
        "LossyImageCompressionMethod",
        "ImageID",  # an image's label (NM), not a person's or an order's
    }
)
#: Attributes that describe the equipment: a place's name there is a vendor's (a hospital
#: called TOSHIBA, a GE site), so it is a note even in the patient's own output.
EQUIPMENT_KEYWORDS = frozenset(
    {
        "Manufacturer",
        "ManufacturerModelName",
        "SoftwareVersions",
        "DeviceDescription",
        "SecondaryCaptureDeviceManufacturer",
    }
)
#: Needles that are a note, not a finding, in an equipment attribute that held the same
#: value in the image's own input (never an MRN, an accession, a date or a UID).
EQUIPMENT_COINCIDENCES = frozenset({"place", "private", "id", "name"})
#: Value representations whose values are searched as text in an output (free text,
#: ``vrs.TEXT``, is also searched for every identifier shape).
TEXT_VRS = vrs.TEXT | frozenset({"AE", "CS", "PN", "UR", "DS", "IS", "AS", "TM"})

#: Words too common in a radiology header to search for on their own: grammar and the
#: words of a view or a position. No body part, vendor or place: those are names too.
STOP_WORDS = frozenset(
    {
        "AND",
        "THE",
        "WITH",
        "FROM",
        "NONE",
        "NULL",
        "TRUE",
        "FALSE",
        "VIEW",
        "IMAGE",
        "IMAGES",
        "STUDY",
        "SERIES",
        "ORIGINAL",
        "DERIVED",
        "PRIMARY",
        "SECONDARY",
        "OTHER",
        "MONOCHROME1",
        "MONOCHROME2",
        "UNKNOWN",
        "ANONYMOUS",
        "ANONYMIZED",
        "REMOVED",
    }
)

#: Identifier shapes HIPAA names (telephone, SSN, e-mail, URL, IP address), searched in
#: every kept free-text value whatever the inputs held.
IDENTIFIER_PATTERNS = {
    "telephone": re.compile(r"(?<![\w.])(?:\+?1[ .-]?)?\(?[2-9]\d{2}\)?[ .-]\d{3}[ .-]\d{4}(?![\w.])"),
    "ssn": re.compile(r"(?<![\w.-])\d{3}-\d{2}-\d{4}(?![\w.-])"),
    "email": re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    "url": re.compile(r"(?i)\b(?:https?://|www\.)\S+"),
    "ip_address": re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])"),
}
#: Attributes whose ordinary values have an identifier's shape: a software version
#: written as four dotted numbers (Agfa's "1.0.3.37") is not an IP address.
SHAPES_OF_VALUE = {"SoftwareVersions": frozenset({"ip_address"})}


def is_identifying(keyword: str) -> bool:
    """True when an attribute's whole value names a person, place, order or device."""
    if not keyword or keyword in NOT_IDENTIFYING:
        return False
    return keyword in IDENTIFYING_KEYWORDS or bool(IDENTIFYING_SUFFIX.search(keyword))


_PN_GROUPS = re.compile(r"=")
_PN_PARTS = re.compile(r"\^")


def name_renderings(value: str) -> list[str]:
    """A person name (PN) as people write it: ``FAMILY^GIVEN`` and its prose orders.

    The whole value, each of its words, ``Given Family``, ``Family, Given``, ``Given
    Middle Family``, the initial with the family name, and the parts run together.
    """
    out: list[str] = []
    for group in _PN_GROUPS.split(value):
        parts = [p.strip() for p in _PN_PARTS.split(group)]
        family, given, middle = [*parts, "", "", ""][:3]
        out.append(group)
        out.extend(word for part in parts for word in part.split())
        if family and given:
            out += [
                f"{given} {family}",
                f"{family}, {given}",
                f"{family} {given}",
                f"{given[0]}. {family}",
                f"{family}{given}",
                f"{given}{family}",
            ]
            if middle:
                out += [f"{given} {middle} {family}", f"{given} {middle[0]}. {family}"]
    return [text for text in dict.fromkeys(out) if text.strip()]
