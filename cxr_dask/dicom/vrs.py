"""Value representations by what the de-identifier does with them (PS3.5 6.2).

Taken from pydicom's own sets where it has one, so a VR pydicom adds is classed the
same way here.
"""

from __future__ import annotations

from pydicom.valuerep import BYTES_VR, CUSTOMIZABLE_CHARSET_VR, EXPLICIT_VR_LENGTH_32, STR_VR

#: Character strings: every VR whose value is text of some kind.
STRING = frozenset(str(vr) for vr in STR_VR)
#: Bytes nobody reads as text (a search for PHI in them is a byte search).
BINARY = frozenset(str(vr) for vr in BYTES_VR)
#: Descriptive text in the file's character set: what Clean Descriptors cleans.
TEXT = frozenset(str(vr) for vr in CUSTOMIZABLE_CHARSET_VR) - {"PN"}
#: Paragraphs (no value multiplicity; backslashes are characters).
FREE_TEXT = frozenset({"ST", "LT", "UT"})
#: Strings always in the default repertoire, whatever SpecificCharacterSet says (pydicom
#: writes them with ``write_string``; DS, IS and UR have writers of their own).
DEFAULT_CHARSET_STRINGS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
#: VRs whose values are a person or a date by their nature: a value stored under one of
#: them stays identifying whatever attribute holds it (a date written into SliceThickness).
IDENTIFYING = frozenset({"PN", "DA", "DT"})
#: VRs with a 32-bit length in explicit VR (two reserved bytes after the VR).
LONG_LENGTH = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
#: ``LONG_LENGTH`` as the VR bytes a raw stream holds.
LONG_LENGTH_CODES = frozenset(vr.encode() for vr in LONG_LENGTH)
