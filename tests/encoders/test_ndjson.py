import json
from typing import Any

import pytest
from hypothesis import given

from chute import EncodeError, NDJSONEncoder

from .strategies import CUTS, JSON_RECORDS, split


def encode_all(encoder: NDJSONEncoder, batches: list[list[Any]], end: dict[str, Any] | None = None) -> bytes:
    return b"".join(encoder.encode(batch) for batch in batches) + encoder.finish(end)


@given(records=JSON_RECORDS, cuts=CUTS)
def test_lines_parse_back_to_the_records(records: list[dict[str, Any]], cuts: list[int]) -> None:
    body = encode_all(NDJSONEncoder(), split(records, cuts))
    lines = body.split(b"\n")
    # One line per record, each terminated: a record never spans two lines, whatever its strings hold.
    assert lines[-1] == b""
    assert [json.loads(line) for line in lines[:-1]] == records


@given(records=JSON_RECORDS, cuts=CUTS)
def test_end_record_is_the_last_line(records: list[dict[str, Any]], cuts: list[int]) -> None:
    encoder = NDJSONEncoder()
    body = b"".join(encoder.encode(batch) for batch in split(records, cuts))
    body += encoder.finish({"@end": {"records": encoder.count}})
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines == [*records, {"@end": {"records": len(records)}}]


def test_output_is_compact_utf8_not_ascii_escaped() -> None:
    encoder = NDJSONEncoder()
    body = encoder.encode([{"name": "Zoë", "city": "東京", "emoji": "🚀", "ctl": "a\nb\u2028"}])
    assert body == '{"name":"Zoë","city":"東京","emoji":"🚀","ctl":"a\\nb\u2028"}\n'.encode()


def test_no_records_is_an_empty_body() -> None:
    encoder = NDJSONEncoder()
    assert encoder.encode([]) == b""
    assert encoder.finish() == b""
    assert encoder.count == 0


def test_rows_with_columns_become_objects() -> None:
    encoder = NDJSONEncoder(["a", "b"])
    assert encoder.encode([(1, "x"), [2, None]]) == b'{"a":1,"b":"x"}\n{"a":2,"b":null}\n'


def test_rows_without_columns_stay_arrays() -> None:
    assert NDJSONEncoder().encode([(1, "x"), [2, None]]) == b'[1,"x"]\n[2,null]\n'


def test_unencodable_value_names_its_index_across_batches() -> None:
    encoder = NDJSONEncoder()
    encoder.encode([{"a": i} for i in range(10)])
    batch: list[dict[str, Any]] = [{"a": i} for i in range(8)]
    batch[5] = {"a": object()}
    with pytest.raises(EncodeError) as caught:
        encoder.encode(batch)
    assert caught.value.index == 15
    assert "record 15" in str(caught.value)


def test_rows_of_the_wrong_width_name_their_index() -> None:
    encoder = NDJSONEncoder(["a", "b"])
    encoder.encode([(1, 2)])
    with pytest.raises(EncodeError) as caught:
        encoder.encode([(1, 2), (1, 2, 3)])
    assert caught.value.index == 2
