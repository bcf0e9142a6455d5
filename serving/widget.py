"""The browser side: the autocomplete widget under /widget/ and a demo search page at /; beside the widget, the
InstantSearch search client (sift-instantsearch.js), its page (search.html) and the npm bundles it runs with
(vendor/, copied there by `make setup`: scripts/vendor-js.sh).

The widget is a plain ES module, so it is served as static files next to the API that answers it;
other sites load it from here too (with the API's `cors_origins` listing them). Where the API has keys, the
widget's `apiKey` option carries a public one (scopes search, suggest and events only: a page shows it to all).
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
WIDGET_PATH = "/widget"

# Fixed here rather than left to the platform's mimetypes table, which varies (application/javascript,
# or nothing at all on a bare container), and browsers refuse ES modules served with the wrong type.
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
}


class WidgetFiles(StaticFiles):
    """StaticFiles with fixed media types; clients revalidate (ETag) so a new widget is picked up."""

    def file_response(
        self, full_path: PathLike[str] | str, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = _MEDIA_TYPES.get(Path(full_path).suffix.lower())
        if media_type:
            response.headers["content-type"] = media_type
        response.headers["cache-control"] = "no-cache"
        return response


def mount_widget(api: FastAPI) -> None:
    """Serve `serving/static/` under /widget/ and the demo page at / (kept out of the OpenAPI schema)."""
    demo_html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    api.mount(WIDGET_PATH, WidgetFiles(directory=STATIC_DIR), name="widget")

    @api.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def demo_page() -> HTMLResponse:
        return HTMLResponse(demo_html)
