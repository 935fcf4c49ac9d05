"""The one settings object of the reference service: flags of ``chute serve`` over ``CHUTE_*`` variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chute.chunker import DEFAULT_MAX_LATENCY, DEFAULT_TARGET
from chute.upstreams import Allowlist, Upstream

SELF = "{self}"
"""Stands for the service's own address in an upstream URL (``127.0.0.1:8000`` by default)."""
DEFAULT_UPSTREAMS = {
    "self-csv": Upstream(f"http://{SELF}/stream-csv?rows=100000", allow_private=True),
    "self-file": Upstream(f"http://{SELF}/download-file/big-1GiB.bin", allow_private=True),
}
"""Upstreams that work offline: the service's own streams, through the proxy."""


class Settings(BaseSettings):
    """Every knob of the reference service; ``CHUTE_PORT=9000`` sets ``port``, and so on."""

    model_config = SettingsConfigDict(env_prefix="CHUTE_", extra="ignore")

    server: Literal["uvicorn", "granian"] = Field(
        "uvicorn", description="uvicorn (uvloop, httptools) or granian (sends whole files itself: pathsend)."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data: Path = Field(Path("data"), description="Folder of the embedded SQLite dataset, created on first start.")
    files: Path | None = Field(
        None, description="Folder served by /download-file; default: <data>/files, created with sample files."
    )
    rows: int = Field(1_000_000, ge=0, le=100_000_000, description="Rows of the generated `orders` table.")
    database: str | None = Field(
        None,
        pattern=r"^postgres(ql)?://\S+$",
        description="PostgreSQL URL to export from instead of the embedded SQLite dataset (fill it with "
        "`chute load-data --database URL`).",
    )
    chunk_size: int = Field(DEFAULT_TARGET, ge=1024, le=16 * 1024 * 1024)
    max_latency: float = Field(DEFAULT_MAX_LATENCY, gt=0, le=10)
    send_timeout: float = Field(60.0, gt=0, description="Seconds a client may read nothing before it is cut.")
    batch_workers: int = Field(2, ge=1, le=64, description="Processes that compute /stream-batches.")
    cache_control: str | None = Field("public, max-age=60", description="Cache-Control of file downloads.")
    publish_token: str | None = Field(
        None, description="Bearer token for POST /events/{topic}; publishing is refused (403) without one."
    )
    heartbeat: float = Field(15.0, gt=0, le=3600, description="Seconds of silence before a feed sends a comment.")
    max_streams: int = Field(10_000, ge=1, description="Live feeds at once per process; 503 past it.")
    broker: str = Field(
        "memory",
        pattern=r"^(memory|rediss?://\S+)$",
        description="Event log of /events and /stream-logs: `memory` (one process) or a redis:// URL (shared).",
    )
    workers: int = Field(1, ge=1, le=64, description="Server processes; more than one needs a shared broker.")
    shutdown_grace: float = Field(
        5.0, ge=0, le=600, description="Seconds open responses get to finish when the server stops."
    )
    log_level: str = "info"
    compression: bool = Field(
        True,
        description="Compress responses by Accept-Encoding (zstd, br, gzip; see chute.compression): bulk exports in "
        "large blocks, live feeds never; already-encoded bodies, 206s and binary types are left alone.",
    )
    upstreams: dict[str, Upstream] = Field(
        default_factory=lambda: dict(DEFAULT_UPSTREAMS),
        description="Named upstreams of /stream-external, as JSON: "
        '{"name": {"url": "https://example.com/data.bin", "allow_private": false}}. Only their origins are reached; '
        "loopback and private addresses need allow_private. `{self}` in a URL is this service's own address.",
    )
    upstream_connect_timeout: float = Field(10.0, gt=0, le=300, description="Seconds to connect to an upstream.")
    upstream_read_timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds an upstream may send nothing: 504 before its headers, cut after."
    )
    upstream_max_redirects: int = Field(5, ge=0, le=20, description="Redirects an upstream may answer in a row.")

    @model_validator(mode="after")
    def _workers_share_a_broker(self) -> Settings:
        if self.workers > 1 and self.broker == "memory":
            raise ValueError(
                "several workers need a shared event log: the memory broker lives in one process "
                "(use --broker redis://127.0.0.1:6379/0)"
            )
        return self

    @property
    def files_folder(self) -> Path:
        return self.files if self.files is not None else self.data / "files"

    def address(self) -> str:
        """``host:port`` this service answers on locally (a wildcard bind address becomes the loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def upstream_allowlist(self) -> Allowlist:
        """The named upstreams, ``{self}`` replaced by the address this service answers on."""
        address = self.address()
        return Allowlist(
            {
                name: Upstream(upstream.url.replace(SELF, address), allow_private=upstream.allow_private)
                for name, upstream in self.upstreams.items()
            }
        )

    def environment(self) -> dict[str, str]:
        """These settings as ``CHUTE_*`` variables, for server processes that build the app themselves."""
        return {
            f"CHUTE_{name.upper()}": json.dumps(value) if isinstance(value, dict | list) else str(value)
            for name, value in self.model_dump(mode="json").items()
            if value is not None
        }
