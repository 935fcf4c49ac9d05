"""SHA-256 digests of files for ``Repr-Digest`` (RFC 9530), computed once per file version, off the loop.

Hashing a large file takes a while (about 1 s per GiB), so a digest is never computed while a client waits:
the first request for a version starts the computation in a single background thread and goes out without the
header; later requests carry it. Versions are keyed by strong ETag, so a changed file is hashed afresh.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import hashlib
import os
import threading
from pathlib import Path

READ_SIZE = 1024 * 1024


def sha256_of(path: Path) -> str:
    """``sha-256=:<base64>:``, the structured-field form of ``Repr-Digest``."""
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as file:
        while block := file.read(READ_SIZE):
            digest.update(block)  # hashlib releases the GIL for large blocks: the event loop keeps running
    return f"sha-256=:{base64.b64encode(digest.digest()).decode('ascii')}:"


class DigestCache:
    """Digests by ETag, at most ``size`` of them; :meth:`lookup` never blocks."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._known: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chute-digest")

    def lookup(self, path: Path, etag: str) -> str | None:
        """The digest of ``path`` at version ``etag`` if known; otherwise start computing it and return None."""
        with self._lock:
            if etag in self._known:
                self._known.move_to_end(etag)
                return self._known[etag]
            if etag not in self._pending:
                self._pending.add(etag)
                self._pool.submit(self._compute, path, etag)
        return None

    def _compute(self, path: Path, etag: str) -> None:
        try:
            before = os.stat(path)
            value = sha256_of(path)
            after = os.stat(path)
        except OSError:
            value = None
        else:
            if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
                value = None  # changed while hashed: the digest would describe neither version
        with self._lock:
            self._pending.discard(etag)
            if value is not None:
                self._known[etag] = value
                if len(self._known) > self._size:
                    self._known.popitem(last=False)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
