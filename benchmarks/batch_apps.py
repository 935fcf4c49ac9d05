"""The brief's ``/stream-batches``, verbatim in behaviour: a synchronous generator of CPU work in a
``StreamingResponse`` (Starlette drains it in its thread pool, one batch after the other, under the GIL).

Run as ``python -m benchmarks.batch_apps PORT``: uvicorn with uvloop and httptools, one worker, loopback. chute's
contender is the reference service itself (``chute serve``), whose ``/stream-batches`` computes in a process pool.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from benchmarks.apps import run_uvicorn


def process_data_in_batches(num_batches: int, batch_size: int) -> Iterator[str]:
    for _ in range(num_batches):
        batch_results = []
        for _ in range(batch_size):
            result = {"id": random.randint(1000, 9999), "value": random.random() * 100}
            batch_results.append(result)
        yield json.dumps(batch_results)


def seed_app() -> FastAPI:
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stream-batches")
    async def stream_batches(num_batches: int = 10, batch_size: int = 100) -> StreamingResponse:
        return StreamingResponse(process_data_in_batches(num_batches, batch_size), media_type="application/json")

    return app


if __name__ == "__main__":
    run_uvicorn(seed_app(), int(sys.argv[1]))
