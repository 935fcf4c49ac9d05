import csv
import datetime
import decimal
import io
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chute import ConfigurationError, CSVEncoder, EncodeError
from chute.encoders.csv import UTF8_BOM

from .strategies import CUTS, split

DELIMITERS = [",", ";", "\t", "|"]
# Every ASCII character the encoder accepts as a delimiter, odd ones included: the fast path must not depend on the
# delimiter being one of the usual few.
ANY_DELIMITER = st.characters(codec="ascii").filter(lambda c: c not in '"\r\n')

# Characters that CSV or the fast path's byte passes treat specially, so hypothesis meets them often.
TRICKY = st.text(alphabet=st.sampled_from(list('a ,;\t|"\r\n\\[]{}nul0é€\x00\x01')), max_size=8)
TEXT = st.one_of(
    st.text(max_size=12),
    TRICKY,
    st.sampled_from(["", "\r\n", "\r", "\n", '"', '""', "null", ",null", "[null", " padded ", "x]", "1,5"]),
)
CELL = st.one_of(st.none(), TEXT)

OFFSETS = st.sampled_from(
    [datetime.UTC, datetime.timezone(datetime.timedelta(hours=2)), datetime.timezone(-datetime.timedelta(hours=5))]
)
SCALAR = st.one_of(
    CELL,
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(),
    st.decimals(places=3, allow_nan=False),
    st.datetimes(timezones=st.none() | OFFSETS),
    st.dates(),
    st.uuids(),
    st.lists(st.integers(), max_size=2),
)


def parse(body: bytes, delimiter: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline=""), delimiter=delimiter))


def encode_all(encoder: CSVEncoder, batches: Sequence[Sequence[Any]]) -> bytes:
    return b"".join(encoder.encode(batch) for batch in batches) + encoder.finish()


@st.composite
def tables(draw: st.DrawFn, cell: st.SearchStrategy[Any] = CELL) -> tuple[list[str], list[tuple[Any, ...]]]:
    width = draw(st.integers(min_value=1, max_value=5))
    columns = draw(st.lists(TEXT, min_size=width, max_size=width))
    rows = draw(st.lists(st.tuples(*[cell] * width), max_size=12))
    return columns, rows


@given(
    table=tables(),
    delimiter=st.sampled_from(DELIMITERS),
    bom=st.booleans(),
    cuts=CUTS,
)
def test_round_trips_through_the_csv_module(
    table: tuple[list[str], list[tuple[Any, ...]]], delimiter: str, bom: bool, cuts: list[int]
) -> None:
    columns, rows = table
    body = encode_all(CSVEncoder(columns, delimiter=delimiter, bom=bom), split(rows, cuts))

    assert body.startswith(UTF8_BOM) == bom
    assert body.count(UTF8_BOM) == int(bom)
    assert body.endswith(b"\r\n")
    expected = [columns] + [["" if cell is None else cell for cell in row] for row in rows]
    assert parse(body, delimiter) == expected
    if not any("\r" in cell or "\n" in cell for line in expected for cell in line):
        # Every line ends in CRLF, and only there.
        assert body.count(b"\n") == body.count(b"\r\n") == len(rows) + 1


def fast_path_cells(delimiter: str) -> st.SearchStrategy[Any]:
    """Cells the fast path accepts: no escapes, brackets or braces in the JSON; commas and the delimiter inside
    strings often enough to take the protected-line route."""
    plain = st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters='"\\[]{}'),
        max_size=10,
    )
    # JSON escapes a tab, so a tab-delimited string holding one can only take the slow path.
    near_alphabet = ["a", " ", ",", "é", "0", "n", "u", "l"] + ([delimiter] if delimiter.isprintable() else [])
    near = st.text(alphabet=st.sampled_from(near_alphabet), max_size=6)
    return st.one_of(
        plain,
        near,
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(),
        st.decimals(places=3, allow_nan=False),
        st.datetimes(timezones=st.none() | OFFSETS),
        st.dates(),
        st.uuids(),
    )


def assert_fast_is_slow(columns: list[str], rows: list[tuple[Any, ...]], delimiter: str, *, accepted: bool) -> None:
    encoder = CSVEncoder(columns, delimiter=delimiter)
    fast = encoder._fast(rows)
    if accepted:
        assert fast is not None
    if fast is not None:
        assert fast == encoder._slow(rows)


@given(data=st.data(), delimiter=st.sampled_from(DELIMITERS))
def test_fast_path_writes_the_same_bytes_as_the_slow_path(data: st.DataObject, delimiter: str) -> None:
    columns, rows = data.draw(tables(fast_path_cells(delimiter)))
    if rows and len(columns) > 1:
        assert_fast_is_slow(columns, rows, delimiter, accepted=True)


@given(data=st.data(), delimiter=ANY_DELIMITER)
def test_fast_path_matches_the_slow_path_for_any_delimiter(data: st.DataObject, delimiter: str) -> None:
    columns, rows = data.draw(tables(fast_path_cells(delimiter)))
    if rows:
        assert_fast_is_slow(columns, rows, delimiter, accepted=False)


@given(table=tables(SCALAR), delimiter=st.sampled_from(DELIMITERS))
def test_fast_path_declines_or_matches_for_any_cell(
    table: tuple[list[str], list[tuple[Any, ...]]], delimiter: str
) -> None:
    columns, rows = table
    if rows:
        assert_fast_is_slow(columns, rows, delimiter, accepted=False)


@given(
    rows=st.lists(
        st.tuples(st.integers(), st.floats(), st.booleans(), st.none(), st.decimals(places=2, allow_nan=False)),
        min_size=1,
        max_size=8,
    ),
    delimiter=ANY_DELIMITER,
)
def test_numbers_and_literals_survive_any_delimiter(rows: list[tuple[Any, ...]], delimiter: str) -> None:
    encoder = CSVEncoder(["i", "f", "b", "n", "d"], delimiter=delimiter)
    fast = encoder._fast(rows)
    if fast is not None:
        assert fast == encoder._slow(rows)


@pytest.mark.parametrize("delimiter", DELIMITERS)
@pytest.mark.parametrize(
    "rows",
    [
        [(1, "plain", 1.5, None, True)],
        [(1, "a,b", 2.0, "x;y", False), (2, "space d", -3, "p|q", None)],
        [("", "", "", "", ""), (None, None, None, None, None)],
        [(decimal.Decimal("1.50"), datetime.date(2024, 1, 2), uuid.UUID(int=7), "é€", 10**20)],
    ],
)
def test_fast_path_accepts_common_rows(rows: list[tuple[Any, ...]], delimiter: str) -> None:
    encoder = CSVEncoder(list("abcde"), delimiter=delimiter)
    fast = encoder._fast(rows)
    assert fast is not None
    assert fast == encoder._slow(rows)


@pytest.mark.parametrize(
    "rows",
    [[('quote"d', 1)], [("line\nbreak", 1)], [("cr\r", 1)], [("tab\t", 1)], [([1, 2], 1)], [({"a": 1}, 1)], [("x",)]],
)
def test_fast_path_declines_what_it_cannot_write(rows: list[tuple[Any, ...]]) -> None:
    encoder = CSVEncoder(["a", "b"][: len(rows[0])])
    assert encoder._fast(rows) is None


def test_header_first_crlf_line_ends_and_minimal_quoting() -> None:
    encoder = CSVEncoder(["id", "name", "note"])
    body = encoder.encode([{"id": 1, "name": "Ann", "note": None}, {"id": 2, "name": 'say "hi"', "note": "a,b"}])
    body += encoder.finish()
    assert body == b'id,name,note\r\n1,Ann,\r\n2,"say ""hi""","a,b"\r\n'


def test_header_comes_from_the_first_record_when_no_columns_are_given() -> None:
    encoder = CSVEncoder()
    body = encoder.encode([{"b": 1, "a": 2}]) + encoder.encode([{"a": 3, "b": 4}]) + encoder.finish()
    assert body == b"b,a\r\n1,2\r\n4,3\r\n"


def test_missing_mapping_keys_are_empty_cells_and_extra_keys_are_ignored() -> None:
    encoder = CSVEncoder(["a", "b"])
    body = encoder.encode([{"a": 1, "b": 2}, {"a": 3}, {"b": 4, "c": 5}])
    assert body == b"a,b\r\n1,2\r\n3,\r\n,4\r\n"


def test_header_only_when_there_are_no_records() -> None:
    assert CSVEncoder(["a", "b"], delimiter=";").finish() == b"a;b\r\n"
    assert CSVEncoder(["a"], bom=True).finish() == UTF8_BOM + b"a\r\n"
    assert CSVEncoder().finish() == b""


def test_header_can_be_left_out() -> None:
    encoder = CSVEncoder(["a", "b"], header=False, bom=True)
    assert encoder.encode([(1, 2)]) + encoder.finish() == UTF8_BOM + b"1,2\r\n"


def test_single_column_empty_cells_are_quoted_rather_than_blank_lines() -> None:
    encoder = CSVEncoder(["a"])
    body = encoder.encode([("",), (None,), ("x",)]) + encoder.finish()
    assert parse(body, ",") == [["a"], [""], [""], ["x"]]


def test_nested_values_are_json_text() -> None:
    encoder = CSVEncoder(["a", "b"])
    body = encoder.encode([([1, "x"], {"k": None})])
    assert parse(body, ",")[1] == ['[1,"x"]', '{"k":null}']


@pytest.mark.parametrize("delimiter", ["", ",,", '"', "\r", "\n", "é"])
def test_invalid_delimiter_is_a_configuration_error(delimiter: str) -> None:
    with pytest.raises(ConfigurationError, match="delimiter"):
        CSVEncoder(delimiter=delimiter)


def test_rows_without_a_header_are_an_encode_error() -> None:
    with pytest.raises(EncodeError) as caught:
        CSVEncoder().encode([(1, 2)])
    assert caught.value.index == 0


def test_rows_of_the_wrong_width_name_their_index() -> None:
    encoder = CSVEncoder(["a", "b"])
    encoder.encode([(1, 2)] * 3)
    with pytest.raises(EncodeError) as caught:
        encoder.encode([(1, 2), (3, 4), (5,)])
    assert caught.value.index == 5
