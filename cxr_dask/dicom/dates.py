"""Dates: reading DA/DT values, how a date is written in free text, the shifted window."""

from __future__ import annotations

import datetime as dt

#: Every date of the output lies in these years (MIMIC-CXR's convention).
SHIFTED_YEARS = (2100, 2200)

#: Month names and abbreviations, as dates are written in reports and on films.
MONTHS = (
    ("JAN", "JANUARY"),
    ("FEB", "FEBRUARY"),
    ("MAR", "MARCH"),
    ("APR", "APRIL"),
    ("MAY", "MAY"),
    ("JUN", "JUNE"),
    ("JUL", "JULY"),
    ("AUG", "AUGUST"),
    ("SEP", "SEPTEMBER"),
    ("OCT", "OCTOBER"),
    ("NOV", "NOVEMBER"),
    ("DEC", "DECEMBER"),
)


def date_digits(text: str) -> str | None:
    """The YYYYMMDD at the head of a DA or DT value, or None when it has none.

    Separators old writers put inside a date (ACR-NEMA's ``1991.05.08``, ``1991-05-08``)
    are dropped first; a DA range or a DT's offset comes after the first 8 digits.
    """
    digits = text.strip().replace(".", "").replace("-", "")[:8]
    return digits if len(digits) == 8 and digits.isdigit() else None


def as_date(yyyymmdd: str) -> dt.date:
    """``YYYYMMDD`` as a date; ValueError when it names no day of the calendar."""
    return dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))


def parse_da(value: object) -> dt.date | None:
    """A DA value (or the date of a DT) as a date, or None when absent or malformed."""
    digits = date_digits(str(value or ""))
    if digits is None:
        return None
    try:
        return as_date(digits)
    except ValueError:
        return None


def in_shifted_years(year: int) -> bool:
    """Whether an output year lies in the shifted window."""
    return SHIFTED_YEARS[0] <= year <= SHIFTED_YEARS[1]


def within_shifted_years(value: str, vr: str) -> bool:
    """True for an empty value or one whose every date (a DA range has two) is in the window.

    Only the leading year of a DT counts: a '-' there starts a UTC offset, not a range.
    A part that does not start with four digits is not a shifted date.
    """
    parts = value.split("-") if vr == "DA" else [value]
    for part in parts:
        text = part.strip()
        if text and not (text[:4].isdigit() and in_shifted_years(int(text[:4]))):
            return False
    return True


def date_renderings(yyyymmdd: str) -> list[str]:
    """A date as headers, reports and burned-in text write it (numeric and with month names).

    Every rendering holds the year's last two digits: a text without them holds none.
    """
    y, m, d = yyyymmdd[:4], yyyymmdd[4:6], yyyymmdd[6:8]
    mi, di = str(int(m)), str(int(d))
    numeric = [  # one entry per form, even where two forms coincide (05/12 and 5/12 differ; 12/25 not)
        yyyymmdd,
        f"{y}-{m}-{d}",
        f"{y}/{m}/{d}",
        f"{y}.{m}.{d}",
        f"{m}/{d}/{y}",
        f"{mi}/{di}/{y}",
        f"{m}-{d}-{y}",
        f"{d}/{m}/{y}",
        f"{d}.{m}.{y}",
        f"{d}-{m}-{y}",
        f"{m}/{d}/{y[2:]}",
        f"{y}{m}{d}"[2:],  # YYMMDD
    ]
    if not 1 <= int(m) <= 12:
        return numeric  # a damaged value names no month
    short, long = MONTHS[int(m) - 1]
    return [
        *numeric,
        f"{d}{short}{y}",
        f"{d}-{short}-{y}",
        f"{di} {short} {y}",
        f"{di} {long} {y}",
        f"{short} {di}, {y}",
        f"{long} {di}, {y}",
    ]
