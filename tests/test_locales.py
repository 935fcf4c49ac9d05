"""Locale-aware CSV: CLDR conventions through Babel, Accept-Language, and the machine-CSV default."""

from __future__ import annotations

import csv
import datetime
import io
from decimal import Decimal

import pytest

from chute.encoders import CSVEncoder
from chute.locales import choose_csv_locale, csv_locale, parse_accept_language

WHEN = datetime.datetime(2023, 10, 27, 12, 5, 9, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))


@pytest.mark.parametrize(
    ("tag", "decimal", "delimiter", "date", "content_language"),
    [
        ("de-DE", ",", ";", "27.10.2023", "de-DE"),
        ("de", ",", ";", "27.10.2023", "de"),
        ("en-US", ".", ",", "10/27/2023", "en-US"),
        ("en_GB", ".", ",", "27/10/2023", "en-GB"),
        ("fr-FR", ",", ";", "27/10/2023", "fr-FR"),
        ("ja-JP", ".", ",", "2023/10/27", "ja-JP"),
        ("ar-EG", ".", ",", "27/10/2023", "ar-EG"),  # ASCII digits, no bidirectional marks
    ],
)
def test_cldr_conventions(tag: str, decimal: str, delimiter: str, date: str, content_language: str) -> None:
    found = csv_locale(tag)
    assert found is not None
    assert (found.decimal, found.delimiter, found.tag) == (decimal, delimiter, content_language)
    assert found.cell(WHEN.date()) == date
    assert found.cell(WHEN) == f"{date} 10:05:09"  # aware datetimes in UTC, 24-hour clock
    assert found.cell(1234.5) in (1234.5, f"1234{decimal}5")
    assert found.cell(Decimal("-0.10")) == f"-0{decimal}10"
    assert found.cell("1.5") == "1.5"  # text stays text
    assert found.cell(7) == 7


@pytest.mark.parametrize("tag", ["xx-YY", "", "../../etc/passwd", "de DE", "a" * 200, "zz", "i-klingon"])
def test_unknown_or_malformed_locales_give_the_default(tag: str) -> None:
    assert csv_locale(tag) is None
    assert choose_csv_locale(tag, "de-DE") is None  # an explicit ?locale= wins, even when it falls back


def test_accept_language_is_ranked_by_q_then_order() -> None:
    assert parse_accept_language("fr;q=0.5, de-CH, en;q=0.9, *;q=0.1, es;q=0") == ["de-CH", "en", "fr"]
    assert parse_accept_language("da, en-gb;q=0.8, en;q=0.7") == ["da", "en-gb", "en"]
    assert parse_accept_language(";;,q=,") == []
    chosen = choose_csv_locale(None, "xx;q=1, pt-BR;q=0.8, en;q=0.5")
    assert chosen is not None
    assert chosen.tag == "pt-BR"
    assert choose_csv_locale(None, None) is None
    assert choose_csv_locale(None, "tlh, *") is None


def test_a_localized_csv_reads_back_with_its_delimiter() -> None:
    de = csv_locale("de-DE")
    assert de is not None
    encoder = CSVEncoder(("id", "price", "note", "at"), delimiter=de.delimiter, locale=de)
    rows = [(1, Decimal("12.50"), "a;b", WHEN), (2, 0.25, 'say "hi"', WHEN.date())]
    body = encoder.encode(rows) + encoder.finish()
    assert list(csv.reader(io.StringIO(body.decode()), delimiter=";")) == [
        ["id", "price", "note", "at"],
        ["1", "12,50", "a;b", "27.10.2023 10:05:09"],
        ["2", "0,25", 'say "hi"', "27.10.2023"],
    ]
