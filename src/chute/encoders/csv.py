"""CSV per RFC 4180: a header row, CRLF line ends, fields quoted only when they must be, UTF-8.

Cells are written as the JSON encoder would write them, so a datetime, Decimal or UUID reads the same in CSV as
in NDJSON: strings and string-like values bare, ``None`` (and NaN/inf, which JSON cannot carry) empty, booleans
``true``/``false``, nested lists and dicts as JSON text.

Theory of operation. ``csv.writer`` manages about 1.4 M rows/s; msgspec encodes rows as JSON arrays about ten
times faster. A batch of rows is therefore first encoded as JSON lines (``[1,"item_1",1.5]``). When the result
shows that no string needed escaping (no backslash), none holds the delimiter or a bracket (the separator and
bracket counts match the shape exactly), then every ``"`` is a string delimiter and every unquoted ``null`` is a
literal, and the JSON lines become CSV by a handful of ``bytes.replace`` passes. Any batch that fails a check
goes through ``csv.writer`` instead; both paths produce the same bytes (a property test holds them to it).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from chute.encoders.base import Encoder
from chute.encoders.records import Record, Row, as_rows
from chute.exceptions import ConfigurationError, EncodeError
from chute.locales import CSVLocale

UTF8_BOM = b"\xef\xbb\xbf"

# What JSON writes outside strings (numbers, literals, structure). A delimiter among these could sit unquoted in a
# bare cell such as ``1.5`` or ``true``, which the fast path cannot see; such delimiters take the slow path.
_JSON_BARE = b"0123456789+-.eEtrufalsn[]{}:"


class CSVEncoder(Encoder):
    """Encodes records as CSV rows.

    ``delimiter`` is one character other than a quote, CR or LF (``;`` suits locales with a decimal comma);
    ``bom`` starts the body with a UTF-8 byte order mark, which spreadsheet programs need to detect UTF-8.
    ``locale`` (see :mod:`chute.locales`) writes numbers and dates as that locale's spreadsheets read them; the
    caller passes its delimiter too (``delimiter=locale.delimiter``).
    CSV has no place for an end record; a truncated CSV body is told apart by the aborted connection.
    """

    media_type = "text/csv"
    supports_end_record = False

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        *,
        delimiter: str = ",",
        bom: bool = False,
        header: bool = True,
        locale: CSVLocale | None = None,
    ) -> None:
        super().__init__(columns)
        self.locale = locale
        self._localize = locale.row() if locale is not None else None
        if len(delimiter) != 1 or delimiter in '"\r\n' or not delimiter.isascii():
            raise ConfigurationError(f"CSV delimiter must be one ASCII character other than quote/CR/LF: {delimiter!r}")
        self.delimiter = delimiter
        self._delimiter = delimiter.encode()
        # The fast path's last pass (see _fast): protected quote and comma back, ']' to CR, ',' to the delimiter.
        self._table = bytes.maketrans(b"\x00\x01],", b'",\r' + self._delimiter)
        self.bom = bom
        self.header = header
        self._started = False

    def _encode(self, batch: Sequence[Record]) -> bytes:
        columns = self.columns
        if not columns:
            raise EncodeError("tuple/list records need a header (columns=...) to be written as CSV", index=self.count)
        rows = as_rows(batch, columns, offset=self.count)
        if self._localize is not None:
            rows = list(map(self._localize, rows))
        return self._start() + self._rows(rows)

    def _finish(self, end_record: Mapping[str, Any] | None) -> bytes:
        # With no record at all, the header alone still tells the client the columns.
        return self._start() if self.columns else b""

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        head = UTF8_BOM if self.bom else b""
        if self.header and self.columns:
            head += self._slow([self.columns])
        return head

    def _rows(self, rows: Sequence[Row]) -> bytes:
        fast = self._fast(rows)
        return fast if fast is not None else self._slow(rows)

    def _fast(self, rows: Sequence[Row]) -> bytes | None:
        width = len(rows[0])
        if width < 2:  # an empty single field would be a blank line, which readers skip; csv.writer quotes it
            return None
        if self._delimiter in _JSON_BARE:
            return None
        raw = self._encode_or_locate(self._json.encode_lines, rows)
        count = len(rows)
        # No escape means no string holds a quote, CR, LF or control character; one bracket of each kind per row and
        # no brace mean no nested values and no bracket inside a string. Then every '"' delimits a string, every
        # '[' opens a row and every ']' closes one, and unquoted text is numbers and literals.
        if b"\\" in raw or b"{" in raw or raw.count(b"[") != count or raw.count(b"]") != count:
            return None
        delimiter = self._delimiter
        if raw.count(b",") != count * (width - 1) or (delimiter != b"," and delimiter in raw):
            raw = self._protect(raw, width - 1)
        if b"null" in raw:
            raw = raw.replace(b",null", b",").replace(b"[null", b"[")
        # One pass: drop quotes and '[', turn ']' + LF into CRLF, restore protected bytes, set the delimiter.
        return raw.translate(self._table, b'["')

    def _protect(self, raw: bytes, separators: int) -> bytes:
        """Rewrite the lines whose strings hold a comma or the delimiter so the global passes cannot harm them:
        inner commas become ``\\x01`` and quotes that CSV needs become ``\\x00`` (JSON escapes both bytes, so
        neither occurs in ``raw``); the final ``translate`` turns them back into ``,`` and ``"``."""
        delimiter = self._delimiter
        lines = raw.split(b"\n")
        for i, line in enumerate(lines):
            if line.count(b",") != separators or (delimiter != b"," and delimiter in line):
                parts = line.split(b'"')
                parts[1::2] = [
                    (
                        b"\x00" + text.replace(b",", b"\x01") + b"\x00"
                        if delimiter in text
                        else text.replace(b",", b"\x01")
                    )
                    for text in parts[1::2]
                ]
                lines[i] = b'"'.join(parts)
        return b"\n".join(lines)

    def _slow(self, rows: Sequence[Row]) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self.delimiter, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        for i, row in enumerate(rows):
            try:
                writer.writerow([self._text(cell) for cell in row])
            except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
                raise EncodeError(str(exc), index=self.count + i) from exc
        return out.getvalue().encode()

    def _text(self, cell: Any) -> str:
        if cell is None:
            return ""
        if isinstance(cell, str):
            return cell
        encoded = self._json.encode(cell)
        if encoded == b"null":
            return ""
        if encoded.startswith(b'"'):
            return msgspec.json.decode(encoded, type=str)
        return encoded.decode()
