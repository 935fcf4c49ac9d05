"""Every kind of record reads the same, and every value reads the same in every format."""

import csv
import dataclasses
import datetime
import decimal
import io
import json
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chute import CSVEncoder, EncodeError, Encoder, JSONArrayEncoder, NDJSONEncoder

COLUMNS = ("id", "name", "price", "at", "day", "ref", "note")
ROWS: list[tuple[Any, ...]] = [
    (
        1,
        'Zoë, "the" 東京',
        decimal.Decimal("1.50"),
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        datetime.date(2024, 1, 2),
        uuid.UUID(int=1),
        None,
    ),
    (
        2,
        "plain",
        decimal.Decimal("-0.001"),
        datetime.datetime(2024, 1, 2, 3, 4, 5, 600, tzinfo=datetime.UTC),
        datetime.date(1999, 12, 31),
        uuid.UUID(int=2**128 - 1),
        "multi\r\nline",
    ),
    (
        3,
        "",
        decimal.Decimal("1E+3"),
        datetime.datetime(2024, 6, 30, 23, 59, 59, tzinfo=datetime.timezone(datetime.timedelta(hours=-5, minutes=-30))),
        datetime.date(2024, 2, 29),
        uuid.UUID(int=3),
        "x",
    ),
]


@dataclasses.dataclass
class OrderDataclass:
    id: int
    name: str
    price: decimal.Decimal
    at: datetime.datetime
    day: datetime.date
    ref: uuid.UUID
    note: str | None


class OrderModel(pydantic.BaseModel):
    id: int
    name: str
    price: decimal.Decimal
    at: datetime.datetime
    day: datetime.date
    ref: uuid.UUID
    note: str | None


class OrderStruct(msgspec.Struct):
    id: int
    name: str
    price: decimal.Decimal
    at: datetime.datetime
    day: datetime.date
    ref: uuid.UUID
    note: str | None


def as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(COLUMNS, row, strict=True))


KINDS: dict[str, tuple[Callable[[tuple[Any, ...]], Any], bool]] = {
    # name: (make a record from a row, whether the encoder needs columns=)
    "dict": (as_dict, False),
    "tuple": (tuple, True),
    "list": (list, True),
    "dataclass": (lambda row: OrderDataclass(*row), False),
    "pydantic": (lambda row: OrderModel(**as_dict(row)), False),
    "msgspec": (lambda row: OrderStruct(*row), False),
}
ENCODERS: list[type[Encoder]] = [CSVEncoder, NDJSONEncoder, JSONArrayEncoder]


def encode(encoder: Encoder, batches: Sequence[Sequence[Any]]) -> bytes:
    return b"".join(encoder.encode(batch) for batch in batches) + encoder.finish()


@pytest.mark.parametrize("encoder_type", ENCODERS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_of_record_gives_the_same_output(encoder_type: type[Encoder], kind: str) -> None:
    make, needs_columns = KINDS[kind]
    records = [make(row) for row in ROWS]
    expected = encode(encoder_type(), [[as_dict(row) for row in ROWS]])
    # Split in two batches: the second batch must not depend on state only the first one set up.
    assert encode(encoder_type(COLUMNS if needs_columns else None), [records[:1], records[1:]]) == expected


def csv_cells(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode(), newline="")))


def test_values_read_the_same_in_csv_and_json() -> None:
    records = [as_dict(row) for row in ROWS]
    from_csv = csv_cells(encode(CSVEncoder(), [records]))
    from_json = json.loads(encode(JSONArrayEncoder(), [records]))
    from_ndjson = [json.loads(line) for line in encode(NDJSONEncoder(), [records]).splitlines()]
    assert from_json == from_ndjson
    for csv_row, json_row in zip(from_csv, from_json, strict=True):
        assert csv_row == {key: "" if value is None else str(value) for key, value in json_row.items()}
    assert from_json[0]["price"] == "1.50"
    assert from_csv[0]["price"] == "1.50"
    assert [row["at"] for row in from_csv] == [
        "2024-01-02T03:04:05",
        "2024-01-02T03:04:05.000600Z",
        "2024-06-30T23:59:59-05:30",
    ]
    assert from_csv[1]["ref"] == "ffffffff-ffff-ffff-ffff-ffffffffffff"


OFFSETS = st.sampled_from(
    [datetime.UTC, datetime.timezone(datetime.timedelta(hours=2)), datetime.timezone(-datetime.timedelta(hours=9))]
)
STRING_LIKE = st.one_of(
    st.text(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(timezones=st.none() | OFFSETS),
    st.dates(),
    st.uuids(),
)


@given(values=st.lists(STRING_LIKE, min_size=2, max_size=6))
def test_string_like_values_are_the_same_text_in_csv_cells_and_json_strings(values: list[Any]) -> None:
    columns = [f"c{i}" for i in range(len(values))]
    csv_body = encode(CSVEncoder(columns), [[tuple(values)]])
    json_body = encode(NDJSONEncoder(columns), [[tuple(values)]])
    (cells,) = list(csv.reader(io.StringIO(csv_body.decode(), newline="")))[1:]
    assert cells == list(json.loads(json_body).values())


@pytest.mark.parametrize("encoder_type", ENCODERS)
def test_unencodable_value_in_a_later_batch_names_its_stream_index(encoder_type: type[Encoder]) -> None:
    encoder = encoder_type()
    encoder.encode([{"a": i, "b": "x"} for i in range(10)])
    batch: list[dict[str, Any]] = [{"a": i, "b": "x"} for i in range(10)]
    batch[5] = {"a": 5, "b": object()}
    with pytest.raises(EncodeError) as caught:
        encoder.encode(batch)
    assert caught.value.index == 15
    assert encoder.count == 10


@pytest.mark.parametrize("encoder_type", ENCODERS)
@pytest.mark.parametrize("bad", [(1,), (1, 2, 3), ()])
def test_rows_of_the_wrong_width_name_their_stream_index(encoder_type: type[Encoder], bad: tuple[int, ...]) -> None:
    encoder = encoder_type(["a", "b"])
    encoder.encode([(0, 0)] * 4)
    with pytest.raises(EncodeError) as caught:
        encoder.encode([(1, 1), (2, 2), bad, (3, 3)])
    assert caught.value.index == 6


def test_csv_record_missing_an_attribute_names_its_stream_index() -> None:
    good = OrderDataclass(*ROWS[0])
    encoder = CSVEncoder(COLUMNS)
    encoder.encode([good, good])
    with pytest.raises(EncodeError) as caught:
        encoder.encode([good, 42])
    assert caught.value.index == 3


def test_csv_rows_without_columns_are_an_encode_error() -> None:
    with pytest.raises(EncodeError, match="columns"):
        CSVEncoder().encode([(1, 2)])


def test_json_rows_without_columns_are_arrays() -> None:
    rows = [(1, "a"), [2, None]]
    assert json.loads(encode(JSONArrayEncoder(), [rows])) == [[1, "a"], [2, None]]
    assert [json.loads(line) for line in encode(NDJSONEncoder(), [rows]).splitlines()] == [[1, "a"], [2, None]]
