import pytest
from hypothesis import given
from hypothesis import strategies as st

from chute import ConfigurationError, NotAcceptable
from chute.encoders import CSVEncoder, JSONArrayEncoder, NDJSONEncoder
from chute.formats import CSV, JSON, NDJSON, Format, lookup, negotiate, parse_accept

ALL = [NDJSON, JSON, CSV]
ALL_TYPES = [
    "application/x-ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/json",
    "text/csv",
]


@pytest.mark.parametrize(
    ("name", "fmt", "media_type"),
    [
        ("csv", CSV, "text/csv"),
        ("ndjson", NDJSON, "application/x-ndjson"),
        ("jsonl", NDJSON, "application/jsonl"),
        ("json", JSON, "application/json"),
    ],
)
def test_lookup(name: str, fmt: Format, media_type: str) -> None:
    assert lookup(name) == (fmt, media_type)


def test_formats_have_their_encoders() -> None:
    assert (CSV.encoder, NDJSON.encoder, JSON.encoder) == (CSVEncoder, NDJSONEncoder, JSONArrayEncoder)


def test_lookup_of_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigurationError, match="unknown format 'xml'; known formats: arrow, csv, json, jsonl, ndjson"
    ):
        lookup("xml")


def test_content_type_says_utf8() -> None:
    assert CSV.content_type("text/csv") == "text/csv; charset=utf-8"


@pytest.mark.parametrize("accept", [None, "", "   "])
def test_missing_or_empty_accept_gets_the_default(accept: str | None) -> None:
    assert negotiate(accept, ALL) == (NDJSON, "application/x-ndjson")
    assert negotiate(accept, [CSV, JSON]) == (CSV, "text/csv")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/csv", (CSV, "text/csv")),
        ("TEXT/CSV", (CSV, "text/csv")),
        ("application/json", (JSON, "application/json")),
        ("application/jsonl", (NDJSON, "application/jsonl")),
        ("application/x-jsonlines", (NDJSON, "application/x-jsonlines")),
        ("application/json;q=0.5, text/csv;q=0.9", (CSV, "text/csv")),
        ("text/csv;q=0.1, application/json; q=0.2", (JSON, "application/json")),
        ("text/csv;charset=utf-8;q=0.4, application/json;q=0.3", (CSV, "text/csv")),
        ("text/*", (CSV, "text/csv")),
        ("*/*", (NDJSON, "application/x-ndjson")),
        ("application/*", (NDJSON, "application/x-ndjson")),
    ],
)
def test_negotiate(accept: str, expected: tuple[Format, str]) -> None:
    assert negotiate(accept, ALL) == expected


def test_exact_beats_type_wildcard_beats_any() -> None:
    accept = "*/*;q=0.9, application/*;q=0.5, application/json"
    assert negotiate(accept, ALL) == (JSON, "application/json")
    # The most specific range decides even when a vaguer one carries a higher q.
    assert negotiate("application/*;q=0.2, */*;q=0.8", [NDJSON, CSV]) == (CSV, "text/csv")
    assert negotiate("text/csv;q=0.1, text/*;q=0.9", [CSV, NDJSON]) == (CSV, "text/csv")
    assert negotiate("text/csv;q=0.1, text/*;q=0.9, */*;q=0.5", [CSV, NDJSON]) == (NDJSON, "application/x-ndjson")


def test_q_zero_excludes() -> None:
    assert negotiate("text/csv;q=0, */*", [CSV, JSON]) == (JSON, "application/json")
    with pytest.raises(NotAcceptable):
        negotiate("text/csv;q=0", [CSV])
    with pytest.raises(NotAcceptable):
        negotiate("*/*;q=0", ALL)


def test_ties_go_to_server_order() -> None:
    assert negotiate("text/csv, application/json", [JSON, CSV]) == (JSON, "application/json")
    assert negotiate("text/csv, application/json", [CSV, JSON]) == (CSV, "text/csv")
    assert negotiate("application/json;q=0.5, text/csv;q=0.5", [CSV, JSON]) == (CSV, "text/csv")


@pytest.mark.parametrize(
    "accept",
    [
        "garbage, application/json",
        "text/csv;q=abc, application/json",
        "text/csv;q=2, application/json",
        "text/csv;q=-1, application/json",
        "a/b/c, application/json",
        ";;, ,,application/json",
    ],
)
def test_malformed_members_are_skipped(accept: str) -> None:
    assert negotiate(accept, [CSV, JSON]) == (JSON, "application/json")


def test_not_acceptable_lists_the_supported_types() -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate("image/png, text/html;q=0.9", ALL)
    assert caught.value.status == 406
    assert list(caught.value.supported) == ALL_TYPES
    assert caught.value.extra == {"supported": ALL_TYPES}
    assert "text/csv" in caught.value.detail


def test_no_formats_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        negotiate("*/*", [])


def test_parse_accept() -> None:
    assert parse_accept(" Text/CSV ; q=0.5 ,application/json,bad, x/y;q=nope, a/b;Q=0") == [
        ("text/csv", 0.5),
        ("application/json", 1.0),
        ("a/b", 0.0),
    ]


@given(accept=st.text(alphabet=st.sampled_from(list("text/csvjonapli*;q=0.5, ")), max_size=60))
def test_negotiate_answers_a_supported_type_or_406(accept: str) -> None:
    try:
        fmt, media_type = negotiate(accept, ALL)
    except NotAcceptable as exc:
        supported = list(exc.supported)
        fmt, media_type = CSV, ""
    else:
        supported = ALL_TYPES
    assert supported == ALL_TYPES
    assert fmt in ALL
    assert media_type in ("", *fmt.media_types)


@pytest.mark.parametrize(
    ("fmt", "media_type", "extension"),
    [
        (CSV, "text/csv", "csv"),
        (JSON, "application/json", "json"),
        (NDJSON, "application/x-ndjson", "ndjson"),
        (NDJSON, "application/jsonl", "jsonl"),
        (NDJSON, "application/x-jsonlines", "jsonl"),
    ],
)
def test_extension_follows_the_media_type_served(fmt: Format, media_type: str, extension: str) -> None:
    assert fmt.extension(media_type) == extension
