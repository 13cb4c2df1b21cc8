"""The console in the browser: static files (a page, a JS module, a stylesheet) that call only the
public /v1 API with the operator's token, so the page shows nothing the API does not."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

FILES = Path(__file__).parent
# what the page is made of; "." is `/`, answered with index.html (this module is not served)
SERVED = frozenset({".", "index.html", "console.js", "console.css"})
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


class ConsoleFiles(StaticFiles):
    """The console's files, each answered with the page's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in SERVED:
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def mount_console(app: FastAPI) -> None:
    """Serves the console at `/`; mounted last, so every route added before it still answers."""
    app.mount("/", ConsoleFiles(directory=FILES, html=True), name="console")
