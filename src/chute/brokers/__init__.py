"""Event logs with replay: publish to a topic, subscribe from a ``Last-Event-ID`` and follow live.

:class:`MemoryBroker` keeps the log in the process (one worker); :class:`RedisBroker` keeps it in Redis streams,
shared by every worker and host that uses the same Redis.
"""

from chute.brokers.base import RESET, Broker, Message, parse_sequence
from chute.brokers.memory import MemoryBroker
from chute.brokers.redis import RedisBroker, parse_stream_id

__all__ = ["RESET", "Broker", "MemoryBroker", "Message", "RedisBroker", "parse_sequence", "parse_stream_id"]
