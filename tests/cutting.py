"""A TCP relay that cuts its first connections part-way: a network that breaks, for resume tests."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttingProxy:
    """Forwards TCP to ``upstream``; the first ``cuts`` connections are closed after ``after`` bytes back."""

    def __init__(self, upstream_port: int, cuts: int, after: int) -> None:
        self.upstream_port = upstream_port
        self.cuts = cuts
        self.after = after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            limit = self.after * self.connections if self.connections <= self.cuts else None
            threading.Thread(target=self._relay, args=(client, limit), daemon=True).start()

    def _relay(self, client: socket.socket, limit: int | None) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
        self._pipe(upstream, client, limit)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(4096 if limit is None else min(4096, limit - sent) or 1):
                sink.sendall(data)
                sent += len(data)
                if limit is not None and sent >= limit:
                    break
        except OSError:
            pass
        for end in (source, sink):  # shutdown, not only close: it wakes the other direction's blocked recv
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self.listener.close()
