"""Pure, synchronous encoders: batches of records (or SSE events) in, bytes out. No I/O, no event loop."""

from chute.encoders.base import Encoder
from chute.encoders.csv import CSVEncoder
from chute.encoders.json_array import JSONArrayEncoder
from chute.encoders.ndjson import NDJSONEncoder
from chute.encoders.sse import Event, json_event

__all__ = ["CSVEncoder", "Encoder", "Event", "JSONArrayEncoder", "NDJSONEncoder", "json_event"]
