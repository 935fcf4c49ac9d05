import pytest

from chute import (
    ChuteError,
    ConfigurationError,
    EncodeError,
    HTTPError,
    NotAcceptable,
    NotFound,
    SendTimeout,
    StreamAborted,
)


@pytest.mark.parametrize(
    ("error", "base"),
    [
        (ConfigurationError, ChuteError),
        (ConfigurationError, ValueError),
        (EncodeError, ChuteError),
        (HTTPError, ChuteError),
        (NotAcceptable, HTTPError),
        (NotFound, HTTPError),
        (StreamAborted, ChuteError),
        (SendTimeout, StreamAborted),
    ],
)
def test_hierarchy(error: type[Exception], base: type[Exception]) -> None:
    assert issubclass(error, base)


def test_encode_error_names_its_record() -> None:
    assert str(EncodeError("bad value", index=7)) == "record 7: bad value"
    assert EncodeError("bad value", index=7).index == 7
    assert str(EncodeError("bad value")) == "bad value"
    assert EncodeError("bad value").index is None


def test_http_errors_carry_status_title_and_extra() -> None:
    error = NotAcceptable("nothing fits", supported=["text/csv"])
    assert (error.status, error.title, error.detail) == (406, "Not Acceptable", "nothing fits")
    assert error.supported == ("text/csv",)
    assert error.extra == {"supported": ["text/csv"]}
    assert (NotFound("no such dataset").status, HTTPError("x").status) == (404, 500)


def test_stream_aborted_counts_records() -> None:
    error = SendTimeout("client stalled", index=12)
    assert error.index == 12
    assert str(error) == "stream aborted after 12 records: client stalled"
