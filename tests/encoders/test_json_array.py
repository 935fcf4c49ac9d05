import json
from typing import Any

import pytest
from hypothesis import given

from chute import EncodeError, JSONArrayEncoder

from .strategies import CUTS, JSON_RECORDS, split


@given(records=JSON_RECORDS, cuts=CUTS)
def test_batches_make_one_valid_array(records: list[dict[str, Any]], cuts: list[int]) -> None:
    encoder = JSONArrayEncoder()
    body = b"".join(encoder.encode(batch) for batch in split(records, cuts)) + encoder.finish()
    assert json.loads(body) == records


@given(records=JSON_RECORDS, cuts=CUTS)
def test_end_record_is_the_last_element(records: list[dict[str, Any]], cuts: list[int]) -> None:
    encoder = JSONArrayEncoder()
    body = b"".join(encoder.encode(batch) for batch in split(records, cuts))
    body += encoder.finish({"@end": {"records": encoder.count}})
    assert json.loads(body) == [*records, {"@end": {"records": len(records)}}]


@pytest.mark.parametrize(
    ("batches", "expected"),
    [
        ([], b"[]"),
        ([[]], b"[]"),
        ([[{"a": 1}]], b'[{"a":1}]'),
        ([[{"a": 1}, {"a": 2}], [], [{"a": 3}]], b'[{"a":1},{"a":2},{"a":3}]'),
    ],
)
def test_brackets_and_commas(batches: list[list[dict[str, int]]], expected: bytes) -> None:
    encoder = JSONArrayEncoder()
    assert b"".join(encoder.encode(batch) for batch in batches) + encoder.finish() == expected


@pytest.mark.parametrize(
    ("batches", "expected"),
    [([], b'[{"@end":{"records":0}}]'), ([[{"a": 1}]], b'[{"a":1},{"@end":{"records":1}}]')],
)
def test_end_record_with_zero_and_one_records(batches: list[list[dict[str, int]]], expected: bytes) -> None:
    encoder = JSONArrayEncoder()
    body = b"".join(encoder.encode(batch) for batch in batches)
    assert body + encoder.finish({"@end": {"records": encoder.count}}) == expected


def test_first_batch_opens_the_array_at_once() -> None:
    # The client sees data (and a parser can start) before the stream ends.
    assert JSONArrayEncoder().encode([{"a": 1}]) == b'[{"a":1}'


def test_unencodable_value_names_its_index_across_batches() -> None:
    encoder = JSONArrayEncoder()
    encoder.encode([{"a": i} for i in range(10)])
    encoder.encode([{"a": i} for i in range(3)])
    batch: list[dict[str, Any]] = [{"a": i} for i in range(8)]
    batch[5] = {"a": 1j}
    with pytest.raises(EncodeError) as caught:
        encoder.encode(batch)
    assert caught.value.index == 18


def test_rows_with_columns_become_objects() -> None:
    encoder = JSONArrayEncoder(["a", "b"])
    assert encoder.encode([(1, "x")]) + encoder.finish() == b'[{"a":1,"b":"x"}]'
