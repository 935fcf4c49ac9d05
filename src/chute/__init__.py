"""chute: large HTTP responses from Python, done right.

Fast (batched encoding, coalesced chunks), memory-bounded (backpressure to the source), prompt to stop when the
client leaves, and never presenting a truncated response as complete.
"""

from chute.__about__ import __version__
from chute.chunker import Chunker
from chute.encoders import CSVEncoder, Encoder, JSONArrayEncoder, NDJSONEncoder
from chute.exceptions import (
    BadRequest,
    BrokerError,
    ChuteError,
    ClientError,
    ConfigurationError,
    DownloadError,
    EncodeError,
    FeedError,
    Forbidden,
    HTTPError,
    IntegrityError,
    NotAcceptable,
    NotFound,
    SendTimeout,
    StreamAborted,
    Unauthorized,
)
from chute.openapi import stream_responses
from chute.responses import EventStream, FileStream, RecordStream, StreamLimit

__all__ = [
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
    "HTTPError",
    "IntegrityError",
    "JSONArrayEncoder",
    "NDJSONEncoder",
    "NotAcceptable",
    "NotFound",
    "RecordStream",
    "SendTimeout",
    "StreamAborted",
    "StreamLimit",
    "Unauthorized",
    "__version__",
    "stream_responses",
]
