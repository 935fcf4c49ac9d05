"""Locale-aware CSV: the decimal separator, date format and delimiter a spreadsheet of that locale expects.

CSV is read by people's spreadsheets as often as by programs, and a spreadsheet opens a CSV with the conventions
of its locale: in German, ``1.5`` is not a number and ``,`` separates decimals, so fields are separated by ``;``.
JSON formats are for programs and are never localized.

A :class:`CSVLocale` comes from CLDR data through Babel and says how cells of four types are written:

- ``float`` and ``Decimal``: the locale's decimal separator, no grouping (``1234,5``): grouping separators make
  numbers ambiguous to spreadsheets, and exact digits matter more than looks;
- ``date``: the locale's short date pattern with a four-digit year (``27.10.2023``, ``10/27/2023``);
- ``datetime``: that date, a space, and the time as ``HH:MM:SS`` on the 24-hour clock, which spreadsheets of
  every locale read; timezone-aware values are written in UTC.
Everything else (text, integers, booleans) is written as in machine CSV. Digits are always ASCII.

The delimiter is ``;`` where the decimal separator is ``,`` and ``,`` elsewhere.

**The default.** Without ``?locale=`` and without ``Accept-Language``, or when neither names a locale CLDR knows,
a CSV export is machine CSV: RFC 4180 with ``,``, ``.`` and ISO 8601, exactly what it is without this module, and
no ``Content-Language``. An unknown locale is never an error: the client gets the default.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.core import get_locale_identifier

from chute.headers import weighted

MAX_TAG_LENGTH = 35
"""Longer language tags than BCP 47's practical maximum are ignored, not parsed."""

# CLDR date pattern letters and the strftime directives that write them; quoted literals are kept as text.
_PATTERN_TOKEN = re.compile(r"'[^']*'|([a-zA-Z])\1*")
_LANGUAGE_RANGE = re.compile(r"[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*")
_BIDI_MARKS = dict.fromkeys(map(ord, "\u200e\u200f\u061c"), None)


@dataclasses.dataclass(frozen=True)
class CSVLocale:
    """How CSV cells are written for one locale (see the module docstring)."""

    tag: str
    """The BCP 47 tag, for ``Content-Language`` (``de-DE``)."""
    decimal: str
    delimiter: str
    date_format: str
    """A ``strftime`` format."""

    @property
    def datetime_format(self) -> str:
        return f"{self.date_format} %H:%M:%S"

    def cell(self, value: Any) -> Any:
        """``value`` as this locale writes it in CSV (unchanged when it is not a number or date)."""
        kind = type(value)
        if kind is float:
            return repr(value).replace(".", self.decimal) if self.decimal != "." else value
        if kind is Decimal:
            return str(value).replace(".", self.decimal)
        if kind is datetime.datetime:
            if value.tzinfo is not None:
                value = value.astimezone(datetime.UTC)
            return value.strftime(self.datetime_format)
        if kind is datetime.date:
            return value.strftime(self.date_format)
        return value

    def row(self) -> Callable[[Sequence[Any]], list[Any]]:
        """A function that localizes a row's cells."""
        cell = self.cell
        return lambda values: [cell(value) for value in values]


def _strftime(pattern: str) -> str:
    """A CLDR date pattern as a strftime format: four-digit years, numeric months, literals kept."""

    def token(match: re.Match[str]) -> str:
        text = match.group(0)
        if text.startswith("'"):
            return text[1:-1].replace("%", "%%") or "'"
        letter = text[0]
        if letter in "yY":
            return "%Y"
        if letter in "ML":
            return "%m"
        if letter == "d":
            return "%d"
        if letter == "G":
            return ""  # eras: never in a short date of the Gregorian calendar's present
        return text.replace("%", "%%")

    return _PATTERN_TOKEN.sub(token, pattern.translate(_BIDI_MARKS)).strip()


@functools.lru_cache(maxsize=512)
def csv_locale(tag: str) -> CSVLocale | None:
    """The CSV conventions of the locale ``tag`` (``de``, ``de-DE``, ``pt_BR``), or ``None`` when CLDR does not
    know it (the caller then writes machine CSV)."""
    if len(tag) > MAX_TAG_LENGTH or not _LANGUAGE_RANGE.fullmatch(tag):
        return None
    try:
        locale = Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None
    symbols = locale.number_symbols.get("latn", {})
    decimal = symbols.get("decimal", ".")
    if len(decimal) != 1 or decimal.isdigit():
        decimal = "."
    identifier = get_locale_identifier((locale.language, locale.territory, locale.script, locale.variant), sep="-")
    return CSVLocale(
        tag=identifier,
        decimal=decimal,
        delimiter=";" if decimal == "," else ",",
        date_format=_strftime(locale.date_formats["short"].pattern),
    )


def parse_accept_language(header: str) -> list[str]:
    """The language tags of an ``Accept-Language`` header, best first (q=0 and ``*`` left out)."""
    ranked: list[tuple[float, int, str]] = []
    for position, (tag, q) in enumerate(weighted(header)):
        if _LANGUAGE_RANGE.fullmatch(tag) and q > 0.0:
            ranked.append((-q, position, tag))
    return [tag for _, _, tag in sorted(ranked)]


def choose_csv_locale(requested: str | None, accept_language: str | None) -> CSVLocale | None:
    """The locale of a CSV export: ``?locale=`` when given (a tag CLDR does not know gives the default), else the
    best known language of ``Accept-Language``, else ``None``: machine CSV."""
    if requested is not None:
        return csv_locale(requested.strip())
    for tag in parse_accept_language(accept_language or "")[:16]:
        found = csv_locale(tag)
        if found is not None:
            return found
    return None
