"""ASGI responses: one per kind of stream."""

from chute.responses.events import EventStream, StreamLimit
from chute.responses.files import FileStream
from chute.responses.proxy import ProxyStream
from chute.responses.records import RecordStream

__all__ = ["EventStream", "FileStream", "ProxyStream", "RecordStream", "StreamLimit"]
