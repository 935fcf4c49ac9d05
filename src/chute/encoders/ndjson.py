"""Newline-delimited JSON (NDJSON / JSON Lines): one compact JSON value per line, UTF-8."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chute.encoders.base import Encoder
from chute.encoders.records import Record, as_mappings


class NDJSONEncoder(Encoder):
    """Encodes each record as one JSON object per ``\\n``-terminated line.

    JSON escapes every control character inside strings, so a record can never span two lines.
    """

    media_type = "application/x-ndjson"

    def _encode(self, batch: Sequence[Record]) -> bytes:
        items = as_mappings(batch, self.columns, offset=self.count)
        return self._encode_or_locate(self._json.encode_lines, items)

    def _finish(self, end_record: Mapping[str, Any] | None) -> bytes:
        return b"" if end_record is None else self._json.encode(end_record) + b"\n"
