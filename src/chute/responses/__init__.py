"""ASGI responses: one per kind of stream."""

from chute.responses.records import RecordStream

__all__ = ["RecordStream"]
