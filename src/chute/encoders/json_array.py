"""One valid JSON array, streamed: ``[`` first, commas between items, ``]`` last; ``[]`` for no records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from chute.encoders.base import Encoder
from chute.encoders.records import Record, as_mappings


class JSONArrayEncoder(Encoder):
    """Encodes records as the elements of a single JSON array.

    Each batch is encoded by msgspec as an array in one call; its brackets are swapped for the separator that
    joins it to what came before, so the bracket-and-comma bookkeeping lives here, once.
    """

    media_type = "application/json"

    def _encode(self, batch: Sequence[Record]) -> bytes:
        items = as_mappings(batch, self.columns, offset=self.count)
        array = self._encode_or_locate(self._json.encode, items)
        return (b"," if self.count else b"[") + array[1:-1]

    def _finish(self, end_record: Mapping[str, Any] | None) -> bytes:
        opener = b"," if self.count else b"["
        if end_record is None:
            return b"]" if self.count else b"[]"
        return opener + self._json.encode(end_record) + b"]"
