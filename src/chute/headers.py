"""Header values built from untrusted text, made safe (never a CR, LF or other control character), and the
weighted lists of the ``Accept*`` request headers read."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Iterator
from urllib.parse import quote

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def content_disposition(filename: str, *, disposition: str = "attachment") -> str:
    """``Content-Disposition`` per RFC 6266: an ASCII ``filename=`` fallback and, for non-ASCII names, the
    exact name as ``filename*=UTF-8''...`` (RFC 8187). Only the base name is kept; control characters go.
    """
    name = _CONTROL.sub("", posixpath.basename(filename.replace("\\", "/"))) or "download"
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    # Full-width solidi decompose to path separators; the fallback must stay a base name too. With backslashes
    # gone, the quoted-string needs only its quotes escaped.
    fallback = fallback.replace("/", "_").replace("\\", "_") or "download"
    escaped = fallback.replace('"', '\\"')
    value = f'{disposition}; filename="{escaped}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value


def weighted(header: str) -> Iterator[tuple[str, float]]:
    """``(value, q)`` for each member of a weighted list (``Accept``, ``Accept-Encoding``, ``Accept-Language``:
    RFC 9110 12.4.2), in order, values stripped; a member with a malformed or out-of-range q is skipped."""
    for member in header.split(","):
        value, _, params = member.partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, text = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(text.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            yield value.strip(), q
