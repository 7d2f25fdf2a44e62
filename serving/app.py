"""The router service: FastAPI endpoints over the library (route, feedback, override, outcome, health, metrics)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from intelrouter import groundtruth, store
from intelrouter.capture import query_row, record_outcomes
from intelrouter.config import Settings, load_settings
from intelrouter.errors import (
    InputError,
    IntelRouterError,
    NoActiveModelError,
    NotFoundError,
    RegistryError,
    StoreError,
)
from intelrouter.logwriter import QueryLogWriter
from intelrouter.names import STAGING
from intelrouter.traffic import choose_variant, route_target
from serving.batcher import MicroBatcher
from serving.dashboard import dashboard_router
from serving.metrics import RouterMetrics
from serving.schemas import (
    OUTCOME_MAX_BODY,
    BodyError,
    ErrorResponse,
    LabelRequest,
    LabelResponse,
    OutcomeResponse,
    RouteRequest,
    RouteResponse,
    body_schema,
    check_content_type,
    outcome_body_schema,
    parse_body,
    parse_outcomes,
    read_body,
    read_raw,
    too_large,
)
from serving.state import ModelHolder

log = logging.getLogger("intelrouter.serving")

ROUTE_PATHS = ("/route", "/api/query", "/nlu/classify")  # /nlu/classify: seed 004's NLU clients
ERRORS = {s: {"model": ErrorResponse} for s in (400, 401, 404, 413, 415, 422, 503)}
Answer = tuple[int, bytes, dict[str, str] | None]


class AuthError(IntelRouterError):
    """Missing or wrong API key."""


def status_of(exc: Exception) -> int:
    """The HTTP status for a library error."""
    if isinstance(exc, BodyError):
        return exc.status
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, NoActiveModelError | StoreError | RegistryError):
        return 503
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, InputError):
        return 422
    return 400


class QueryIds:
    """Random (version 4) UUID strings, made 256 at a time from one os.urandom call (slow on some VMs)."""

    def __init__(self) -> None:
        self._ids: list[str] = []

    def __call__(self) -> str:
        """A new query id (called from the event loop only)."""
        if not self._ids:
            raw = bytearray(os.urandom(16 * 256))
            for i in range(0, len(raw), 16):  # what uuid.UUID(bytes=..., version=4) sets: version and variant bits
                raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40
                raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80
            hexes = raw.hex()
            self._ids = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
                         for h in (hexes[i : i + 32] for i in range(0, len(hexes), 32))]
        return self._ids.pop()


class Runtime:
    """What the endpoints share: the models, the batcher, the log writer and the metrics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.holder = ModelHolder(settings)
        self.writer = QueryLogWriter(settings)
        self.batcher = MicroBatcher()
        self.metrics = RouterMetrics(self.state)
        self.new_id = QueryIds()
        self.max_body = settings.max_text_length * 6 + 4096  # worst case: every character JSON-escaped

    def state(self) -> dict[str, Any]:
        """Counters of the holder and the writer, for /metrics."""
        snap, h = self.holder.snapshot, self.holder.stats
        return {**self.writer.stats(), "poll_failures": h.poll_failures, "loads": h.loads,
                "load_failures": h.load_failures, "canary_share": snap.share, "versions": snap.versions()}

    def check_key(self, authorization: str | None) -> None:
        """With an API key configured, require `Authorization: Bearer <key>`."""
        key = self.settings.api_key
        if not key:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
            raise AuthError("missing or wrong API key: send Authorization: Bearer <INTELROUTER_API_KEY>")

    def error(self, exc: Exception) -> Answer:
        """The JSON error answer for an exception, counted in the metrics."""
        if isinstance(exc, IntelRouterError):
            status, message = status_of(exc), str(exc)
        else:
            status, message = 500, f"internal error ({type(exc).__name__}); see the server log"
            log.error("unexpected error while routing", exc_info=exc)
        self.metrics.rejected.labels(str(status)).inc()
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return status, orjson.dumps({"detail": message}), headers

    async def route(self, raw: bytes, authorization: str | None) -> Answer:
        """Route one query (the body of POST /route): predict, answer, and queue its log row."""
        started = time.perf_counter()
        settings = self.settings
        try:
            if settings.require_key_for_route:
                self.check_key(authorization)
            body = parse_body(raw, RouteRequest)
            text = store.check_text(body.text, settings.max_text_length, where="body")
            snap = self.holder.snapshot
            if snap.production is None:
                raise NoActiveModelError()
            query_id = self.new_id()
            user = body.user_id or body.phone_number
            variant = choose_variant(snap.share, user, body.session_id, query_id, snap.staging is not None)
            slot = snap.staging if variant == STAGING and snap.staging else snap.production
            pred = await self.batcher.predict(slot.router, text)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a JSON answer
            return self.error(exc)
        label, top, confidence, uncertain = str(pred.label), str(pred.top_label), float(pred.confidence), bool(
            pred.uncertain)
        seconds = time.perf_counter() - started
        salt = settings.hash_salt
        self.writer.submit(query_row(
            query_id, store.utcnow(), text, store.hash_identifier(user, salt),
            store.hash_identifier(body.session_id, salt), body.language, label, top, confidence, uncertain,
            settings.router_provider, slot.version, variant, round(seconds * 1000, 3),
        ))
        self.metrics.observe(variant, label, uncertain, seconds)
        return 200, orjson.dumps({
            "query_id": query_id, "label": label, "confidence": confidence, "uncertain": uncertain,
            "top_label": top, "route": route_target(label, uncertain, settings.routes, settings.fallback_route),
            "model_version": slot.version, "variant": variant,
        }), None

    async def route_asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /route as a bare ASGI handler: the hot path skips the framework's per-request machinery."""
        ctype = auth = None
        length = 0
        for name, value in scope["headers"]:
            if name == b"content-type":
                ctype = value.decode("latin-1")
            elif name == b"authorization":
                auth = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit():
                length = int(value)
        try:
            check_content_type(ctype)
            if length > self.max_body:
                raise too_large(self.max_body)
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    raise too_large(self.max_body)
                chunks.append(chunk)
                more = message.get("more_body", False)
        except BodyError as exc:
            status, payload, headers = self.error(exc)
        else:
            status, payload, headers = await self.route(b"".join(chunks), auth)
        raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})


class RouterAPI(FastAPI):
    """FastAPI whose POST /route and /api/query go straight to the runtime; every other path is plain FastAPI.

    The FastAPI routes for those two paths stay registered (same code, reached only when the app is mounted
    under a prefix): they document the endpoint in the OpenAPI schema.
    """

    runtime: Runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch the hot path before the middleware stack, the rest as usual."""
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in ROUTE_PATHS:
            await self.runtime.route_asgi(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer serialised with orjson."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the router app; models load and the log writer starts in its lifespan."""
    settings = settings or load_settings()
    rt = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(rt.holder.start)
        try:  # migrate now, not inside the first request's log write
            await asyncio.to_thread(store.upgrade, settings)
        except StoreError as exc:
            log.warning("%s (query logs wait in the buffer until it is back)", exc)
        rt.writer.start()
        if rt.holder.snapshot.production is None:
            log.warning("No active model found: run `intelrouter train` (answering 503 until one is promoted)")
        try:
            yield
        finally:
            rt.holder.stop()
            rt.batcher.close()
            await asyncio.to_thread(rt.writer.stop)

    app = RouterAPI(title="IntelRouter", version="1", lifespan=lifespan,
                    description="Routes queries with the @production model (and @staging for the canary share).",
                    telemetry={"tracing": False, "metrics": False, "logs": False})
    app.runtime = rt
    app.state.runtime = rt
    _add_error_handlers(app, rt)

    async def route(request: Request) -> Response:
        """Route one query: label, confidence, route target, model version and variant."""
        check_content_type(request.headers.get("content-type"))
        raw = await request.body()
        if len(raw) > rt.max_body:
            raise too_large(rt.max_body)
        status, payload, headers = await rt.route(raw, request.headers.get("authorization"))
        return Response(payload, status_code=status, media_type="application/json", headers=headers)

    for path in ROUTE_PATHS:
        app.add_api_route(path, route, methods=["POST"], response_model=RouteResponse, responses=ERRORS,
                          openapi_extra=body_schema(RouteRequest), summary="Route one query",
                          operation_id=f"route{path.replace('/', '_')}")

    async def record_label(request: Request, source: str) -> Response:
        rt.check_key(request.headers.get("authorization"))
        body = await read_body(request, LabelRequest, rt.max_body)
        groundtruth.check_label(body.label, rt.holder.snapshot.known_labels(), settings.allow_new_labels)
        if rt.writer.is_pending(body.query_id):  # routed a moment ago: its row may still be in the buffer
            if not await asyncio.to_thread(rt.writer.wait_written, body.query_id, 5.0):
                raise StoreError(f"query {body.query_id} is not stored yet (database unavailable): retry later")
        record = groundtruth.record_feedback if source == "feedback" else groundtruth.record_override
        return json_response(await asyncio.to_thread(record, settings, body.query_id, body.label))

    async def feedback(request: Request) -> Response:
        """Store a user's label for an answered query in ml_data."""
        return await record_label(request, "feedback")

    async def override(request: Request) -> Response:
        """Store a user's correction for an answered query (replaces earlier labels)."""
        return await record_label(request, "override")

    for path, endpoint in (("/feedback", feedback), ("/override", override)):
        app.add_api_route(path, endpoint, methods=["POST"], response_model=LabelResponse, responses=ERRORS,
                          openapi_extra=body_schema(LabelRequest))

    @app.post("/outcome", response_model=OutcomeResponse, responses=ERRORS, openapi_extra=outcome_body_schema())
    async def outcome(request: Request) -> Response:
        """What the caller finally did with answers: `{query_id, route_taken, label?, confidence?, provider?}`,
        or `{"outcomes": [...]}` (up to 1000); stored with each query, all or nothing."""
        rt.check_key(request.headers.get("authorization"))
        outcomes = parse_outcomes(await read_raw(request, OUTCOME_MAX_BODY))
        for pending in {o.query_id for o in outcomes if rt.writer.is_pending(o.query_id)}:
            if not await asyncio.to_thread(rt.writer.wait_written, pending, 5.0):
                raise StoreError(f"query {pending} is not stored yet (database unavailable): retry later")
        return json_response({"updated": await asyncio.to_thread(record_outcomes, settings, outcomes)})

    @app.get("/health", responses={503: {"description": "No production model loaded."}})
    async def health() -> Response:
        """Readiness, the version behind each alias, the canary share and the log queue."""
        snap, h = rt.holder.snapshot, rt.holder.stats
        ready = snap.production is not None
        body = {
            "ready": ready, "versions": snap.versions(), "canary_share": snap.share,
            "log_queue_depth": rt.writer.queue_depth,
            "log": {k: v for k, v in rt.writer.stats().items() if k != "queue_depth"},
            "registry": {"poll_failures": h.poll_failures, "load_failures": h.load_failures,
                         "seconds_since_last_poll": round(time.time() - h.last_ok, 1) if h.last_ok else None,
                         "last_error": h.last_error},
        }
        if not ready:
            body["detail"] = str(NoActiveModelError())
        return json_response(body, 200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(rt.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", responses=ERRORS)
    async def reload(request: Request) -> Response:
        """Re-read the registry now instead of at the next poll (needs the API key when one is set)."""
        rt.check_key(request.headers.get("authorization"))
        if not await asyncio.to_thread(rt.holder.refresh):
            raise RegistryError(f"registry unreachable, still serving the last good models: "
                                f"{rt.holder.stats.last_error}")
        snap = rt.holder.snapshot
        return json_response({"versions": snap.versions(), "canary_share": snap.share})

    app.include_router(dashboard_router(rt))  # GET /dashboard and its plotly.js
    return app


def _add_error_handlers(app: FastAPI, rt: Runtime) -> None:
    """Every failure answers one line of JSON `{"detail": ...}` with a fitting status; bad input never 500s."""

    async def known(request: Request, exc: Exception) -> Response:
        status, payload, headers = rt.error(exc)
        return Response(payload, status_code=status, media_type="application/json", headers=headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        rt.metrics.rejected.labels("422").inc()
        errors = getattr(exc, "errors", lambda: [])()
        err = errors[0] if errors else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in err.get("loc", ())) or "request"
        return json_response({"detail": f"{where}: {err.get('msg')}"}, 422)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 400)
        rt.metrics.rejected.labels(str(status)).inc()
        return json_response({"detail": str(getattr(exc, "detail", exc))}, status, getattr(exc, "headers", None))

    app.add_exception_handler(IntelRouterError, known)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, known)
