"""Every identifying value of the inputs ("needles"), and a whole-token search for them.

Text is compared as a sequence of tokens (runs of letters and digits, upper case): the
separators between them do not matter, so ``SMITH^JOHN``, ``Smith, John`` and ``SMITH
JOHN`` are one needle, and ``05/12/1986`` matches ``05-12-1986``. A token is whole: ``ANNA``
is not found in ``HOSANNA``. A needle needs 4 characters (6 when all digits): ``1234`` is
a window width far more often than an id. Digits inside a dotted UID are not numbers
(an 8-digit date may occur inside a random ``2.25.`` UID), except a three-part dotted
run shaped like a date (``12.05.1986``). Research ids minted by the crosswalk are never
needles.

Each needle remembers the first input that held it and the patients (as 64-bit digests
of their keys) who hold it, so a hit can be told a leak from a coincidence.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydicom.uid import UID_dictionary

from cxr_dask.dicom.dates import date_renderings
from cxr_dask.verify.vocabulary import STOP_WORDS, name_renderings

MIN_NEEDLE = 4
MIN_NUMERIC_NEEDLE = 6

#: When one value is several kinds of identifier, the report names the most specific.
CATEGORY_RANK = {
    c: i for i, c in enumerate(("name", "mrn", "accession", "date", "address", "telephone", "place", "uid"))
}
_TOKEN = re.compile(r"[^\W_]+")
_UID_RUN = re.compile(r"[0-9]+(?:\.[0-9]+)+")
_DATE_SHAPED = re.compile(r"\d{1,2}\.\d{1,2}\.\d{4}|\d{4}\.\d{1,2}\.\d{1,2}|\d{1,2}\.\d{1,2}\.\d{2}")


def digest(text: str) -> int:
    """A stable 64-bit digest (the same in every worker process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


@dataclass
class Needle:
    """What a needle is and whose it is."""

    category: str  # name, date, mrn, accession, address, id, uid, private
    index: int  # the first input key index that held it
    patients: set[int] = field(default_factory=set)


def _specific(a: str, b: str) -> str:
    return min(a, b, key=lambda c: CATEGORY_RANK.get(c, len(CATEGORY_RANK)))


def tokens_of(text: str, minted: frozenset[str] | set[str] = frozenset()) -> list[str | None]:
    """Upper-case tokens of ``text``; digits inside a UID and minted ids become None."""
    upper = text.upper()
    spans = [m.span() for m in _UID_RUN.finditer(upper) if not _DATE_SHAPED.fullmatch(m.group())]
    out: list[str | None] = []
    span_at = 0
    for match in _TOKEN.finditer(upper):
        start = match.start()
        while span_at < len(spans) and spans[span_at][1] <= start:
            span_at += 1
        token = match.group()
        inside = span_at < len(spans) and spans[span_at][0] <= start < spans[span_at][1]
        out.append(None if (inside and token.isdigit()) or token in minted else token)
    return out


@dataclass
class Needles:
    """Every identifying value of the inputs, indexed for token-sequence search."""

    by_tokens: dict[tuple[str, ...], Needle] = field(default_factory=dict)
    lengths: dict[str, set[int]] = field(default_factory=dict)  # first token -> needle lengths
    uids: dict[str, Needle] = field(default_factory=dict)
    dates: set[str] = field(default_factory=set)
    minted: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.by_tokens) + len(self.uids)

    def add(self, value: str, category: str, index: int, patient: int) -> None:
        tokens = tuple(_TOKEN.findall(value.upper()))
        if not tokens:
            return
        size = sum(map(len, tokens))
        digits = all(t.isdigit() for t in tokens)
        if size < MIN_NEEDLE or (digits and size < MIN_NUMERIC_NEEDLE):
            return
        if all(t in STOP_WORDS for t in tokens):
            return
        needle = self.by_tokens.get(tokens)
        if needle is None:
            self.by_tokens[tokens] = Needle(category, index, {patient})
            self.lengths.setdefault(tokens[0], set()).add(len(tokens))
        else:
            needle.patients.add(patient)
            needle.index = min(needle.index, index)
            needle.category = _specific(needle.category, category)

    def add_name(self, value: str, index: int, patient: int) -> None:
        for rendering in name_renderings(value):
            self.add(rendering, "name", index, patient)

    def add_date(self, yyyymmdd: str, index: int, patient: int) -> None:
        self.dates.add(yyyymmdd)
        for rendering in date_renderings(yyyymmdd):
            self.add(rendering, "date", index, patient)

    def add_uid(self, uid: str, index: int, patient: int) -> None:
        uid = uid.strip().rstrip("\0")
        if not uid or uid in UID_dictionary or not _UID_RUN.fullmatch(uid):
            return
        needle = self.uids.setdefault(uid, Needle("uid", index))
        needle.patients.add(patient)
        needle.index = min(needle.index, index)

    def merge(self, other: Needles) -> None:
        """Add ``other``'s needles: patients are united, the earlier input index wins."""
        for tokens, theirs in other.by_tokens.items():
            mine = self.by_tokens.get(tokens)
            if mine is None:
                self.by_tokens[tokens] = theirs
                self.lengths.setdefault(tokens[0], set()).add(len(tokens))
                continue
            mine.patients |= theirs.patients
            mine.index = min(mine.index, theirs.index)
            mine.category = _specific(mine.category, theirs.category)
        for uid, theirs in other.uids.items():
            mine = self.uids.get(uid)
            if mine is None:
                self.uids[uid] = theirs
            else:
                mine.patients |= theirs.patients
                mine.index = min(mine.index, theirs.index)
        self.dates |= other.dates

    def find(self, text: str) -> Iterator[Needle]:
        """Every needle in ``text`` (whole tokens, any separators), UIDs as whole dotted runs."""
        tokens = tokens_of(text, self.minted)
        for at, token in enumerate(tokens):
            if token is None:
                continue
            for length in self.lengths.get(token, ()):
                key = tuple(tokens[at : at + length])
                if len(key) == length and None not in key:
                    needle = self.by_tokens.get(key)  # type: ignore[arg-type]
                    if needle is not None:
                        yield needle
            if token.isdigit() and len(token) in (10, 12, 14) and token[:8] in self.dates:  # a DT's date
                needle = self.by_tokens.get((token[:8],))
                if needle is not None:
                    yield needle
        for match in _UID_RUN.finditer(text):
            needle = self.uids.get(match.group())
            if needle is not None:
                yield needle

    def any_in(self, text: str) -> bool:
        return next(self.find(text), None) is not None
