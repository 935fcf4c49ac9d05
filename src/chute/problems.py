"""Problem details (RFC 9457): how chute answers a request it will not or cannot serve."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from chute.exceptions import HTTPError

PROBLEM_JSON = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def problem_response(exc: HTTPError) -> JSONResponse:
    """The problem JSON response for a chute :class:`~chute.exceptions.HTTPError`."""
    return problem(exc.status, exc.title, exc.detail, **exc.extra)
