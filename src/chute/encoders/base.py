"""The encoder contract: batches of records in, bytes out; pure and synchronous, one instance per stream."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import msgspec

from chute.encoders.records import Record, columns_of, enc_hook
from chute.exceptions import EncodeError

# What msgspec raises for a value it cannot encode (enc_hook raises TypeError too).
_ENCODE_FAILURES = (TypeError, ValueError, OverflowError, msgspec.EncodeError)


def json_encoder() -> msgspec.json.Encoder:
    """The one JSON encoder configuration every format shares, so values read the same in CSV and JSON."""
    return msgspec.json.Encoder(enc_hook=enc_hook, decimal_format="string", uuid_format="canonical")


class Encoder(abc.ABC):
    """Turns batches of records into bytes.

    ``encode`` returns the bytes for one batch (the first call also returns whatever the format starts with,
    such as a CSV header or ``[``); ``finish`` returns what closes the body, optionally with an end record.
    Encoders keep only the header and a count, so a stream of any length costs the same memory.
    """

    media_type: ClassVar[str]
    #: Whether the format can carry an end-of-stream record after the data.
    supports_end_record: ClassVar[bool] = True

    def __init__(self, columns: Sequence[str] | None = None) -> None:
        self.columns: tuple[str, ...] | None = tuple(columns) if columns is not None else None
        self.count = 0
        self._json = json_encoder()

    def encode(self, batch: Sequence[Record]) -> bytes:
        if not batch:
            return b""
        if self.columns is None:
            self.columns = columns_of(batch[0])
        data = self._encode(batch)
        self.count += len(batch)
        return data

    def finish(self, end_record: Mapping[str, Any] | None = None) -> bytes:
        """The bytes that close the body; ``end_record`` is appended as a last item where the format allows."""
        return self._finish(end_record)

    @abc.abstractmethod
    def _encode(self, batch: Sequence[Record]) -> bytes: ...

    @abc.abstractmethod
    def _finish(self, end_record: Mapping[str, Any] | None) -> bytes: ...

    def _encode_or_locate(self, encode: Callable[[Any], bytes], items: Sequence[Any]) -> bytes:
        """``encode(items)``; when that fails, find the first record that cannot be encoded and name it."""
        try:
            return encode(items)
        except _ENCODE_FAILURES:
            for i, item in enumerate(items):
                try:
                    self._json.encode(item)
                except _ENCODE_FAILURES as exc:
                    raise EncodeError(str(exc), index=self.count + i) from exc
            raise
