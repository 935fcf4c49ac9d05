"""The service's web page: plain HTML, CSS and JavaScript files of the package, no build step.

The files are read once, when the router is made, and served from memory with a strong ETag and
``Cache-Control: no-cache`` (browsers revalidate, and get a 304 while the package is unchanged).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Literal

from fastapi import APIRouter, Header
from starlette.responses import Response

from chute.ranges import none_match

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}
# The page asks for nothing but its own origin; scripts and styles only from its files.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def router() -> APIRouter:
    """``GET /`` (the page) and ``GET /page/{asset}`` (its script and style)."""
    folder = resources.files(__name__)
    bodies = {name: (folder / name).read_bytes() for name in ASSETS}
    etags = {name: f'"{hashlib.sha256(body).hexdigest()[:32]}"' for name, body in bodies.items()}
    routes = APIRouter(tags=["page"])

    def answer(name: str, if_none_match: str | None) -> Response:
        headers = {
            "etag": etags[name],
            "cache-control": "no-cache",
            "x-content-type-options": "nosniff",
            "content-security-policy": POLICY,
        }
        if if_none_match is not None and none_match(if_none_match, etags[name]):
            return Response(status_code=304, headers=headers)
        return Response(bodies[name], media_type=ASSETS[name], headers=headers)

    @routes.api_route(
        "/", methods=["GET", "HEAD"], response_class=Response, responses={200: {"content": {"text/html": {}}}}
    )
    async def page(if_none_match: str | None = Header(None)) -> Response:
        """A page that shows the streams at work: an export, the live log, downloads and the metrics."""
        return answer("index.html", if_none_match)

    @routes.get("/page/{asset}", response_class=Response, include_in_schema=False)
    async def asset(asset: Literal["page.js", "page.css"], if_none_match: str | None = Header(None)) -> Response:
        return answer(asset, if_none_match)

    return routes
