"""The web console: static files from `web/`, served by the API's own process.

`GET /` answers `web/index.html`; `/web/…` serves its script and style sheet.
The console is plain HTML, JavaScript and CSS (no build step, nothing from a
CDN) and talks to the same `/v1` API as any client, with the API key the user
types in (kept in the tab's sessionStorage). Its panels: agents, the chat
(streamed), the context window, memory blocks, archival and recall search,
the kernel's process table, and the calls of irreversible tools waiting for
the user's approval (approve or deny, with a reason). Nothing here needs a
key: the files hold no user's data.

Left out: a login session (cookies), server-side rendering, and serving the
console under a path prefix other than `/`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).with_name("web")


def mount_console(app: FastAPI) -> None:
    """Serve the console at `/` and its assets under `/web`."""

    @app.get("/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(WEB / "index.html", headers={"cache-control": "no-cache"})

    app.mount("/web", StaticFiles(directory=WEB), name="web")
