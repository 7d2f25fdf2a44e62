"""GET /dashboard (the monitoring page) and GET /dashboard/plotly.js (the charting code, from the plotly package)."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

CACHE_SECONDS = 10.0  # reloads within this share one page: the numbers come from a few grouped queries
BUNDLE_PATH = "/dashboard/plotly.js"


class PageCache:
    """The last page built per key, reused for `seconds`; one build at a time (concurrent reloads wait for it)."""

    def __init__(self, seconds: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self._pages: dict[Any, tuple[float, str]] = {}
        self._lock = asyncio.Lock()

    def fresh(self, key: Any) -> str | None:
        """The cached page for `key` when it is younger than `seconds`."""
        hit = self._pages.get(key)
        return hit[1] if hit and self.clock() - hit[0] < self.seconds else None

    async def get(self, key: Any, build: Callable[[], str]) -> str:
        """The cached page, or a new one built by `build` in a worker thread (off the event loop)."""
        if (page := self.fresh(key)) is not None:
            return page
        async with self._lock:
            if (page := self.fresh(key)) is not None:
                return page
            page = await asyncio.to_thread(build)
            self._pages = {key: (self.clock(), page)}  # keep one: the ?days= values a visitor tries are not kept
            return page


class Bundle:
    """plotly.js from the installed package, read once; gzipped once for the clients that accept it."""

    def __init__(self) -> None:
        self._plain: bytes | None = None
        self._gzip: bytes | None = None

    def body(self, gzipped: bool) -> bytes:
        """The bundle's bytes, gzipped or not."""
        if self._plain is None:
            from intelrouter.dashboard import plotly_bundle

            self._plain = plotly_bundle().encode("utf-8")
        if gzipped and self._gzip is None:
            self._gzip = gzip.compress(self._plain, compresslevel=6, mtime=0)
        return self._gzip if gzipped and self._gzip is not None else self._plain


def dashboard_router(rt: Any, cache: PageCache | None = None) -> APIRouter:
    """The dashboard routes over the app's runtime (`rt.settings`, `rt.check_key`)."""
    router = APIRouter()
    cache = cache or PageCache()
    bundle = Bundle()

    @router.get("/dashboard", response_class=HTMLResponse, responses={401: {"description": "Missing or wrong key."}})
    async def dashboard(request: Request, days: int | None = Query(None, ge=1, le=366)) -> Response:
        """The monitoring dashboard (needs the API key when one is set)."""
        rt.check_key(request.headers.get("authorization"))
        import plotly

        from intelrouter.dashboard import collect, render

        # the URL names the plotly version, so the year-long cache of the bundle ends with an upgrade
        src = f"{request.scope.get('root_path', '')}{BUNDLE_PATH}?v={plotly.__version__}"
        page = await cache.get(days, lambda: render(collect(rt.settings, days), plotly_js=src))
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @router.get(BUNDLE_PATH, include_in_schema=False)
    async def plotly_js(request: Request) -> Response:
        """plotly.js, as shipped in the installed plotly package (public code: no key needed)."""
        gzipped = "gzip" in request.headers.get("accept-encoding", "")
        body = await asyncio.to_thread(bundle.body, gzipped)
        headers = {"Cache-Control": "public, max-age=31536000, immutable", "Vary": "Accept-Encoding"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)

    return router
