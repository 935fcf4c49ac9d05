"""Range parsing and conditional request evaluation (RFC 9110 §13, §14), table-driven like Go's ServeContent tests.

The table runs every case through :func:`evaluate`, so each row checks the precondition order of RFC 9110 §13.2.2
and the Range parsing together, as a file download sees them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chute.ranges import (
    MAX_OVERLAP,
    MAX_RANGES,
    MERGE_GAP,
    UNSATISFIABLE,
    Answer,
    ByteRange,
    Request,
    Unsatisfiable,
    Validators,
    evaluate,
    http_date,
    parse_http_date,
    parse_range,
    strong_match,
    weak_match,
)

SIZE = 100
MODIFIED = 784111777  # Sun, 06 Nov 1994 08:49:37 GMT, the example date of RFC 9110 §5.6.7
FILE = Validators(etag='"abc"', last_modified=MODIFIED, size=SIZE)
EMPTY = Validators(etag='"empty"', last_modified=MODIFIED, size=0)

AT = "Sun, 06 Nov 1994 08:49:37 GMT"
AT_RFC850 = "Sunday, 06-Nov-94 08:49:37 GMT"
AT_ASCTIME = "Sun Nov  6 08:49:37 1994"
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"

Spans = list[tuple[int, int]]


def case(
    name: str, status: int, spans: Spans | None = None, *, method: str = "GET", **headers: str
) -> pytest.ParameterSet:
    return pytest.param(Request(method=method, **headers), status, spans or [], id=name)


STRIDE = MERGE_GAP + 2


def disjoint(count: int) -> str:
    """``count`` one-byte ranges further apart than MERGE_GAP, so merging cannot join them."""
    return "bytes=" + ",".join(f"{STRIDE * i}-{STRIDE * i}" for i in range(count))


CONDITIONAL_CASES = [
    case("plain GET", 200),
    case("plain HEAD", 200, method="HEAD"),
    # If-Match: strong comparison (§13.1.1)
    case("if-match same", 200, if_match='"abc"'),
    case("if-match star", 200, if_match="*"),
    case("if-match other", 412, if_match='"xyz"'),
    case("if-match weak never matches", 412, if_match='W/"abc"'),
    case("if-match list", 200, if_match='"xyz", "abc"'),
    case("if-match list with a weak twin", 412, if_match='"xyz" ,W/"abc"'),
    case("if-match unquoted is no tag", 412, if_match="abc"),
    case("if-match empty list", 412, if_match=""),
    case("if-match on POST", 412, method="POST", if_match='"xyz"'),
    case("if-match passes then range", 206, [(0, 10)], if_match='"abc"', range="bytes=0-9"),
    case("if-match fails before range", 412, if_match='"xyz"', range="bytes=0-9"),
    # If-Unmodified-Since (§13.1.4): fails only when modified after the date
    case("ius same second", 200, if_unmodified_since=AT),
    case("ius after", 200, if_unmodified_since=AFTER),
    case("ius before", 412, if_unmodified_since=BEFORE),
    case("ius garbage ignored", 200, if_unmodified_since="yesterday"),
    case("ius ignored with if-match", 200, if_match='"abc"', if_unmodified_since=BEFORE),
    case("ius ignored with if-match star", 200, if_match="*", if_unmodified_since=BEFORE),
    # If-None-Match (§13.1.2): weak comparison; 304 for GET/HEAD, 412 otherwise
    case("inm same", 304, if_none_match='"abc"'),
    case("inm weak compares weakly", 304, if_none_match='W/"abc"'),
    case("inm list", 304, if_none_match='"xyz", W/"abc"'),
    case("inm other", 200, if_none_match='"xyz"'),
    case("inm star", 304, if_none_match="*"),
    case("inm on HEAD", 304, method="HEAD", if_none_match='"abc"'),
    case("inm on POST", 412, method="POST", if_none_match='"abc"'),
    case("inm star on PUT", 412, method="PUT", if_none_match="*"),
    case("inm wins over range", 304, if_none_match='"abc"', range="bytes=0-9"),
    case("if-match checked before inm", 412, if_match='"xyz"', if_none_match='"abc"'),
    case("ius checked before inm", 412, if_unmodified_since=BEFORE, if_none_match='"abc"'),
    # If-Modified-Since (§13.1.3): 304 when not modified after; only for GET/HEAD; only without If-None-Match
    case("ims same second", 304, if_modified_since=AT),
    case("ims after", 304, if_modified_since=AFTER),
    case("ims before", 200, if_modified_since=BEFORE),
    case("ims rfc 850", 304, if_modified_since=AT_RFC850),
    case("ims asctime", 304, if_modified_since=AT_ASCTIME),
    case("ims garbage ignored", 200, if_modified_since="not a date"),
    case("ims on HEAD", 304, method="HEAD", if_modified_since=AT),
    case("ims ignored on POST", 200, method="POST", if_modified_since=AT),
    case("ims ignored with inm", 200, if_none_match='"xyz"', if_modified_since=AT),
    case("ims wins over range", 304, if_modified_since=AT, range="bytes=0-9"),
    case("ius passes then ims", 304, if_unmodified_since=AT, if_modified_since=AT),
    # If-Range (§13.1.5): strong etag or exact date, else the whole file
    case("if-range same etag", 206, [(0, 10)], range="bytes=0-9", if_range='"abc"'),
    case("if-range padded etag", 206, [(0, 10)], range="bytes=0-9", if_range=' "abc" '),
    case("if-range weak etag", 200, range="bytes=0-9", if_range='W/"abc"'),
    case("if-range other etag", 200, range="bytes=0-9", if_range='"xyz"'),
    case("if-range exact date", 206, [(0, 10)], range="bytes=0-9", if_range=AT),
    case("if-range exact asctime date", 206, [(0, 10)], range="bytes=0-9", if_range=AT_ASCTIME),
    case("if-range earlier date", 200, range="bytes=0-9", if_range=BEFORE),
    case("if-range later date", 200, range="bytes=0-9", if_range=AFTER),
    case("if-range garbage", 200, range="bytes=0-9", if_range="yesterday"),
    case("if-range without range", 200, if_range='"abc"'),
    case("if-range holds, range unsatisfiable", 416, range="bytes=500-", if_range='"abc"'),
    case("if-range fails, range unsatisfiable", 200, range="bytes=500-", if_range='"xyz"'),
    # Range applies to GET only (§14.2)
    case("range on HEAD ignored", 200, method="HEAD", range="bytes=0-9"),
    case("range on POST ignored", 200, method="POST", range="bytes=0-9"),
]

RANGE_CASES = [
    case("single", 206, [(0, 10)], range="bytes=0-9"),
    case("single inside", 206, [(10, 20)], range="bytes=10-19"),
    case("suffix", 206, [(90, 100)], range="bytes=-10"),
    case("suffix of the whole", 206, [(0, 100)], range="bytes=-100"),
    case("suffix longer than the file clamps", 206, [(0, 100)], range="bytes=-1000"),
    case("open", 206, [(90, 100)], range="bytes=90-"),
    case("open from zero", 206, [(0, 100)], range="bytes=0-"),
    case("open at the last byte", 206, [(99, 100)], range="bytes=99-"),
    case("open at the end", 416, range="bytes=100-"),
    case("last beyond the end clamps", 206, [(95, 100)], range="bytes=95-200"),
    case("first byte", 206, [(0, 1)], range="bytes=0-0"),
    case("last byte", 206, [(99, 100)], range="bytes=99-99"),
    case("several sorted", 206, [(0, 9), (90, 100)], range="bytes=90-99,0-8"),
    case("overlapping merged", 206, [(0, 15)], range="bytes=0-9,5-14"),
    case("adjacent merged", 206, [(0, 20)], range="bytes=0-9,10-19"),
    case("one byte apart merged", 206, [(0, 20)], range="bytes=0-9,11-19"),
    case("MERGE_GAP apart merged", 206, [(0, 100)], range="bytes=0-9,90-99"),
    case("more than MERGE_GAP apart kept apart", 206, [(0, 9), (90, 100)], range="bytes=0-8,90-99"),
    case("contained merged", 206, [(10, 20)], range="bytes=10-19,12-15"),
    case("int and suffix", 206, [(0, 5), (95, 100)], range="bytes=0-4,-5"),
    case("unsatisfiable part dropped", 206, [(0, 2)], range="bytes=0-1,9999-"),
    case("unsatisfiable part first dropped", 206, [(0, 2)], range="bytes=9999-,0-1"),
    case("all unsatisfiable", 416, range="bytes=100-,200-300"),
    case("zero suffix unsatisfiable", 416, range="bytes=-0"),
    case("zero suffix dropped", 206, [(0, 1)], range="bytes=-0,0-0"),
    # ignored (200): RFC 9110 lets a server ignore any Range it does not like
    case("unknown unit", 200, range="items=0-5"),
    case("last before first", 200, range="bytes=5-1"),
    case("letters", 200, range="bytes=a-b"),
    case("no specs", 200, range="bytes="),
    case("only commas", 200, range="bytes=,,,"),
    case("double dash", 200, range="bytes=--1"),
    case("negative last", 200, range="bytes=0--1"),
    case("no equals sign", 200, range="bytes 0-1"),
    case("no dash", 200, range="bytes=1"),
    case("lone dash", 200, range="bytes=-"),
    case("signed first", 200, range="bytes=+1-2"),
    case("signed last", 200, range="bytes=1-+2"),
    case("hex", 200, range="bytes=0x1-2"),
    case("one bad spec spoils all", 200, range="bytes=0-1,5-1"),
    case("junk spec spoils all", 200, range="bytes=0-1,x"),
    case("space inside a spec", 200, range="bytes=0 -9"),
    case("arabic-indic digits", 200, range="bytes=\u0660-\u0669"),
    case("fullwidth digits", 200, range="bytes=\uff10-\uff19"),
    case("superscript digits", 200, range="bytes=\u00b9-\u00b2"),
    # tolerated syntax
    case("whitespace around list members", 206, [(0, 9), (90, 100)], range="bytes= 0-8 ,\t90-99 "),
    case("uppercase unit", 206, [(0, 10)], range="BYTES=0-9"),
    case("mixed-case unit", 206, [(0, 10)], range="Bytes=0-9"),
    case("empty list elements", 206, [(0, 2)], range="bytes=,0-1,"),
    case("leading zeros", 206, [(5, 10)], range="bytes=005-009"),
    case("many leading zeros", 206, [(5, 10)], range=f"bytes={'0' * 30}5-{'0' * 30}9"),
    # huge numbers: compared by length, never int() of a long string (quadratic, and refused past 4300 digits)
    case("huge first", 416, range=f"bytes={'9' * 100}-"),
    case("huge first and last", 416, range=f"bytes={'9' * 100}-{'9' * 100}"),
    case("huge last clamps", 206, [(0, 100)], range=f"bytes=0-{'9' * 100}"),
    case("huge suffix clamps", 206, [(0, 100)], range=f"bytes=-{'9' * 100}"),
    case("beyond int's digit limit", 206, [(0, 100)], range=f"bytes=0-{'9' * 5000}"),
    # too many parts, too many bytes
    case("many ranges merging into few", 206, [(0, 50)], range="bytes=" + ",".join(f"{i}-{i}" for i in range(50))),
    case("exactly the file's bytes", 206, [(0, 100)], range="bytes=0-49,50-99"),
    case("more bytes than the file", 200, range="bytes=0-99,0-0"),
    case("overlap beyond the file", 200, range="bytes=0-59,40-99"),
    case("suffixes beyond the file", 200, range="bytes=-60,-60"),
    case("open ranges beyond the file", 200, range="bytes=40-,40-"),
]

EMPTY_FILE_CASES = [
    case("no range", 200),
    case("open from zero", 416, range="bytes=0-"),
    case("first byte", 416, range="bytes=0-0"),
    case("zero suffix", 416, range="bytes=-0"),
    # RFC 9110 §14.1.1: a non-zero suffix is satisfiable even for zero bytes; no 206 can carry it, so 200
    case("suffix", 200, range="bytes=-1"),
    case("suffix among unsatisfiable", 200, range="bytes=5-,-1"),
    case("malformed", 200, range="bytes=x"),
    case("if-none-match", 304, if_none_match='"empty"'),
]


def spans(answer: Answer) -> Spans:
    return [(part.start, part.stop) for part in answer.ranges]


@pytest.mark.parametrize(("request_", "status", "expected"), CONDITIONAL_CASES + RANGE_CASES)
def test_serve_content_table(request_: Request, status: int, expected: Spans) -> None:
    answer = evaluate(request_, FILE)
    assert (answer.status, spans(answer)) == (status, expected)


@pytest.mark.parametrize(("request_", "status", "expected"), EMPTY_FILE_CASES)
def test_zero_size_file(request_: Request, status: int, expected: Spans) -> None:
    answer = evaluate(request_, EMPTY)
    assert (answer.status, spans(answer)) == (status, expected)


def test_no_range_header_means_the_whole_file() -> None:
    assert parse_range(None, SIZE) is None
    assert parse_range(None, 0) is None


def test_byte_range_is_half_open() -> None:
    part = ByteRange(10, 20)
    assert part.length == 10
    assert part.content_range(SIZE) == "bytes 10-19/100"  # the header's form is inclusive


@pytest.mark.parametrize(
    ("tag", "etag", "strong", "weak"),
    [
        ('"a"', '"a"', True, True),
        ('W/"a"', '"a"', False, True),
        ('"a"', 'W/"a"', False, True),
        ('W/"a"', 'W/"a"', False, True),
        ('"a"', '"b"', False, False),
        ('W/"a"', 'W/"b"', False, False),
    ],
)
def test_comparison_functions(tag: str, etag: str, strong: bool, weak: bool) -> None:
    # The table of RFC 9110 §8.8.3.2.
    assert (strong_match(tag, etag), weak_match(tag, etag)) == (strong, weak)


# -- fuzzing


def assert_well_formed(result: list[ByteRange] | Unsatisfiable | None, size: int) -> None:
    """What FileStream relies on, whatever the header: no exception, and parts it can send as they are."""
    if result is None:
        return
    if isinstance(result, str):
        assert result == UNSATISFIABLE
        return
    assert 0 < len(result) <= MAX_RANGES
    for part in result:
        assert 0 <= part.start < part.stop <= size
    for before, after in pairwise(result):
        assert before.stop + MERGE_GAP < after.start  # sorted, not overlapping, not even close
    assert sum(part.length for part in result) <= MAX_OVERLAP * size


SIZES = st.integers(0, 10**12)
GRAMMAR = st.text(alphabet="bytes=0123456789-, \t" + "BYTES;x\u0660\u00b2\uff10", max_size=60)


@settings(max_examples=400, deadline=None)
@given(header=st.text(), size=SIZES)
def test_parse_range_never_raises_on_any_text(header: str, size: int) -> None:
    assert_well_formed(parse_range(header, size), size)


@settings(max_examples=600, deadline=None)
@given(header=st.one_of(GRAMMAR, GRAMMAR.map(lambda text: "bytes=" + text)), size=SIZES | st.integers(0, 100))
def test_parse_range_on_range_grammar_alphabet(header: str, size: int) -> None:
    assert_well_formed(parse_range(header, size), size)


Spec = tuple[int | None, int | None]
"""``(first, last)`` of a well-formed range-spec; ``first`` None for a suffix range, ``last`` None for ``first-``."""


@st.composite
def range_headers(draw: st.DrawFn) -> tuple[str, list[Spec]]:
    position = st.integers(0, 300)
    specs: list[Spec] = draw(
        st.lists(
            st.one_of(
                st.tuples(position, position).map(lambda pair: (min(pair), max(pair))),
                st.tuples(position, st.none()),
                st.tuples(st.none(), position),
            ),
            max_size=40,
        )
    )
    space = st.sampled_from(["", " ", "\t", " \t "])
    members = [f"{'' if first is None else first}-{'' if last is None else last}" for first, last in specs]
    header = "bytes=" + ",".join(draw(space) + member + draw(space) for member in members)
    return header, specs


def model(specs: list[Spec], size: int) -> list[ByteRange] | Unsatisfiable | None:
    """The expected answer, computed byte by byte with a set: nothing in common with the interval merging."""
    if not specs:
        return None
    covered: set[int] = set()
    requested = 0
    empty_suffix = False
    for first, last in specs:
        if first is None:
            assert last is not None
            part = range(max(0, size - last), size) if last > 0 else range(0)
            empty_suffix = empty_suffix or (last > 0 and size == 0)
        elif first >= size:
            part = range(0)
        else:
            part = range(first, (size - 1 if last is None else min(last, size - 1)) + 1)
        requested += len(part)
        covered.update(part)
    if requested > MAX_OVERLAP * max(size, 1):
        return None
    if not covered:
        return None if empty_suffix else UNSATISFIABLE
    merged: list[ByteRange] = []
    for byte in sorted(covered):
        if merged and byte <= merged[-1].stop + MERGE_GAP:
            merged[-1] = ByteRange(merged[-1].start, byte + 1)
        else:
            merged.append(ByteRange(byte, byte + 1))
    return None if len(merged) > MAX_RANGES else merged


@settings(max_examples=400, deadline=None)
@given(drawn=range_headers(), size=st.integers(0, 250))
def test_parse_range_matches_a_byte_set_model(drawn: tuple[str, list[Spec]], size: int) -> None:
    header, specs = drawn
    assert parse_range(header, size) == model(specs, size)


OPTIONAL_TEXT = st.none() | st.text(max_size=40) | st.sampled_from(['"abc"', 'W/"abc"', "*", AT, BEFORE, AFTER])


@settings(max_examples=300, deadline=None)
@given(
    request_=st.builds(
        Request,
        method=st.sampled_from(["GET", "HEAD", "POST", "PUT"]),
        range=st.none() | GRAMMAR.map(lambda text: "bytes=" + text),
        if_range=OPTIONAL_TEXT,
        if_match=OPTIONAL_TEXT,
        if_none_match=OPTIONAL_TEXT,
        if_modified_since=OPTIONAL_TEXT,
        if_unmodified_since=OPTIONAL_TEXT,
    ),
    size=st.integers(0, 200),
)
def test_evaluate_always_decides(request_: Request, size: int) -> None:
    answer = evaluate(request_, Validators(etag='"abc"', last_modified=MODIFIED, size=size))
    assert answer.status in (200, 206, 304, 412, 416)
    assert (answer.status == 206) == bool(answer.ranges)
    if answer.status == 206:
        assert_well_formed(list(answer.ranges), size)
    if request_.method not in ("GET", "HEAD"):
        assert answer.status in (200, 412)  # no 304 (§13.1.2) and no range (§14.2) for other methods


# -- cost


def adjacent(count: int) -> str:
    return "bytes=" + ",".join(f"{i}-{i}" for i in range(count))


def test_thousands_of_one_byte_ranges() -> None:
    assert parse_range(adjacent(5000), 5000) == [ByteRange(0, 5000)]
    reversed_header = "bytes=" + ",".join(f"{i}-{i}" for i in reversed(range(5000)))
    assert parse_range(reversed_header, 5000) == [ByteRange(0, 5000)]
    assert parse_range(disjoint(5000), 1_000_000) is None  # far more than MAX_RANGES parts
    # One-byte ranges one byte apart: one part with the gaps filled, not 5,000 parts and not the whole file.
    spaced = "bytes=" + ",".join(f"{2 * i}-{2 * i}" for i in range(5000))
    assert parse_range(spaced, 1 << 30) == [ByteRange(0, 9999)]


def test_max_ranges_far_apart_parts_and_no_more() -> None:
    parts = [ByteRange(STRIDE * i, STRIDE * i + 1) for i in range(MAX_RANGES)]
    assert parse_range(disjoint(MAX_RANGES), 100_000) == parts
    assert parse_range(disjoint(MAX_RANGES + 1), 100_000) is None


def fastest(header: str, size: int, runs: int = 5) -> float:
    """The best of a few runs: noise from the machine only ever adds time."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        parse_range(header, size)
        best = min(best, time.perf_counter() - started)
    return best


def test_parsing_is_linear_in_the_number_of_ranges() -> None:
    # Ten times the ranges should cost about ten times as much; a quadratic step would cost a hundred times.
    small, large = fastest(adjacent(5_000), 5_000), fastest(adjacent(50_000), 50_000)
    assert large < 20 * small, f"{large=:.4f}s {small=:.4f}s"


# -- dates


@pytest.mark.parametrize("text", [AT, AT_RFC850, AT_ASCTIME, "Sun, 06 Nov 1994 08:49:37 -0000"])
def test_the_three_http_date_forms(text: str) -> None:
    # RFC 9110 §5.6.7: recipients accept IMF-fixdate, RFC 850 and asctime, all in GMT.
    assert parse_http_date(text) == datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "0",
        "-1",
        "\x00",
        "Sun, 06 Nov 1994",
        "Sun, 32 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 25:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 08:49:37 +9999",
    ],
)
def test_garbage_is_no_date(text: str) -> None:
    assert parse_http_date(text) is None


def test_http_date_format() -> None:
    assert http_date(MODIFIED) == AT


@given(st.integers(0, 253402300799))  # up to the last second of year 9999
def test_http_date_round_trips(timestamp: int) -> None:
    parsed = parse_http_date(http_date(timestamp))
    assert parsed is not None
    assert parsed.timestamp() == timestamp


@settings(max_examples=300)
@given(st.text())
def test_parse_http_date_never_raises(text: str) -> None:
    parsed = parse_http_date(text)
    assert parsed is None or parsed.tzinfo is not None  # comparable with the file's time
