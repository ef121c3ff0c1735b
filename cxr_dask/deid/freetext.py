"""Free text kept only when known safe: tokens, the archive's vocabulary, the cleaner.

Clean Descriptors (PS3.15 option 113105) keeps descriptions "cleaned" of identifying
text. Looking for the PHI one already knows (the file's own name, id, dates) misses what
nobody wrote down anywhere else: a referring doctor's pager, a street address, an MRN
with separators, a transliterated name. So the rule here is the reverse: a token of a
kept description survives only when it is known to be safe, and every other token
becomes ``___`` (MIMIC-CXR's mark for removed PHI). A token is safe when

- pass 1 saw it, in the descriptors the profile keeps, with at least ``k`` distinct
  patients (k = 10 by default), and it holds no digit; or it is in the shipped radiology
  vocabulary (``data/radiology_vocabulary.txt``), or on the user's own keep list;
- and it is no month name, nor any token of any person name, id, address or institution seen anywhere in
  the archive's headers (a physician on 500 patients' studies is frequent, not safe).
  Single Latin letters and digits are never denied: a middle initial ``L`` would
  otherwise remove every laterality mark.

Tokens are compared folded (NFKC, accents dropped, case folded, format characters such
as zero-width spaces dropped); a token is a run of letters, digits and combining marks;
scripts written without spaces between words (CJK, kana, Thai, ...) are one token per
character. Numbers get two more rules, since every part of a date can be frequent while
the date identifies: a token with a digit is safe only from the shipped vocabulary, and
never when it touches another token with a digit (``4 5 1 2``, ``3/6/2015``).

The vocabulary is PHI-adjacent (the counts hold names and ids): it lives in memory on the
client and on the workers, and in PRIVATE for resuming; never in an output or a log.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from cxr_dask.settings import doc

#: What a removed token becomes (MIMIC-CXR's reports mark removed PHI this way).
MARK = "___"
#: Patients a token must be seen with before it is kept (``freetext.min_patients``).
DEFAULT_MIN_PATIENTS = 10
VOCABULARY_RESOURCE = "radiology_vocabulary.txt"

#: Never kept by frequency: months are an element of a date (HIPAA Safe Harbor), and in
#: an archive whose descriptions carry dates every month name is frequent.
_MONTH_NAMES = "january february march april may june july august september october november december"
MONTHS = frozenset((_MONTH_NAMES + " jan feb mar apr jun jul aug sep sept oct nov dec").split())

#: Longest value per VR, in characters (PS3.5 6.2); a cleaned value is cut to it.
MAX_CHARS = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240}

#: Unicode blocks of scripts written without spaces between words: one token a character.
_NO_BOUNDARY_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x31F0, 0x31FF),  # Katakana extension
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # half-width Katakana
    (0x20000, 0x3FFFF),  # CJK extensions B-H
)
#: Gap characters across which adjacent removed tokens merge into one mark (a name's).
_NAME_GAP = frozenset(" \t-'’.,^=\u3000")
#: German and Nordic letters as they are often transliterated (Müller as Mueller).
_TRANSLITERATIONS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe", "å": "aa"})


def _no_boundary(code: int) -> bool:
    return any(low <= code <= high for low, high in _NO_BOUNDARY_RANGES)


@lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """How tokens are compared: NFKC, format characters and accents dropped, case folded."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text))
    kept = "".join(c for c in text if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")
    return unicodedata.normalize("NFKC", kept.casefold())


@dataclass(frozen=True)
class Token:
    """A span of the original text and its folded key."""

    start: int
    end: int
    key: str

    @property
    def has_digit(self) -> bool:
        return any(c.isdigit() for c in self.key)


#: Character classes of the scanner.
_SEPARATOR, _WORD, _SINGLE = 0, 1, 2
#: Categories that separate words: punctuation, spaces, controls, maths/currency/modifier
#: symbols. Everything else (letters, digits, marks, emoji and other symbols, unassigned
#: code points) is part of a word, so a name spelt in circled or squared letters is
#: judged like any other token rather than passed through as punctuation.
_SEPARATING = ("P", "Z", "Cc", "Sm", "Sc", "Sk")


@lru_cache(maxsize=65536)
def _kind(char: str) -> int:
    if _no_boundary(ord(char)):
        return _SINGLE
    category = unicodedata.category(char)
    if category.startswith(_SEPARATING) and not any(c.isalnum() for c in unicodedata.normalize("NFKC", char)):
        return _SEPARATOR
    return _WORD


def tokens(text: str) -> list[Token]:
    """The tokens of ``text`` in order, spans into the text as written.

    A word is a run of letters, digits and other non-separating characters, with the
    combining marks of decomposed (NFD) letters and format characters (zero-width
    spaces, soft hyphens) inside it; a character of a script without word spaces is a
    token by itself, with its combining marks.
    """
    found: list[Token] = []
    start = -1
    i, n = 0, len(text)
    while i < n:
        kind = _kind(text[i])
        if kind == _WORD:
            if start < 0:
                start = i
            i += 1
            continue
        if start >= 0:
            found.append(Token(start, i, fold(text[start:i])))
            start = -1
        if kind == _SINGLE:
            end = i + 1
            while end < n and unicodedata.combining(text[end]):
                end += 1
            found.append(Token(i, end, fold(text[i:end])))
            i = end
            continue
        i += 1
    if start >= 0:
        found.append(Token(start, n, fold(text[start:n])))
    return [token for token in found if token.key]


@lru_cache(maxsize=65536)
def keys(text: str) -> frozenset[str]:
    """The folded tokens of ``text`` (what pass 1 counts); cached, as descriptions repeat."""
    return frozenset(token.key for token in tokens(text))


def _deniable(key: str) -> bool:
    """A single Latin letter or digit identifies nobody and is a laterality mark or count."""
    return not (len(key) == 1 and key.isascii())


@lru_cache(maxsize=65536)
def identifying_keys(text: str) -> frozenset[str]:
    """Every form a name, id or address may take in free text, folded.

    Its tokens; each part between separators written without its punctuation
    (``O'Brien`` -> ``obrien``, ``Smith-Jones`` -> ``smithjones``); the parts of a
    name joined (``Mary Ann`` -> ``maryann``); and each with German and Nordic letters
    transliterated (``Müller`` -> ``mueller``) as well as with accents dropped.
    """
    forms = {text, unicodedata.normalize("NFC", text).lower().translate(_TRANSLITERATIONS)}
    found: set[str] = set()
    for form in forms:
        for component in form.replace("^", "=").split("="):
            parts = [token.key for token in tokens(component)]
            found.update(parts)
            if len(parts) > 1:
                found.add("".join(parts))
            for chunk in (*component.split(), *component.replace("-", " ").split()):
                joined = "".join(token.key for token in tokens(chunk))
                if joined:
                    found.add(joined)
    return frozenset(key for key in found if _deniable(key))


_DIGIT = re.compile(r"\d")


@lru_cache(maxsize=65536)
def deniable_keys(text: str) -> frozenset[str]:
    """``identifying_keys`` without those holding a digit: such a key is never kept by
    frequency, so denying it is moot, and ids would make the client's set grow with the
    archive (every MRN and accession number)."""
    return frozenset(key for key in identifying_keys(text) if not _DIGIT.search(key))


@lru_cache(maxsize=1)
def shipped_words() -> frozenset[str]:
    """The shipped radiology vocabulary, folded."""
    text = resources.files("cxr_dask.data").joinpath(VOCABULARY_RESOURCE).read_text("utf-8")
    words: set[str] = set()
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            words.update(keys(line))
    return frozenset(words)


@dataclass(frozen=True)
class Vocabulary:
    """The tokens a run keeps in free text; everything else becomes ``MARK``.

    ``safe`` holds letters-only and digit-bearing keys alike; the cleaner applies the
    adjacency rule for digits on top.
    """

    safe: frozenset[str]

    def __contains__(self, key: str) -> bool:
        return key in self.safe


@lru_cache(maxsize=1)
def shipped_vocabulary() -> Vocabulary:
    """The vocabulary of a file seen alone (no archive to count): the shipped words only."""
    return Vocabulary(shipped_words())


# ------------------------------------------------------------------- pass 1: counting


def patient_hash(patient_key: str) -> int:
    """A short stand-in for a patient in the counts (in memory only)."""
    return int.from_bytes(hashlib.blake2b(patient_key.encode("utf-8", "surrogateescape"), digest_size=8).digest())


@dataclass
class WordCounts:
    """For each descriptor token, up to ``cap`` distinct patients it was seen with, and
    the identifying keys (names, ids, addresses, institutions) seen anywhere.

    Capping at k keeps the client's memory bounded by the number of distinct tokens: a
    token known to be frequent needs no more patients.
    """

    cap: int = DEFAULT_MIN_PATIENTS
    patients: dict[str, set[int]] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)

    def add(self, words: Iterable[str], patient: int) -> None:
        for word in words:
            seen = self.patients.get(word)
            if seen is None:
                self.patients[word] = {patient}
            elif len(seen) < self.cap:
                seen.add(patient)

    def merge(self, other: WordCounts) -> None:
        for word, seen in other.patients.items():
            mine = self.patients.get(word)
            if mine is None:
                self.patients[word] = set(list(seen)[: self.cap]) if len(seen) > self.cap else set(seen)
            elif len(mine) < self.cap:
                mine.update(seen)
                if len(mine) > self.cap:
                    self.patients[word] = set(list(mine)[: self.cap])
        self.denied |= other.denied

    def frequent(self, min_patients: int) -> set[str]:
        return {word for word, seen in self.patients.items() if len(seen) >= min_patients}


def build_vocabulary(
    counts: WordCounts,
    min_patients: int = DEFAULT_MIN_PATIENTS,
    keep: Iterable[str] = (),
    shipped: Iterable[str] | None = None,
) -> Vocabulary:
    """(frequent letter tokens | shipped words) minus identifying keys and month names,
    plus ``keep``.

    ``keep`` is the user's own list (``freetext.keep``): words the site vouches for even
    when some name in the archive has them as a part.
    """
    frequent = {word for word in counts.frequent(min_patients) if not any(c.isdigit() for c in word)}
    base = frequent | set(shipped_words() if shipped is None else (w for s in shipped for w in keys(s)))
    user = {word for entry in keep for word in keys(entry)}
    return Vocabulary(frozenset((base - counts.denied - MONTHS) | user))


# ------------------------------------------------------------------- pass 2: cleaning


def _removed(found: list[Token], vocabulary: Vocabulary) -> list[bool]:
    """Per token: does it go? Digits only from the vocabulary, never beside other digits."""
    out = []
    for i, token in enumerate(found):
        gone = token.key not in vocabulary
        if not gone and token.has_digit:
            gone = _touches_digits(found, i, -1) or _touches_digits(found, i, 1)
        out.append(gone)
    return out


def _touches_digits(found: list[Token], i: int, step: int) -> bool:
    """Whether the neighbour token, with no letter in between, holds a digit."""
    j = i + step
    return 0 <= j < len(found) and found[j].has_digit


def _pieces(text: str, found: list[Token], removed: list[bool]) -> Iterator[str]:
    position, marking = 0, False
    for token, gone in zip(found, removed, strict=True):
        gap = text[position : token.start]
        if gone and marking and all(c in _NAME_GAP for c in gap):
            position = token.end  # one mark for a whole name: "___", not "___ ___"
            continue
        yield gap
        yield MARK if gone else text[token.start : token.end]
        marking, position = gone, token.end
    yield text[position:]


def clean_value(text: str, vocabulary: Vocabulary, max_chars: int | None = None) -> str:
    """``text`` with every token not known safe replaced by ``MARK``; the rest as written."""
    found = tokens(text)
    removed = _removed(found, vocabulary)
    if not any(removed):
        return text
    cleaned = "".join(_pieces(text, found, removed))
    if max_chars is not None and len(cleaned) > max_chars:
        cleaned = cleaned[:max_chars].rstrip()
    return cleaned


#: Per live vocabulary (by id, checked by a weak reference): its cleaned values, bounded.
_CLEANED: dict[int, tuple[weakref.ref, dict[tuple[str, int | None], str]]] = {}
_MAX_CLEANED = 16384


def clean_value_cached(text: str, vocabulary: Vocabulary, max_chars: int | None = None) -> str:
    """``clean_value``, remembered per vocabulary: descriptors repeat from file to file
    (a study's description, a device's name), and tokenizing is most of the cleaning."""
    entry = _CLEANED.get(id(vocabulary))
    if entry is None or entry[0]() is not vocabulary:
        for key in [key for key, (ref, _) in _CLEANED.items() if ref() is None]:
            del _CLEANED[key]
        entry = _CLEANED[id(vocabulary)] = (weakref.ref(vocabulary), {})
    cache = entry[1]
    cleaned = cache.get((text, max_chars))
    if cleaned is None:
        if len(cache) >= _MAX_CLEANED:
            cache.clear()
        cleaned = cache[text, max_chars] = clean_value(text, vocabulary, max_chars)
    return cleaned


# ------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class FreeTextOptions:
    """``[freetext]`` in a run's config file (checked against these fields by ``cxr_dask.settings``)."""

    min_patients: int = field(
        default=DEFAULT_MIN_PATIENTS,
        metadata=doc("k: distinct patients a token must be seen with to be kept", minimum=1),
    )
    keep: tuple[str, ...] = field(
        default=(), metadata=doc("words the site vouches for, kept even when a name in the archive has them")
    )
