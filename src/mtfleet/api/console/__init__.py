"""The console in the browser: static files (a page, a JS module, a stylesheet) that call only the
public /v1 API with the operator's token, so the page shows nothing the API does not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse

FILES = Path(__file__).parent
# No inline script or style, nothing from another origin; the token never leaves in a cookie.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


# path -> (file, media type): only these are served, never this module
ROUTES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}


def mount_console(app: FastAPI) -> None:
    """Serves the console's files at `/` as plain GET routes (not a mount over every path), so
    another method on an API route still answers 405 and an unknown path 404, as without it."""
    for path, (name, media_type) in ROUTES.items():
        app.add_api_route(
            path, _file_route(FILES / name, media_type), methods=["GET"], include_in_schema=False
        )


def _file_route(file: Path, media_type: str) -> Callable[[], FileResponse]:
    def serve() -> FileResponse:
        return FileResponse(file, media_type=media_type, headers=HEADERS)

    return serve
