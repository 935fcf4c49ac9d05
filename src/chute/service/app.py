"""The reference service: the brief's use cases, done right, on the embedded SQLite dataset."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import functools
import hmac
import logging
import multiprocessing
import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import anyio.to_thread
import pydantic
from fastapi import FastAPI, Header, Path, Query, Request
from starlette.responses import Response

from chute import __version__
from chute.brokers import Broker, MemoryBroker
from chute.compression import CompressionMiddleware
from chute.digests import DigestCache
from chute.exceptions import BadRequest, Forbidden, HTTPError, NotFound, Unauthorized
from chute.feeds import LiveTopic
from chute.formats import ARROW, CSV, JSON, NDJSON, lookup, negotiate
from chute.locales import choose_csv_locale
from chute.metrics import CONTENT_TYPE, StreamMetrics, count_subscriber, exposition, release_process
from chute.openapi import add_code_samples, stream_responses
from chute.problems import problem_response
from chute.ranges import http_date
from chute.responses import EventStream, ProxyStream, RecordStream, StreamLimit
from chute.responses.bytestream import ByteStream
from chute.responses.files import FileStream, etag_of
from chute.service import page, samples
from chute.service.database import Database, open_database
from chute.service.logfeed import LOG_TOPIC, AccessLog, LogFeed
from chute.service.settings import Settings
from chute.service.work import compute_batch, lower_priority
from chute.sources.batches import ordered_map
from chute.tokens import MAX_TOKEN_LENGTH, ResumeTokens
from chute.upstreams import upstream_client

ROWS_MAX = 100_000_000
RESUME_SECRET = "resume-secret"
"""The file in the data folder holding the secret resume tokens are signed with (shared by workers, restarts)."""
EXPORT_FORMATS = (NDJSON, JSON, CSV, ARROW)
GENERATOR_BATCH = 4096
EPOCH = datetime.datetime(2023, 10, 27, 10, 0, tzinfo=datetime.UTC)

FormatName = Literal["csv", "ndjson", "jsonl", "json"]
ExportFormatName = Literal["csv", "ndjson", "jsonl", "json", "arrow"]
Rows = Annotated[int, Query(ge=0, le=ROWS_MAX, description="How many rows to stream.")]


class CSVRow(pydantic.BaseModel):
    id: int
    name: str
    value: float


class JSONObject(pydantic.BaseModel):
    id: int
    name: str
    timestamp: datetime.datetime


class JSONLine(pydantic.BaseModel):
    id: int
    name: str


class BatchResult(pydantic.BaseModel):
    id: int
    value: float


class FileInfo(pydantic.BaseModel):
    name: str
    size: int
    etag: str
    last_modified: str
    url: str


class DatasetInfo(pydantic.BaseModel):
    name: str
    columns: list[str]
    rows: int
    key: str
    url: str


def _csv_rows(rows: int) -> Iterator[list[tuple[int, str, float]]]:
    for start in range(0, rows, GENERATOR_BATCH):
        yield [(i, f"item_{i}", i * 1.5) for i in range(start, min(rows, start + GENERATOR_BATCH))]


def _json_objects(rows: int) -> Iterator[list[dict[str, Any]]]:
    second = datetime.timedelta(seconds=1)
    for start in range(0, rows, GENERATOR_BATCH):
        stop = min(rows, start + GENERATOR_BATCH)
        yield [{"id": i, "name": f"Object {i}", "timestamp": EPOCH + i * second} for i in range(start, stop)]


def _json_lines(rows: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, rows, GENERATOR_BATCH):
        yield [{"id": i, "name": f"Record {i}"} for i in range(start, min(rows, start + GENERATOR_BATCH))]


def open_broker(url: str) -> Broker:
    """The event log named by ``--broker``: ``memory`` or a Redis URL."""
    if url == "memory":
        return MemoryBroker()
    from chute.brokers.redis import RedisBroker  # the Redis client loads only when it is used

    return RedisBroker(url)


def start_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """The process pool of ``/stream-batches``, its workers starting in the background.

    forkserver, because forking the server itself (threads, an event loop) is unsafe; the fork server imports
    the work module once, so each worker is a cheap fork of it rather than a fresh interpreter importing chute.
    Workers are started now, off the event loop, so the first request does not pay a second of start-up.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["chute.service.work"])
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=lower_priority)

    def warm() -> None:
        # One job per worker, submitted together, so that none finds an idle worker to reuse.
        for job in [pool.submit(os.getpid) for _ in range(workers)]:
            with contextlib.suppress(Exception):  # a pool shut down meanwhile
                job.result()

    threading.Thread(target=warm, name="chute-pool-warm", daemon=True).start()
    return pool


def create_app(settings: Settings | None = None) -> FastAPI:
    """The reference service for ``settings`` (by default from ``CHUTE_*`` variables)."""
    settings = settings or Settings()
    allowlist = settings.upstream_allowlist()  # a bad upstream URL stops the service before it starts

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database: Database = await open_database(settings.database, settings.data, settings.rows)
        app.state.database = database
        app.state.resume_tokens = await anyio.to_thread.run_sync(ResumeTokens.from_file, settings.data / RESUME_SECRET)
        pool = start_pool(settings.batch_workers)
        app.state.pool = pool
        if settings.files is None:
            await anyio.to_thread.run_sync(samples.ensure, settings.files_folder)
        digests = DigestCache()
        app.state.digests = digests
        broker = open_broker(settings.broker)
        app.state.broker = broker
        app.state.stream_limit = StreamLimit(settings.max_streams)
        log_feed = LogFeed(broker, level=logging.getLevelName(settings.log_level.upper()))
        logging.getLogger().addHandler(log_feed)
        # One pool of upstream connections for every /stream-external request of this process.
        app.state.upstream_client = upstream_client(
            allowlist,
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_read_timeout,
        )
        try:
            yield
        finally:
            await app.state.upstream_client.aclose()
            logging.getLogger().removeHandler(log_feed)
            await log_feed.aclose()
            await broker.aclose()
            digests.close()
            await database.aclose()
            # Wait for the workers to exit: left running, they (and the forkserver) outlive the server.
            await anyio.to_thread.run_sync(functools.partial(pool.shutdown, wait=True, cancel_futures=True))
            release_process()  # with several workers, this one's streams leave the live gauges

    app = FastAPI(
        title="chute reference service",
        version=__version__,
        description="Large responses done right: CSV, JSON arrays, NDJSON and batch results, streamed.",
        lifespan=lifespan,
    )

    async def chute_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPError)
        return problem_response(exc)

    app.add_exception_handler(HTTPError, chute_error)
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI caches the schema in app.openapi_schema; the examples are added once, to that cached copy.
        if app.openapi_schema is None:
            add_code_samples(generate_openapi(), base_url=f"http://{settings.address()}")
        return generate_openapi()

    app.openapi = openapi  # type: ignore[method-assign]
    if settings.compression:
        # Innermost: the access log and the metrics count the bytes that go on the wire.
        app.add_middleware(CompressionMiddleware)
    app.add_middleware(AccessLog)
    app.add_middleware(StreamMetrics)
    app.include_router(page.router())

    def stream(source: Any, **options: Any) -> RecordStream:
        defaults = {
            "chunk_size": settings.chunk_size,
            "max_latency": settings.max_latency,
            "send_timeout": settings.send_timeout,
        }
        return RecordStream(source, **(defaults | options))

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        """Liveness: answered on the event loop, which no stream ever blocks."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["service"], response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
    async def metrics() -> Response:
        """Prometheus metrics: active streams by kind, bytes, time to first byte, durations, outcomes, SSE
        subscribers per topic; of every worker."""
        # Off the event loop: with several workers this reads every process's files.
        return Response(await anyio.to_thread.run_sync(exposition), media_type=CONTENT_TYPE)

    @app.get(
        "/stream-csv", tags=["brief"], response_class=RecordStream, responses=stream_responses(CSVRow, formats=("csv",))
    )
    async def stream_csv(rows: Rows = 1_000_000) -> RecordStream:
        """`id,name,value` rows as CSV (RFC 4180)."""
        return stream(_csv_rows(rows), format="csv", columns=("id", "name", "value"), batched=True)

    @app.get(
        "/stream-json",
        tags=["brief"],
        response_class=RecordStream,
        responses=stream_responses(JSONObject, formats=("json",)),
    )
    async def stream_json(rows: Rows = 1000) -> RecordStream:
        """A valid JSON array of `{"id", "name", "timestamp"}` objects, `[]` for no rows."""
        return stream(_json_objects(rows), format="json", batched=True)

    @app.get(
        "/stream-json-lines",
        tags=["brief"],
        response_class=RecordStream,
        responses=stream_responses(JSONLine, formats=("ndjson",)),
    )
    async def stream_json_lines(rows: Rows = 1000) -> RecordStream:
        """NDJSON of `{"id", "name"}`, as `application/x-ndjson` or `application/jsonl` as the client asks."""
        return stream(_json_lines(rows), formats=("ndjson",), batched=True)

    @app.get(
        "/stream-batches",
        tags=["brief"],
        response_class=RecordStream,
        responses=stream_responses(list[BatchResult], formats=("ndjson",)),
    )
    async def stream_batches(
        request: Request,
        num_batches: Annotated[int, Query(ge=1, le=10_000)] = 10,
        batch_size: Annotated[int, Query(ge=1, le=100_000)] = 100,
    ) -> RecordStream:
        """One JSON array of results per NDJSON line, each batch computed in a worker process, in order."""
        pool: concurrent.futures.Executor = request.app.state.pool
        jobs = ((number, batch_size) for number in range(num_batches))
        results = ordered_map(pool, compute_batch, jobs, in_flight=settings.batch_workers + 1)
        return stream(results, formats=("ndjson",), max_latency=0.0)

    @app.get("/exports", tags=["exports"])
    async def exports(request: Request) -> list[DatasetInfo]:
        """The datasets on offer: each is a table of the database, exported in the order of its key."""
        database: Database = request.app.state.database
        return [
            DatasetInfo(
                name=d.name,
                columns=list(d.columns),
                rows=d.rows,
                key=d.key,
                url=str(request.url_for("export", name=d.name)),
            )
            for d in database.datasets.values()
        ]

    @app.api_route(
        "/exports/{name}",
        methods=["GET", "HEAD"],
        name="export",
        tags=["exports"],
        response_class=RecordStream,
        responses={
            **stream_responses(dict[str, Any], formats=("ndjson", "json", "csv", "arrow")),
            400: {"description": "A resume token that this server did not issue for this dataset (problem JSON)."},
            404: {"description": "Unknown dataset (problem JSON)."},
        },
    )
    async def export(
        request: Request,
        name: Annotated[str, Path(max_length=64, description="A dataset name from /exports.")],
        format: Annotated[ExportFormatName | None, Query(description="Overrides Accept.")] = None,
        limit: Annotated[
            int | None, Query(ge=0, le=ROWS_MAX, description="At most this many rows, resumed parts included.")
        ] = None,
        resumable: Annotated[
            bool,
            Query(
                description='NDJSON only: a `{"@resume": token}` line after every chunk and `{"@end": {"records": '
                "N}}` at the end (N counts this response's records). Resume after a cut with `after=<token>`."
            ),
        ] = False,
        after: Annotated[
            str | None,
            Query(max_length=MAX_TOKEN_LENGTH, description="A resume token from an earlier response of this export."),
        ] = None,
        locale: Annotated[
            str | None,
            Query(
                max_length=64,
                description="CSV only: numbers, dates and delimiter as this locale's spreadsheets read them (`de-DE`"
                ": `1234,5;27.10.2023 10:00:00`). Default: `Accept-Language`; unknown locales give machine CSV.",
            ),
        ] = None,
        bom: Annotated[
            bool, Query(description="CSV only: start with a UTF-8 byte order mark (for spreadsheets).")
        ] = False,
    ) -> Response:
        """A table streamed through a server-side cursor in key order, as CSV, NDJSON or JSON; resumable as NDJSON.

        The response says `Chute-Resume: after` when the export can be resumed: `chute get` and
        `chute.client.export()` then resume it after every cut, with no gap and no duplicate."""
        database: Database = request.app.state.database
        found = database.datasets.get(name)
        if found is None:
            raise NotFound(f"no dataset named {name!r}; see /exports")
        resumable_key = found.key in found.columns
        start = request.app.state.resume_tokens.read(name, after) if after is not None else None
        if (resumable or start is not None) and not resumable_key:
            raise BadRequest(f"the dataset {name!r} has no key column to resume after")
        position = start.position if start is not None else 0
        remaining = None if limit is None else max(0, limit - position)
        headers = {"chute-resume": "after"} if resumable_key else {}
        # The database's own CSV, when it has one, is faster than any re-encoding; the first page only, as CSV
        # cannot carry resume points.
        chosen = (
            lookup(format)[0] if format is not None else negotiate(request.headers.get("accept"), EXPORT_FORMATS)[0]
        )
        csv_locale = choose_csv_locale(locale, request.headers.get("accept-language")) if chosen is CSV else None
        if locale is None:
            headers["vary"] = "Accept-Language"
        plain_csv = chosen is CSV and csv_locale is None and not bom
        native = database.csv(found, limit=remaining) if start is None and plain_csv else None
        if native is not None:
            return ByteStream(
                native,
                media_type="text/csv; charset=utf-8",
                filename=f"{found.name}.csv",
                headers=headers if format is not None else headers | {"vary": f"Accept, {headers['vary']}"},
                send_timeout=settings.send_timeout,
            )
        key = found.key
        tokens: ResumeTokens = request.app.state.resume_tokens

        def resume_token(record: Any, count: int) -> str:
            return tokens.issue(name, getattr(record, key), position + count)

        return stream(
            database.rows(
                found,
                after=start.key if start is not None else None,
                limit=remaining,
                typed=csv_locale is not None or chosen is ARROW,
            ),
            format=format,
            formats=[f.name for f in EXPORT_FORMATS],
            locale=csv_locale,
            bom=bom,
            columns=found.columns,
            batched=True,
            filename=found.name,
            headers=headers,
            end_record=resumable,
            resume_token=resume_token if resumable else None,
        )

    @app.get("/files/", tags=["files"])
    async def files(request: Request) -> list[FileInfo]:
        """The files on offer, with their sizes and ETags (the validators a resuming client sends back)."""
        found = await anyio.to_thread.run_sync(samples.listing, settings.files_folder)
        return [
            FileInfo(
                name=name,
                size=stat.st_size,
                etag=etag_of(stat),
                last_modified=http_date(int(stat.st_mtime)),
                url=str(request.url_for("download_file", filename=name)),
            )
            for name, stat in found
        ]

    @app.api_route(
        "/download-file/{filename:path}",
        methods=["GET", "HEAD"],
        name="download_file",
        tags=["files"],
        status_code=200,  # FastAPI reads the default status from the response class, which has none to give
        response_class=FileStream,
        responses={
            200: {"description": "The whole file.", "content": {"application/octet-stream": {}}},
            206: {"description": "The requested range(s); several as multipart/byteranges."},
            304: {"description": "Not modified (If-None-Match / If-Modified-Since)."},
            404: {"description": "No such file, or a name that would leave the files folder (problem JSON)."},
            412: {"description": "If-Match / If-Unmodified-Since failed (problem JSON)."},
            416: {"description": "No requested range is satisfiable; Content-Range gives the size."},
        },
    )
    async def download_file(request: Request, filename: str) -> FileStream:
        """A file of the files folder, with ranges, conditional requests and resumable downloads."""
        return FileStream(
            filename,
            root=settings.files_folder,
            cache_control=settings.cache_control,
            send_timeout=settings.send_timeout,
            digests=request.app.state.digests,
        )

    @app.api_route(
        "/stream-external",
        methods=["GET", "HEAD"],
        tags=["proxy"],
        status_code=200,
        response_class=ProxyStream,
        responses={
            200: {"description": "The upstream's body as received (Content-Encoding kept), or its 206/304/416."},
            404: {"description": "No upstream of that name (problem JSON), or the upstream's own 404."},
            502: {"description": "The upstream failed, answered an error or was refused before its headers."},
            504: {"description": "The upstream did not connect or answer within its timeouts (problem JSON)."},
        },
    )
    async def stream_external(
        request: Request,
        source: Annotated[str, Query(max_length=64, description="The name of an upstream in the settings.")],
    ) -> ProxyStream:
        """Relay a named upstream: Range and conditional requests forwarded, the body passed through as is. A
        failure after the headers aborts the connection; it never becomes text in the body."""
        return ProxyStream(
            allowlist[source].url,
            client=request.app.state.upstream_client,
            max_redirects=settings.upstream_max_redirects,
            send_timeout=settings.send_timeout,
        )

    @app.get(
        "/events/{topic}",
        tags=["events"],
        response_class=EventStream,
        status_code=200,
        responses={
            200: {
                "description": "Server-Sent Events: replay after Last-Event-ID, then live; `event: reset` when "
                "events were lost.",
                "content": {"text/event-stream": {"itemSchema": {"type": "string"}}},
            },
            400: {"description": "A Last-Event-ID this server never issued (problem JSON)."},
            503: {"description": "Too many live feeds; see Retry-After."},
        },
    )
    async def events(
        request: Request,
        topic: Annotated[str, Path(max_length=128, pattern=r"^[\w.-]+$")],
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> EventStream:
        """Subscribe to a topic. Reconnecting clients send `Last-Event-ID` and get what they missed first."""
        return feed(request, topic, last_event_id)

    def feed(request: Request, topic: str, last_event_id: str | None) -> EventStream:
        broker: Broker = request.app.state.broker
        broker.check_id(last_event_id)  # a malformed id is a 400 now, not a broken stream later
        return EventStream(
            count_subscriber(topic, broker.subscribe(topic, last_event_id)),
            heartbeat=settings.heartbeat,
            send_timeout=settings.send_timeout,
            limit=request.app.state.stream_limit,
            live=LiveTopic(broker, topic, last_event_id),  # caught up, it leaves the request for chute's hub
        )

    @app.get(
        "/stream-logs",
        tags=["events"],
        response_class=EventStream,
        status_code=200,
        responses={
            200: {
                "description": "The service's own log, live: `event: log` records and `event: request` lines "
                "(method, path, status, bytes, duration_ms, outcome), JSON in `data`; resumable with Last-Event-ID.",
                "content": {"text/event-stream": {"itemSchema": {"type": "object"}}},
            },
            400: {"description": "A Last-Event-ID this server never issued (problem JSON)."},
            503: {"description": "Too many live feeds; see Retry-After."},
        },
    )
    async def stream_logs(request: Request, last_event_id: Annotated[str | None, Header()] = None) -> EventStream:
        """Follow the service's structured log and finished requests (every worker's, with a shared broker)."""
        return feed(request, LOG_TOPIC, last_event_id)

    @app.post("/events/{topic}", tags=["events"], responses={401: {}, 403: {}})
    async def publish(
        request: Request,
        topic: Annotated[str, Path(max_length=128, pattern=r"^[\w.-]+$")],
        event: Annotated[str | None, Query(max_length=128, pattern=r"^[^\r\n]+$")] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, str]:
        """Publish the request body (UTF-8 text) to a topic; needs `Authorization: Bearer $CHUTE_PUBLISH_TOKEN`."""
        if authorization is None or not authorization.lower().startswith("bearer "):
            raise Unauthorized("a bearer token is required to publish")
        token = authorization[len("bearer ") :].strip()
        expected = settings.publish_token
        if expected is None or not hmac.compare_digest(token.encode(), expected.encode()):
            raise Forbidden("this token may not publish" if expected else "publishing is disabled on this server")
        if topic == LOG_TOPIC:
            raise Forbidden(f"{LOG_TOPIC} is the service's own log; it cannot be published to")
        body = await request.body()
        try:
            data = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the event data must be UTF-8 text") from None
        broker: Broker = request.app.state.broker
        return {"id": await broker.publish(topic, data, event)}

    return app
