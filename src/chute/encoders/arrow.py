"""Apache Arrow IPC streams (``application/vnd.apache.arrow.stream``): typed columns for data tools.

An Arrow stream is a schema message, then record batches, then an end-of-stream marker; pandas, polars, DuckDB and
pyarrow read it without parsing text. Each encoded batch of records becomes one record batch, so memory stays
that of one batch. The schema is inferred from the first batch (as pyarrow infers it: ``Decimal`` becomes
``decimal128``, an aware ``datetime`` a UTC timestamp) and every later batch is converted to it; a later value
that does not fit the first batch's types is an :class:`~chute.exceptions.EncodeError` with the record's index.
A stream without the end marker was cut, which readers report; an empty export is still a valid stream (the
schema, from ``columns`` as nulls, and the marker). There is no end record: the marker serves.

pyarrow is an optional dependency (``pip install 'chute[arrow]'``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from chute.encoders.base import Encoder
from chute.encoders.records import Record, as_rows
from chute.exceptions import ConfigurationError, EncodeError

MEDIA_TYPE = "application/vnd.apache.arrow.stream"


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.ipc
    except ImportError:  # pragma: no cover - the extra is installed wherever the tests run
        raise ConfigurationError("Arrow output needs pyarrow: pip install 'chute[arrow]'") from None
    return pyarrow


def available() -> bool:
    """Whether pyarrow can be imported, so the Arrow format can be offered."""
    try:
        _pyarrow()
    except ConfigurationError:  # pragma: no cover
        return False
    return True


class ArrowEncoder(Encoder):
    """Encodes records as an Arrow IPC stream, one record batch per encoded batch."""

    media_type = MEDIA_TYPE
    supports_end_record = False

    def __init__(self, columns: Sequence[str] | None = None) -> None:
        super().__init__(columns)
        self._pa = _pyarrow()
        self._out = io.BytesIO()
        self._writer: Any = None
        self._schema: Any = None  # a pyarrow.Schema once the first batch has been seen

    def _encode(self, batch: Sequence[Record]) -> bytes:
        pa = self._pa
        columns = self.columns
        if not columns:
            raise EncodeError("tuple/list records need a header (columns=...) to be written as Arrow", index=self.count)
        rows = as_rows(batch, columns, offset=self.count)
        cells = list(zip(*rows, strict=True))
        try:
            if self._schema is None:
                arrays = [pa.array(column) for column in cells]
                record_batch = pa.RecordBatch.from_arrays(arrays, names=list(columns))
                self._schema = record_batch.schema
                self._writer = pa.ipc.new_stream(self._out, self._schema)
            else:
                arrays = [pa.array(column, type=field.type) for column, field in zip(cells, self._schema, strict=True)]
                record_batch = pa.RecordBatch.from_arrays(arrays, schema=self._schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise EncodeError(f"cannot be written as Arrow: {exc}", index=self._locate(batch, columns)) from exc
        self._writer.write_batch(record_batch)
        return self._take()

    def _locate(self, batch: Sequence[Record], columns: Sequence[str]) -> int:
        """The index of the first record of ``batch`` that does not convert (the batch's first when none alone
        fails, as with types that differ between batches)."""
        pa = self._pa
        types = [field.type for field in self._schema] if self._schema is not None else [None] * len(columns)
        for i, row in enumerate(as_rows(batch, columns, offset=self.count)):
            try:
                for value, kind in zip(row, types, strict=True):
                    pa.array([value], type=kind)
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                return self.count + i
        return self.count

    def _finish(self, end_record: Mapping[str, Any] | None) -> bytes:
        pa = self._pa
        if self._writer is None:
            names = list(self.columns or ())
            self._schema = pa.schema([pa.field(name, pa.null()) for name in names])
            self._writer = pa.ipc.new_stream(self._out, self._schema)
        self._writer.close()  # writes the end-of-stream marker
        return self._take()

    def _take(self) -> bytes:
        data = self._out.getvalue()
        self._out.seek(0)
        self._out.truncate()
        return data
