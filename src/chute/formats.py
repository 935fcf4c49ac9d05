"""The record formats chute writes, their media types, and choosing one by ``Accept`` (RFC 9110 §12.5.1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from chute.encoders import CSVEncoder, Encoder, JSONArrayEncoder, NDJSONEncoder
from chute.encoders.arrow import MEDIA_TYPE as ARROW_MEDIA_TYPE
from chute.encoders.arrow import ArrowEncoder
from chute.exceptions import ConfigurationError, NotAcceptable
from chute.headers import weighted


@dataclasses.dataclass(frozen=True)
class Format:
    """A record format: its name, the media types it is served as (first is the default), its encoder."""

    name: str
    media_types: tuple[str, ...]
    encoder: type[Encoder]
    text: bool = True
    suffix: str | None = None

    def extension(self, media_type: str) -> str:
        """The file name extension for a download served as ``media_type``."""
        return "jsonl" if "jsonl" in media_type else self.suffix or self.name

    def content_type(self, media_type: str) -> str:
        # Every text format chute writes is UTF-8; say so even where the type's registration implies it.
        return f"{media_type}; charset=utf-8" if self.text else media_type


CSV = Format("csv", ("text/csv",), CSVEncoder)
NDJSON = Format("ndjson", ("application/x-ndjson", "application/jsonl", "application/x-jsonlines"), NDJSONEncoder)
JSON = Format("json", ("application/json",), JSONArrayEncoder)
# Arrow's IPC stream format; ".arrows" is its registered file extension (".arrow" is the random-access file format).
ARROW = Format("arrow", (ARROW_MEDIA_TYPE,), ArrowEncoder, text=False, suffix="arrows")

FORMATS: dict[str, Format] = {f.name: f for f in (NDJSON, JSON, CSV, ARROW)}
# "jsonl" names the same format, served first as application/jsonl.
ALIASES: dict[str, tuple[Format, str]] = {"jsonl": (NDJSON, "application/jsonl")}


def lookup(name: str) -> tuple[Format, str]:
    """The format called ``name`` and the media type to serve it as."""
    if name in ALIASES:
        return ALIASES[name]
    try:
        fmt = FORMATS[name]
    except KeyError:
        known = ", ".join(sorted([*FORMATS, *ALIASES]))
        raise ConfigurationError(f"unknown format {name!r}; known formats: {known}") from None
    return fmt, fmt.media_types[0]


def parse_accept(header: str) -> list[tuple[str, float]]:
    """``(media range, q)`` pairs of an ``Accept`` header, lower-cased; malformed members are skipped."""
    return [(kind.lower(), q) for kind, q in weighted(header) if kind.count("/") == 1]


def _quality(media_type: str, ranges: Sequence[tuple[str, float]]) -> float:
    # The most specific matching range decides (exact type, then type/*, then */*).
    major = media_type.split("/", 1)[0]
    best: tuple[int, float] = (-1, 0.0)
    for kind, q in ranges:
        if kind == media_type:
            specificity = 2
        elif kind == f"{major}/*":
            specificity = 1
        elif kind == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best[0]:
            best = (specificity, q)
    return best[1]


def negotiate(accept: str | None, formats: Iterable[Format]) -> tuple[Format, str]:
    """The format and media type that best satisfy ``accept``; ties go to the server's order.

    A missing or empty ``Accept`` means anything goes. Raises :class:`NotAcceptable` (406) when nothing fits.
    """
    candidates = [(fmt, media_type) for fmt in formats for media_type in fmt.media_types]
    if not candidates:
        raise ConfigurationError("at least one format is needed")
    if not accept or not accept.strip():
        return candidates[0]
    ranges = parse_accept(accept)
    best, best_q = candidates[0], 0.0
    for candidate in candidates:
        q = _quality(candidate[1], ranges)
        if q > best_q:
            best, best_q = candidate, q
    if best_q <= 0.0:
        supported = [media_type for _, media_type in candidates]
        raise NotAcceptable(
            f"none of the supported media types is acceptable: {', '.join(supported)}", supported=supported
        )
    return best
