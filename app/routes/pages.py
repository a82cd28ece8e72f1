"""GET / (the demo page) and /static (its script and style)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"


async def index(request: Request) -> FileResponse:
    """The demo page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False), name="static"),
]
