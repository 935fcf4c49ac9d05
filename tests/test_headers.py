import re
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chute.headers import content_disposition, weighted

QUOTED = re.compile(r'^(attachment|inline); filename="((?:[^"\\]|\\.)*)"(?:; filename\*=UTF-8\'\'([^\s;"]+))?$')


def test_ascii_name() -> None:
    assert content_disposition("orders.csv") == 'attachment; filename="orders.csv"'


def test_inline() -> None:
    assert content_disposition("a.json", disposition="inline") == 'inline; filename="a.json"'


def test_non_ascii_name_gets_an_rfc_8187_parameter() -> None:
    assert content_disposition("données.csv") == (
        "attachment; filename=\"donnees.csv\"; filename*=UTF-8''donn%C3%A9es.csv"
    )
    assert content_disposition("数据") == "attachment; filename=\"download\"; filename*=UTF-8''%E6%95%B0%E6%8D%AE"


def test_quotes_are_escaped_in_the_fallback() -> None:
    # An ASCII name needs no filename*: the escaped fallback already carries it exactly.
    assert content_disposition('say "hi".csv') == 'attachment; filename="say \\"hi\\".csv"'
    # A full-width quotation mark decomposes to '"', which must not end the quoted string either.
    assert content_disposition("a\uff02.csv").startswith('attachment; filename="a\\".csv"; filename*=')


@pytest.mark.parametrize("separator", ["\uff0f", "\uff3c", "\ufe68"])
def test_separators_from_decomposition_do_not_reach_the_fallback(separator: str) -> None:
    name = separator.join(["..", "..", "etc", "passwd"])
    assert content_disposition(name).startswith("attachment; filename=\".._.._etc_passwd\"; filename*=UTF-8''..%EF")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/path/report.csv", "report.csv"),
        ("..\\..\\Windows\\boot.ini", "boot.ini"),
        ("C:\\Users\\me\\x.csv", "x.csv"),
        ("dir/", "download"),
        ("", "download"),
        ("\r\n", "download"),
    ],
)
def test_directories_are_stripped(name: str, expected: str) -> None:
    assert content_disposition(name) == f'attachment; filename="{expected}"'


def test_control_characters_are_removed() -> None:
    assert content_disposition("a\r\nSet-Cookie: x=1\x00\x7f.csv") == 'attachment; filename="aSet-Cookie: x=1.csv"'


@given(name=st.text())
def test_any_name_gives_a_safe_well_formed_header(name: str) -> None:
    value = content_disposition(name)
    assert value.isascii()
    assert not re.search(r"[\x00-\x1f\x7f]", value)
    match = QUOTED.match(value)
    assert match is not None, value
    fallback = re.sub(r"\\(.)", r"\1", match.group(2))
    assert fallback
    assert "/" not in fallback
    assert "\\" not in fallback
    if match.group(3) is not None:
        exact = unquote(match.group(3))
        assert exact
        assert "/" not in exact
        assert "\\" not in exact
        assert not re.search(r"[\x00-\x1f\x7f]", exact)
        # The exact name is the end of the given path, less its control characters.
        assert re.sub(r"[\x00-\x1f\x7f]", "", name.replace("\\", "/")).endswith(exact)
    else:
        assert fallback == "download" or re.sub(r"[\x00-\x1f\x7f]", "", name).endswith(fallback)


def test_weighted_lists_keep_order_and_skip_bad_weights() -> None:
    header = "gzip;q=0.5, br , zstd;q=2, x;q=abc, identity;Q=0 ,de-CH;level=1;q=0.9"
    assert list(weighted(header)) == [("gzip", 0.5), ("br", 1.0), ("identity", 0.0), ("de-CH", 0.9)]
