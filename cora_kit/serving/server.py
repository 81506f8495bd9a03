"""``cora-kit serve``: the HTTP API and the 360-degree page (FastAPI on uvicorn).

    GET  /              the page (static/index.html; every asset shipped, no CDN)
    GET  /health        {"status": "ok", "model": {...}, "queue": {...}}
    POST /v1/caption    multipart ``image`` (file) + ``query`` (text)
                        -> {"caption", "query", "elapsed_ms", "batch_size"}
    GET  /v1/geometry   tile outlines and matching patches of the model's tiler (?grid=N)

Requests go through a bounded queue to one batching worker (``serving.batcher``). Every
error is a JSON ``{"detail": "<one line>"}``: 401 without the token (when one is set), 413
upload or pixel count over the limit, 415 not an image, 422 not 2:1 / empty query /
missing field, 503 queue full, 504 past the time limit, 500 (logged) for anything else;
no request can stop the server.

Auth (``token`` set, required by ``cora-kit serve`` for any address but 127.0.0.1/::1/
localhost): ``Authorization: Bearer <token>``; a browser opens ``/?token=<token>`` once,
which sets an HttpOnly, SameSite=Strict cookie with the token and redirects to ``/``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.concurrency import run_in_threadpool

from cora_kit import __version__
from cora_kit.serving.batcher import Batcher, QueueFull
from cora_kit.serving.uploads import DEFAULT_MAX_PIXELS, UploadLimits, UploadRejected, decode_upload
from cora_kit.serving.viewer_geometry import MAX_GRID, layout_geometry

STATIC = Path(__file__).parent / "static"
COOKIE = "cora_kit_token"
MAX_QUERY_CHARS = 500
#: multipart framing and the query field on top of the image (bytes)
FORM_OVERHEAD = 64 * 1024
log = logging.getLogger("cora_kit.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class ServeSettings:
    """Server limits (``cora-kit serve`` flags)."""

    token: str | None = None
    max_batch: int = 8
    max_queue: int = 64
    max_upload_mb: float = 32.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout_s: float = 60.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": " ".join(str(detail).split())}, status_code=status, headers=headers)


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413, from its
    Content-Length before reading, else as soon as the streamed bytes pass the limit."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        mb = self.limit / 2**20
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _error(413, f"request body of {int(length) / 2**20:.1f} MB is over the upload limit"
                              f" ({mb:.1f} MB with the form)")(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _error(413, f"request body is over the upload limit ({mb:.1f} MB with the form)")(
                    scope, receive, send)


def _is_authorised(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and hmac.compare_digest(cookie.encode(), token.encode())


def create_app(captioner: Any, settings: ServeSettings | None = None) -> FastAPI:
    """The app around ``captioner`` (a ``Captioner``, or anything with ``caption_erps``,
    ``describe()`` and ``model.layout`` / ``model.latent_grid``)."""
    settings = settings or ServeSettings()
    batcher = Batcher(captioner.caption_erps, settings.max_batch, settings.max_queue, settings.timeout_s)
    limits = UploadLimits(settings.max_upload_bytes, settings.max_pixels)
    model_info = captioner.describe()
    geometry_cache: dict[tuple[int, int], dict[str, Any]] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="cora-kit", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.settings = settings
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + FORM_OVERHEAD)

    @app.middleware("http")
    async def auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if settings.token is None:
            return await call_next(request)
        given = request.query_params.get("token")
        if request.url.path == "/" and given is not None:
            if not hmac.compare_digest(given.encode(), settings.token.encode()):
                return _error(401, "wrong token")
            resp = RedirectResponse("/", status_code=303)
            resp.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict")
            return resp
        if not _is_authorised(request, settings.token):
            return _error(401, "missing or wrong token: send 'Authorization: Bearer <token>'"
                               " (in a browser, open /?token=<token> once)", {"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}: {exc})")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok", "model": model_info,
            "queue": {"pending": batcher.pending, "max_queue": settings.max_queue, "max_batch": settings.max_batch},
            "limits": {"max_upload_mb": settings.max_upload_mb, "max_pixels": settings.max_pixels,
                       "timeout_s": settings.timeout_s, "max_query_chars": MAX_QUERY_CHARS},
            "served": asdict(batcher.stats),
        }

    @app.post("/v1/caption")
    async def caption(request: Request) -> JSONResponse:
        start = time.perf_counter()
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return _error(415, f"send multipart/form-data with fields 'image' (a file) and 'query'; got"
                               f" {ctype or 'no content type'}")
        if batcher.full():
            return _error(503, f"the queue is full ({settings.max_queue} requests waiting); retry later",
                          {"Retry-After": "1"})
        try:
            form = await request.form(max_files=1, max_fields=4, max_part_size=64 * 1024)
        except StarletteHTTPException as exc:
            return _error(exc.status_code if exc.status_code != 400 else 422, f"bad form: {exc.detail}")
        image, query = form.get("image"), form.get("query")
        if image is None or isinstance(image, str):
            return _error(422, "missing form field 'image' (a panorama file)")
        if not isinstance(query, str) or not query.strip():
            return _error(422, "the query is empty: send a question in form field 'query'")
        query = query.strip()
        if len(query) > MAX_QUERY_CHARS:
            return _error(422, f"the query has {len(query)} characters; at most {MAX_QUERY_CHARS}")
        name = Path(image.filename or "upload").name or "upload"
        data = await image.read(settings.max_upload_bytes + 1)
        await image.close()
        try:
            erp = await run_in_threadpool(decode_upload, data, name, limits)
        except UploadRejected as exc:
            return _error(exc.status, exc.detail)
        try:
            answer = await batcher.submit(erp, query)
        except QueueFull as exc:
            return _error(503, str(exc), {"Retry-After": "1"})
        except asyncio.TimeoutError:
            return _error(504, f"no answer within the time limit of {settings.timeout_s:g} s"
                               f" ({batcher.pending} requests still waiting)")
        except Exception as exc:  # noqa: BLE001 - the model failed on this batch; the worker goes on
            log.exception("captioning failed")
            return _error(500, f"internal error ({type(exc).__name__}: {exc})")
        return JSONResponse({
            "caption": answer.caption, "query": query, "elapsed_ms": (time.perf_counter() - start) * 1000.0,
            "batch_size": answer.batch_size,
        })

    @app.get("/v1/geometry")
    async def geometry(grid: int | None = None) -> JSONResponse:
        model = captioner.model
        g = tuple(model.latent_grid) if grid is None else (grid, grid)
        if not (1 <= g[0] <= MAX_GRID and 1 <= g[1] <= MAX_GRID):
            return _error(422, f"grid must be 1..{MAX_GRID}; got {grid}")
        if g not in geometry_cache:
            geometry_cache[g] = await run_in_threadpool(layout_geometry, model.layout, g)
        return JSONResponse(geometry_cache[g])

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


@contextmanager
def background_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` on uvicorn in a background thread (tests, benchmarks, notebooks); yields
    its base URL (``port=0``: a free port). Stops it on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=server.run, name="cora-kit-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


__all__ = ["COOKIE", "MAX_QUERY_CHARS", "ServeSettings", "background_server", "create_app"]
