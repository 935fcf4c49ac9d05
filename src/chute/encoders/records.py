"""What a record is, and how to see one as a row of cells or as a mapping.

Records may be dicts, tuples/lists (with a header), dataclasses, pydantic models or msgspec Structs. The encoders
never look at a record one by one in Python when they can help it: the shape of a batch is read from its first
record, which picks a C-speed getter (``operator.itemgetter``/``attrgetter``) mapped over the whole batch.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import pydantic

from chute.exceptions import ConfigurationError, EncodeError

Record = Any
"""One item of a stream: a mapping, a sequence with a header, a dataclass, a pydantic model or a msgspec Struct."""

Row = Sequence[Any]
Getter = Callable[[Record], Any]


def enc_hook(obj: Any) -> Any:
    """Teach msgspec the types it does not know natively, so every format encodes them the same way."""
    if isinstance(obj, pydantic.BaseModel):
        return obj.model_dump()
    # TypeError, as msgspec raises for types it rejects itself: it passes a hook's exception through unchanged.
    raise TypeError(f"cannot encode objects of type {type(obj).__name__}")


def columns_of(record: Record) -> tuple[str, ...] | None:
    """The field names a record carries, or ``None`` for anything else: a bare sequence (a row, which needs a
    header to become a CSV row or a JSON object; without one it is encoded as a JSON array) or a plain value."""
    if isinstance(record, Mapping):
        return tuple(str(key) for key in record)
    if isinstance(record, msgspec.Struct):
        return tuple(record.__struct_fields__)
    if isinstance(record, pydantic.BaseModel):
        return tuple(type(record).model_fields)
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return tuple(field.name for field in dataclasses.fields(record))
    return None


def _single(getter: Getter) -> Getter:
    # itemgetter/attrgetter with one name return the bare value, not a 1-tuple.
    return lambda record: (getter(record),)


def row_getter(record: Record, columns: Sequence[str]) -> Getter | None:
    """A getter that turns records shaped like ``record`` into tuples of cells in ``columns`` order.

    ``None`` means the records already are rows (tuples/lists) and need no conversion.
    """
    if isinstance(record, (tuple, list)):
        return None
    if not columns:
        raise ConfigurationError("records need at least one column")
    factory = operator.itemgetter if isinstance(record, Mapping) else operator.attrgetter
    getter: Getter = factory(*columns)
    return _single(getter) if len(columns) == 1 else getter


def as_rows(batch: Sequence[Record], columns: Sequence[str], *, offset: int) -> Sequence[Row]:
    """The batch as rows of cells in ``columns`` order; ``offset`` is the index of its first record."""
    getter = row_getter(batch[0], columns)
    if getter is not None:
        try:
            return list(map(getter, batch))  # a getter of len(columns) names: every row has the header's width
        except (KeyError, AttributeError, TypeError):
            rows: Sequence[Row] = [_row_or_fail(record, columns, offset + i) for i, record in enumerate(batch)]
    else:
        rows = batch
    width = len(columns)
    if set(map(len, rows)) != {width}:
        index = next(i for i, row in enumerate(rows) if len(row) != width)
        raise EncodeError(f"has {len(rows[index])} fields, the header has {width}", index=offset + index)
    return rows


def _row_or_fail(record: Record, columns: Sequence[str], index: int) -> Row:
    # The slow path, taken only when the C getter failed: a missing mapping key is an empty cell (CSV users
    # expect sparse dicts to work); anything else is reported with the record's index.
    if isinstance(record, Mapping):
        return tuple(record.get(column) for column in columns)
    if isinstance(record, (tuple, list)):
        return record
    getter = row_getter(record, columns)
    try:
        return getter(record) if getter else record  # type: ignore[no-any-return]
    except AttributeError as exc:
        raise EncodeError(str(exc), index=index) from exc


def as_mappings(batch: Sequence[Record], columns: Sequence[str] | None, *, offset: int) -> Sequence[Record]:
    """The batch in a form msgspec encodes as JSON objects: rows are zipped with the header, the rest pass
    (rows without a header stay JSON arrays)."""
    if not columns or not isinstance(batch[0], (tuple, list)):
        return batch
    try:
        return [dict(zip(columns, row, strict=True)) for row in batch]
    except ValueError:
        index = next(i for i, row in enumerate(batch) if len(row) != len(columns))
        raise EncodeError(
            f"has {len(batch[index])} fields, the header has {len(columns)}", index=offset + index
        ) from None
