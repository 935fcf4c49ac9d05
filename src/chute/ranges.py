"""HTTP range and conditional request logic (RFC 9110 §13, §14), pure: headers and file facts in, a decision out.

Parsing is linear in the header's length and never raises on client input: whatever a client sends, the answer
is one of "serve it all" (200), "serve these ranges" (206), "not modified" (304), "precondition failed" (412) or
"range not satisfiable" (416).
"""

from __future__ import annotations

import dataclasses
import email.utils
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

MAX_RANGES = 32
"""Ranges left after merging above which a request is answered in full: each part costs headers and a seek."""
MERGE_GAP = 80
"""Ranges closer than this many bytes are sent as one: a multipart part's own header is longer."""
MAX_OVERLAP = 1
"""A request may ask for at most this many times the bytes of the file before it is answered in full (as Go's
ServeContent does: more is an attack or a confused client)."""
MAX_DIGITS = 19
"""Positions longer than this are larger than any file; compared as such rather than parsed (int() of a long
string is quadratic)."""


@dataclasses.dataclass(frozen=True, order=True)
class ByteRange:
    """Bytes ``start`` to ``stop - 1`` of a representation (half-open, unlike the header's inclusive form)."""

    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{size}"


Unsatisfiable = Literal["unsatisfiable"]
UNSATISFIABLE: Unsatisfiable = "unsatisfiable"


def _position(text: str, size: int) -> int | None:
    """A non-negative decimal position, ``size`` or more when it has too many digits to matter; ``None`` when
    the text is not a position at all."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    # Leading zeros are allowed (1*DIGIT) and say nothing of the magnitude.
    return size + 1 if len(text.lstrip("0")) > MAX_DIGITS else int(text)


def parse_range(header: str | None, size: int) -> list[ByteRange] | Unsatisfiable | None:
    """The ranges a ``Range`` header asks for, sorted and merged; ``None`` means serve the whole representation.

    An unknown unit, a malformed header, too many ranges or a wasteful set (overlapping far beyond the file's
    size) all give ``None``, as RFC 9110 allows: ignoring a Range header is always correct. Parts that start past
    the end are dropped; when none is left the result is :data:`UNSATISFIABLE` (416).
    """
    if header is None:
        return None
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges: list[ByteRange] = []
    requested = 0
    empty_suffix = False  # a suffix range of a zero-length file: satisfiable (RFC 9110 §14.1.1), yet no bytes
    for spec in specs.split(","):
        spec = spec.strip(" \t")
        if not spec:
            continue  # RFC 9110 list syntax allows empty elements
        first_text, dash, last_text = spec.partition("-")
        if not dash:
            return None
        if not first_text:  # suffix range: the last N bytes
            suffix = _position(last_text, size)
            if suffix is None:
                return None
            if suffix > 0 and size > 0:
                ranges.append(ByteRange(max(0, size - suffix), size))
                requested += min(suffix, size)
            elif suffix > 0:
                empty_suffix = True
        else:
            first = _position(first_text, size)
            last = _position(last_text, size) if last_text else max(size - 1, first or 0)
            if first is None or last is None or last < first:
                return None
            if first < size:
                stop = min(last, size - 1) + 1
                ranges.append(ByteRange(first, stop))
                requested += stop - first
        if requested > MAX_OVERLAP * max(size, 1):
            return None
    if not ranges:
        # Only a header with at least one well-formed spec gets here; all of them started past the end, or the
        # file is empty: a 206 cannot carry zero bytes (``bytes 0--1/0``), so a satisfiable one gets the whole.
        return UNSATISFIABLE if specs.strip(" \t,") and not empty_suffix else None
    merged = _merge(ranges)
    return None if len(merged) > MAX_RANGES else merged


def _merge(ranges: list[ByteRange]) -> list[ByteRange]:
    """Sorted, with overlapping, adjacent and nearly adjacent ranges joined.

    A client never gets the same byte twice, and ranges less than :data:`MERGE_GAP` apart become one, as RFC 9110
    §14.2 allows: the bytes between them cost less than a multipart part header, and a header of thousands of tiny
    ranges becomes a single cheap part instead of a 200 with the whole file.
    """
    ranges.sort()
    merged = [ranges[0]]
    for current in ranges[1:]:
        last = merged[-1]
        if current.start <= last.stop + MERGE_GAP:
            if current.stop > last.stop:
                merged[-1] = ByteRange(last.start, current.stop)
        else:
            merged.append(current)
    return merged


# -- validators


def _entity_tags(header: str) -> list[str] | Literal["*"]:
    """The entity tags of an If-Match / If-None-Match list; ``"*"`` for the wildcard. Malformed members go."""
    if header.strip() == "*":
        return "*"
    tags = []
    for member in header.split(","):
        tag = member.strip()
        weak = tag.startswith("W/")
        opaque = tag[2:] if weak else tag
        if len(opaque) >= 2 and opaque[0] == '"' and opaque[-1] == '"' and '"' not in opaque[1:-1]:
            tags.append(tag)
    return tags


def strong_match(tag: str, etag: str) -> bool:
    """Strong comparison: both tags strong and the same."""
    return not tag.startswith("W/") and not etag.startswith("W/") and tag == etag


def weak_match(tag: str, etag: str) -> bool:
    """Weak comparison: the opaque parts are the same, whatever their weakness."""
    return tag.removeprefix("W/") == etag.removeprefix("W/")


def none_match(header: str, etag: str) -> bool:
    """Whether ``If-None-Match: header`` matches ``etag`` (weak comparison, as RFC 9110 13.1.2 asks: a
    compressed answer's weakened tag still names the same representation)."""
    tags = _entity_tags(header)
    return tags == "*" or any(weak_match(tag, etag) for tag in tags)


def parse_http_date(value: str) -> datetime | None:
    """An HTTP-date (any of the three forms RFC 9110 requires recipients to accept), or ``None``."""
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # asctime carries no zone and means GMT; so does "-0000", which the email module reports as no zone.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


Decision = Literal[200, 206, 304, 412, 416]


@dataclasses.dataclass(frozen=True)
class Validators:
    """What the server knows of the representation: its strong ETag, its modification time (whole seconds, as
    HTTP dates carry them) and its size."""

    etag: str
    last_modified: int
    size: int


@dataclasses.dataclass(frozen=True)
class Request:
    """The request headers that decide a conditional or range request (``None`` when absent)."""

    method: str = "GET"
    range: str | None = None
    if_range: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None


@dataclasses.dataclass(frozen=True)
class Answer:
    status: Decision
    ranges: Sequence[ByteRange] = ()


def evaluate(request: Request, current: Validators) -> Answer:
    """The answer to a GET or HEAD of a file, preconditions evaluated in the order of RFC 9110 §13.2.2."""
    if request.if_match is not None:
        tags = _entity_tags(request.if_match)
        if tags != "*" and not any(strong_match(tag, current.etag) for tag in tags):
            return Answer(412)
    elif request.if_unmodified_since is not None:
        date = parse_http_date(request.if_unmodified_since)
        if date is not None and current.last_modified > date.timestamp():
            return Answer(412)
    if request.if_none_match is not None:
        tags = _entity_tags(request.if_none_match)
        if tags == "*" or any(weak_match(tag, current.etag) for tag in tags):
            return Answer(304) if request.method in ("GET", "HEAD") else Answer(412)
    elif request.if_modified_since is not None and request.method in ("GET", "HEAD"):
        date = parse_http_date(request.if_modified_since)
        if date is not None and current.last_modified <= date.timestamp():
            return Answer(304)
    if request.method != "GET" or request.range is None:
        return Answer(200)
    if request.if_range is not None and not _if_range_holds(request.if_range, current):
        return Answer(200)
    ranges = parse_range(request.range, current.size)
    if ranges is None:
        return Answer(200)
    if ranges == UNSATISFIABLE:
        return Answer(416)
    return Answer(206, ranges)


def _if_range_holds(value: str, current: Validators) -> bool:
    value = value.strip()
    if value.startswith(('"', "W/")):
        return strong_match(value, current.etag)
    date = parse_http_date(value)
    return date is not None and int(date.timestamp()) == current.last_modified
