"""Event logs with replay: publish to a topic, subscribe from a ``Last-Event-ID`` and follow live."""

from chute.brokers.base import RESET, Broker, Message, parse_sequence
from chute.brokers.memory import MemoryBroker

__all__ = ["RESET", "Broker", "MemoryBroker", "Message", "parse_sequence"]
