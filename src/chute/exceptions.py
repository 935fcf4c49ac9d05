"""Every error chute raises on purpose.

The hierarchy::

    ChuteError                   base of everything below; never raised itself
    ├── BrokerError              the event log's store failed (Redis unreachable, a connection cut while a
    │                            subscriber follows a topic); a live stream is aborted, its client reconnects
    ├── ClientError              raised by :mod:`chute.client`: a download did not produce the file, or a feed
    │   │                        cannot go on
    │   ├── DownloadError        the transfer failed (an error status, a cut connection, a short body); the
    │   │                        ``.part`` file is kept when it holds bytes worth resuming from
    │   ├── FeedError            an event feed was refused (an error status, not ``text/event-stream``) or
    │   │                        failed ``max_failures`` times in a row; reconnecting would not help
    │   └── IntegrityError       the finished bytes do not match the server's ``Repr-Digest``; nothing kept
    ├── ConfigurationError       the caller built a stream wrong (bad format name, bad option); a bug, not input
    ├── EncodeError              a record could not be turned into bytes (unsupported type, wrong shape);
    │                            carries the zero-based index of the record in the stream
    ├── HTTPError                answered to the client as problem JSON (RFC 9457) with its ``status``
    │   ├── BadRequest           400: a malformed request value (a ``Last-Event-ID`` that no broker issued)
    │   ├── Unauthorized         401: credentials are required (publishing events)
    │   ├── Forbidden            403: the credentials given may not do this
    │   ├── NotAcceptable        406: no supported media type matches ``Accept``
    │   ├── NotFound             404: an unknown dataset or resource
    │   ├── BadGateway           502: a proxy's upstream failed before its headers (connection refused or cut,
    │   │   │                    a 5xx answer, too many redirects); after the headers it is a StreamAborted
    │   │   └── UpstreamRefused  502: the upstream guard refused a URL or address (an origin not allowlisted,
    │   │                        a loopback, private or link-local address); raised by :mod:`chute.upstreams`
    │   └── GatewayTimeout       504: a proxy's upstream did not connect or answer its headers in time
    └── StreamAborted            the body could not be completed after the headers were sent; the connection
        │                        is aborted so the client never mistakes a truncated body for a complete one
        └── SendTimeout          the client read nothing for longer than the send deadline and was cut

Foreign exceptions (msgspec, sqlite3, ...) are translated in the module that calls the foreign code, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ChuteError(Exception):
    """Base class of every chute error."""


class BrokerError(ChuteError):
    """The store behind an event log (Redis for :class:`~chute.brokers.RedisBroker`) could not be reached or
    failed mid-command.

    Raised by ``publish`` and by a subscription, which cannot continue without a gap once its broker lost the
    store: the HTTP layer aborts the stream, and the client reconnects with ``Last-Event-ID`` to resume. The
    Redis error is chained as ``__cause__``.
    """


class ClientError(ChuteError):
    """Base class of the errors of :mod:`chute.client`."""


class DownloadError(ClientError):
    """A download could not be completed.

    ``status`` is the HTTP status that refused it (``None`` for a transport failure or a short body);
    ``detail`` is the server's explanation (the ``detail`` or ``title`` of a problem JSON body), if any;
    ``partial`` is the ``.part`` file kept for the next attempt to resume from, ``None`` when nothing was kept.
    """

    def __init__(
        self, message: str, *, status: int | None = None, detail: str | None = None, partial: Path | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.partial = partial


class FeedError(ClientError):
    """A Server-Sent Events feed (:func:`chute.client.events`) cannot go on.

    ``status`` is the HTTP status of the answer that ended it (``None`` when the server could not be reached or
    the connection failed too often); ``detail`` is the server's explanation (the ``detail`` or ``title`` of a
    problem JSON body, or the first line of a text one), if any.
    """

    def __init__(self, message: str, *, status: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class IntegrityError(ClientError):
    """The downloaded bytes do not have the digest the server announced in ``Repr-Digest``.

    ``expected`` and ``actual`` are the two digests in ``Repr-Digest`` form (``sha-256=:<base64>:``).
    """

    def __init__(self, message: str, *, expected: str, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class ConfigurationError(ChuteError, ValueError):
    """A stream or encoder was configured with invalid arguments."""


class EncodeError(ChuteError):
    """A record could not be encoded.

    ``index`` is the zero-based position of the offending record in the stream (``None`` when unknown).
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message if index is None else f"record {index}: {message}")
        self.index = index


class HTTPError(ChuteError):
    """An error answered to the client with ``status`` and a problem JSON body."""

    status: int = 500
    title: str = "Internal Server Error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotAcceptable(HTTPError):
    """No media type the stream can produce is acceptable to the client."""

    status = 406
    title = "Not Acceptable"

    def __init__(self, detail: str, *, supported: Sequence[str]) -> None:
        super().__init__(detail, supported=list(supported))
        self.supported = tuple(supported)


class BadRequest(HTTPError):
    """A request value is malformed."""

    status = 400
    title = "Bad Request"


class Unauthorized(HTTPError):
    """Credentials are required."""

    status = 401
    title = "Unauthorized"


class Forbidden(HTTPError):
    """The credentials given may not do this."""

    status = 403
    title = "Forbidden"


class NotFound(HTTPError):
    """The requested resource does not exist."""

    status = 404
    title = "Not Found"


class BadGateway(HTTPError):
    """The upstream of a proxy failed before the response headers were sent."""

    status = 502
    title = "Bad Gateway"


class UpstreamRefused(BadGateway):
    """The upstream guard of :mod:`chute.upstreams` refused a request: its origin is not allowlisted, or its host
    resolves to an address the upstream may not reach (loopback, private, link-local...)."""


class GatewayTimeout(HTTPError):
    """The upstream of a proxy did not connect, or did not answer its headers, within its timeouts."""

    status = 504
    title = "Gateway Timeout"


class StreamAborted(ChuteError):
    """The response body failed after its headers were sent; the connection is aborted.

    ``index`` is the number of records the client was sent (or was about to be sent) before the failure.
    """

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(f"stream aborted after {index} records: {message}")
        self.index = index


class SendTimeout(StreamAborted):
    """The client stopped reading for longer than the stream's send deadline."""
