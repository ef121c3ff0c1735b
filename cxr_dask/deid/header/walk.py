"""The walk over a data set and its items."""

from __future__ import annotations

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from cxr_dask.deid.header.actions import _Actions
from cxr_dask.deid.header.decisions import _SYNTAX_VRS, walk_decision
from cxr_dask.deid.header.lookups import (
    _PIXEL_REPRESENTATION,
    _REPLACED,
    MAX_DEPTH,
    MAX_VALUE_BYTES,
    _delete,
    _key,
    _oversized,
    _verbatim_tags,
)
from cxr_dask.deid.profile import (
    Action,
)
from cxr_dask.dicom import vrs
from cxr_dask.dicom.values import tag_name
from cxr_dask.errors import QuarantineError
from cxr_dask.reasons import Reason


class _Walker(_Actions):
    """One file's walk: applies actions, counts them, gathers phrases for cleaning."""

    # -- the walk
    def walk(self, ds: Dataset, depth: int) -> None:
        """Apply the profile to every element of ``ds`` and, recursively, its items."""
        if depth > MAX_DEPTH:
            raise QuarantineError(Reason.SEQUENCE_TOO_DEEP)
        if _key(_PIXEL_REPRESENTATION) in ds._dict:
            # pydicom decodes it by itself whenever a sequence is set in this dataset:
            # decode it here first, so a damaged value quarantines instead of crashing
            self.element(ds, _PIXEL_REPRESENTATION)
        profile, report = self.profile, self.report
        decisions = profile.decisions
        # the elements as stored (raw or decoded), tags as plain ints: pydicom's BaseTag
        # compares in Python, and every set or cache lookup below compares tags
        for tag, raw in [(int(tag), raw) for tag, raw in ds._dict.items()]:
            if (tag >> 16) & 1:
                _delete(ds, tag)
                report.private_removed += 1
                continue
            # (VR, action) depend on the tag and the stored VR only: resolved once per profile
            decision = decisions.get((tag, raw.VR))
            if decision is None:
                decision = walk_decision(profile, tag, raw)
            vr, action = decision
            if raw.__class__ is RawDataElement and raw.length > MAX_VALUE_BYTES and _oversized(raw, vr):
                raise QuarantineError(Reason.OVERSIZED_ELEMENT, tag_name(tag))
            if depth == 0 and tag in _REPLACED:
                self.collect(ds, tag, vr)
                _delete(ds, tag)  # set afresh after the walk, whatever VR the input gave it
                report.dummied += 1
                continue
            if vr in _SYNTAX_VRS and raw.VR not in (None, "UN") and vr != raw.VR:
                raw = self.reread(ds, tag, raw, vr)  # read by the dictionary's VR
            if action is Action.KEEP and vr != "SQ":
                if vr in _SYNTAX_VRS:
                    self.check_kept(ds, tag, vr, raw)
                elif vr in vrs.TEXT and profile.options.clean_descriptors and tag in _verbatim_tags():
                    self.to_clean.append((ds, tag))  # a coded value: looked at whole (``drop_code``)
                    self.codes.add((id(ds), tag))
                continue  # the common case, without a call
            self.apply(ds, tag, vr, action, depth)
