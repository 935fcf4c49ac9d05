"""Arrow IPC streams: typed columns, one record batch per encoded batch, a valid stream when empty or cut."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.ipc
import pytest

from chute.encoders.arrow import ArrowEncoder
from chute.exceptions import EncodeError

WHEN = datetime.datetime(2023, 10, 27, 10, 0, tzinfo=datetime.UTC)


def read(body: bytes) -> pa.Table:
    return pyarrow.ipc.open_stream(body).read_all()


def test_batches_become_record_batches_of_typed_columns() -> None:
    encoder = ArrowEncoder(("id", "price", "name", "at"))
    parts = [
        encoder.encode([(1, Decimal("1.50"), "Zoë", WHEN), (2, Decimal("2.25"), None, WHEN)]),
        encoder.encode([(3, Decimal("9.99"), "李", None)]),
        encoder.finish(),
    ]
    assert all(parts)
    reader = pyarrow.ipc.open_stream(b"".join(parts))
    batches = list(reader)
    assert [b.num_rows for b in batches] == [2, 1]
    table = pa.Table.from_batches(batches)
    assert table.schema.field("id").type == pa.int64()
    assert pa.types.is_decimal(table.schema.field("price").type)
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert table.to_pylist() == [
        {"id": 1, "price": Decimal("1.50"), "name": "Zoë", "at": WHEN},
        {"id": 2, "price": Decimal("2.25"), "name": None, "at": WHEN},
        {"id": 3, "price": Decimal("9.99"), "name": "李", "at": None},
    ]
    assert encoder.count == 3


def test_dicts_give_their_own_column_names() -> None:
    encoder = ArrowEncoder()
    body = encoder.encode([{"a": 1, "b": "x"}]) + encoder.finish()
    assert read(body).to_pylist() == [{"a": 1, "b": "x"}]


def test_an_empty_export_is_a_valid_stream_with_the_columns() -> None:
    table = read(ArrowEncoder(("id", "name")).finish())
    assert (table.num_rows, table.column_names) == (0, ["id", "name"])


def test_a_stream_without_its_end_marker_is_seen_as_cut() -> None:
    encoder = ArrowEncoder(("id",))
    body = encoder.encode([(i,) for i in range(1000)])
    reader = pyarrow.ipc.open_stream(body[:-100])
    with pytest.raises((pa.ArrowInvalid, OSError)):  # pyarrow reports a short message body as an IOError
        reader.read_all()


def test_a_value_that_does_not_fit_the_first_batchs_types_is_an_encode_error() -> None:
    encoder = ArrowEncoder(("id", "name"))
    encoder.encode([(1, "a"), (2, "b")])
    with pytest.raises(EncodeError) as caught:
        encoder.encode([(3, "c"), ("four", "d")])
    assert caught.value.index == 3


def test_rows_without_columns_are_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="need a header"):
        ArrowEncoder().encode([(1, 2)])
