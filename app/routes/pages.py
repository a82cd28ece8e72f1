"""GET / (the demo page), /static (its script and style) and /sdk (the JavaScript SDK)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
SDK_DIR = STATIC_DIR / "sdk"

SDK_HEADERS = {
    # An ES module imported by a page of another origin is fetched with CORS: allow it, the
    # file is public. Revalidate each time (ETag), so a new server's SDK is picked up.
    "Access-Control-Allow-Origin": "*",
    "Cache-Control": "no-cache",
}


async def index(request: Request) -> FileResponse:
    """The demo page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


async def sdk_module(request: Request) -> FileResponse:
    """The JavaScript SDK, one ES module (``import { Fanout } from "/sdk/fanout.js"``)."""
    return FileResponse(
        SDK_DIR / "fanout.js", media_type="text/javascript; charset=utf-8", headers=SDK_HEADERS
    )


async def sdk_types(request: Request) -> FileResponse:
    """The SDK's TypeScript declarations."""
    return FileResponse(
        SDK_DIR / "fanout.d.ts", media_type="text/plain; charset=utf-8", headers=SDK_HEADERS
    )


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET"]),
    Route("/sdk/fanout.js", sdk_module, methods=["GET", "HEAD"]),
    Route("/sdk/fanout.d.ts", sdk_types, methods=["GET", "HEAD"]),
    Mount("/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
]
