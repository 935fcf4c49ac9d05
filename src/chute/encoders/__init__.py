"""Pure, synchronous encoders: batches of records in, bytes out. No I/O, no event loop."""

from chute.encoders.base import Encoder
from chute.encoders.csv import CSVEncoder
from chute.encoders.json_array import JSONArrayEncoder
from chute.encoders.ndjson import NDJSONEncoder

__all__ = ["CSVEncoder", "Encoder", "JSONArrayEncoder", "NDJSONEncoder"]
