"""chute: large HTTP responses from Python, done right.

Fast (batched encoding, coalesced chunks), memory-bounded (backpressure to the source), prompt to stop when the
client leaves, and never presenting a truncated response as complete.
"""

from chute.__about__ import __version__
from chute.chunker import Chunker
from chute.encoders import CSVEncoder, Encoder, JSONArrayEncoder, NDJSONEncoder
from chute.exceptions import (
    BadGateway,
    BadRequest,
    BrokerError,
    ChuteError,
    ClientError,
    ConfigurationError,
    DownloadError,
    EncodeError,
    FeedError,
    Forbidden,
    GatewayTimeout,
    HTTPError,
    IntegrityError,
    NotAcceptable,
    NotFound,
    SendTimeout,
    StreamAborted,
    Unauthorized,
    UpstreamRefused,
)
from chute.openapi import stream_responses
from chute.responses import EventStream, FileStream, ProxyStream, RecordStream, StreamLimit

__all__ = [
    "BadGateway",
    "BadRequest",
    "BrokerError",
    "CSVEncoder",
    "Chunker",
    "ChuteError",
    "ClientError",
    "ConfigurationError",
    "DownloadError",
    "EncodeError",
    "Encoder",
    "EventStream",
    "FeedError",
    "FileStream",
    "Forbidden",
    "GatewayTimeout",
    "HTTPError",
    "IntegrityError",
    "JSONArrayEncoder",
    "NDJSONEncoder",
    "NotAcceptable",
    "NotFound",
    "ProxyStream",
    "RecordStream",
    "SendTimeout",
    "StreamAborted",
    "StreamLimit",
    "Unauthorized",
    "UpstreamRefused",
    "__version__",
    "stream_responses",
]
