"""The client side: resumable downloads of what a chute server (or any HTTP server) offers, and Server-Sent
Events feeds followed across reconnections."""

from chute.client.downloads import DownloadResult, download, filename_from, parse_repr_digest, safe_filename
from chute.client.events import EventStreamParser, ReceivedEvent, events, reconnect_delay
from chute.client.exports import ExportResult, export

__all__ = [
    "DownloadResult",
    "EventStreamParser",
    "ExportResult",
    "ReceivedEvent",
    "download",
    "events",
    "export",
    "filename_from",
    "parse_repr_digest",
    "reconnect_delay",
    "safe_filename",
]
