"""The browser view's HTTP server: one aiohttp application on its own thread and loop.

Routes (see README, Browser view)::

    GET  /               the kiosk page (static files from realtime/serve/static)
    GET  /stream.mjpg    MJPEG stream; ?fps= (0.5..serve.max_fps) and ?width= (160..4096)
    GET  /ws             websocket: status and detections out; prompt, threshold,
                         pause and heat-map changes in
    GET  /prompts        the active prompt set and its generation
    POST /prompts        {"prompts": [...]} -> 202 {"generation": G}
    GET  /snapshot.jpg   the newest shown frame
    GET  /healthz        200, or 503 when the newest frame is older than HEALTHY_AGE_S
    GET  /metrics        Prometheus text

Nothing here touches the detector or the window: prompt changes go to the
:class:`~realtime.control.PromptController`, view changes to the
:class:`~realtime.control.ViewControl`, and frames come from the
:class:`~realtime.serve.hub.FrameHub` the render loop feeds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import socket
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from ..config import ConfigError, ServeConfig
from ..control import (MAX_PROMPT_CHARS, MAX_PROMPTS, ControlError, PromptController,
                       PromptError, ViewControl)
from .guard import COOKIE, MAX_BODY_BYTES, Guard, RateLimit
from .hub import BOUNDARY, FrameHub, stream_width, wall_ms

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"/": ("index.html", "text/html"), "/static/kiosk.js": ("kiosk.js", "text/javascript"),
         "/static/kiosk.css": ("kiosk.css", "text/css")}
HEALTHY_AGE_S = 2.0
WRITE_TIMEOUT_S = 10.0          # a viewer that takes longer to accept one frame is dropped
STATUS_INTERVAL_S = 0.1         # websocket status at most 10 times a second per client
PROMPTS_PER_S, PROMPT_BURST = 2.0, 10
SHUTDOWN_S = 1.0
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
PAGE_POLICY = ("default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
               "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'")


def json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class WebView:
    """The application's state and handlers (one per server)."""

    def __init__(self, config: ServeConfig, prompts: PromptController, view: ViewControl,
                 token: str = "", hub: FrameHub | None = None) -> None:
        self.config, self.prompts, self.view = config, prompts, view
        self.hub = hub or FrameHub(config.jpeg_quality)
        self.guard = Guard(config, token)
        self.prompt_rate = RateLimit(PROMPTS_PER_S, PROMPT_BURST)
        self.websockets: set[web.WebSocketResponse] = set()
        self.browser_latency_ms = math.nan       # capture to paint, as the pages report it
        self._pages = {path: (STATIC / name).read_bytes() for path, (name, _) in PAGES.items()}

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._guard_middleware],
                              client_max_size=MAX_BODY_BYTES)
        for path in PAGES:
            app.router.add_get(path, self.page)
        app.router.add_get("/stream.mjpg", self.stream)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/prompts", self.get_prompts)
        app.router.add_post("/prompts", self.post_prompts)
        app.router.add_get("/snapshot.jpg", self.snapshot)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _start(self, _app) -> None:
        self.hub.attach(asyncio.get_running_loop())

    async def _shutdown(self, _app) -> None:
        self.hub.close()
        await asyncio.gather(*(ws.close(code=1001, message=b"server stopping")
                               for ws in list(self.websockets)), return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self.hub.join, SHUTDOWN_S)

    # -- the guard ------------------------------------------------------------------

    @web.middleware
    async def _guard_middleware(self, request: web.Request, handler) -> web.StreamResponse:
        query_token = request.query.get("token", "")
        bearer = request.headers.get("Authorization", "")
        tokens = [query_token, request.cookies.get(COOKIE, ""),
                  bearer[7:] if bearer.startswith("Bearer ") else ""]
        problem = self.guard.problem(
            path=request.path, method=request.method, host=request.headers.get("Host"),
            origin=request.headers.get("Origin"), tokens=tokens,
            content_length=request.content_length,
            websocket=request.path == "/ws")
        if problem is not None:
            return json_error(*problem)
        if query_token and self.guard.token and request.path == "/":
            response = web.Response(status=303, headers={"Location": "/"})  # token off the URL
        else:
            try:
                response = await handler(request)
            except web.HTTPRequestEntityTooLarge:
                return json_error(413, f"request body over {MAX_BODY_BYTES} bytes")
        if query_token and self.guard.token and not response.prepared:
            response.set_cookie(COOKIE, self.guard.token, httponly=True, samesite="Strict",
                                path="/")
        return response

    # -- pages ------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        _, content_type = PAGES[request.path]
        headers = dict(SECURITY_HEADERS)
        if request.path == "/":
            headers["Content-Security-Policy"] = PAGE_POLICY
        return web.Response(body=self._pages[request.path], content_type=content_type,
                            charset="utf-8", headers=headers)

    # -- the stream ---------------------------------------------------------------------

    def _stream_options(self, request: web.Request) -> tuple[float, int]:
        """(fps, width key) from ?fps= and ?width=; HTTPBadRequest says what is allowed."""
        top = self.config.max_fps
        try:
            fps = float(request.query.get("fps", top))
            if not (math.isfinite(fps) and 0.5 <= fps <= top):
                raise ValueError
        except ValueError:
            raise web.HTTPBadRequest(text=f"fps: must be a number in 0.5..{top:g}") from None
        width = request.query.get("width")
        if width is not None and not (width.isdigit() and 160 <= int(width) <= 4096):
            raise web.HTTPBadRequest(text="width: must be an integer in 160..4096")
        return fps, stream_width(int(width) if width is not None else None)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        fps, width = self._stream_options(request)
        if self.hub.viewers >= self.config.max_viewers:
            return json_error(503, f"{self.config.max_viewers} viewers already (the most "
                                   "serve.max_viewers allows)", **{"Retry-After": "5"})
        viewer = self.hub.add_viewer(width, fps)
        try:
            response = web.StreamResponse(headers={
                **SECURITY_HEADERS,
                "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}"})
            await response.prepare(request)
            await self._send_frames(response, width, 1.0 / fps)
        except (ConnectionError, asyncio.TimeoutError):
            pass   # the viewer went away, or stopped reading
        finally:
            self.hub.remove_viewer(viewer, width)
        return response

    async def _send_frames(self, response: web.StreamResponse, width: int,
                           interval_s: float) -> None:
        loop, seq, due = asyncio.get_running_loop(), 0, 0.0
        while True:
            frame = await self.hub.next_frame(seq, width)
            if frame is None:
                return
            if seq:
                self.hub.frames_skipped += frame.seq - seq - 1
            await asyncio.wait_for(response.write(frame.parts[width]), WRITE_TIMEOUT_S)
            seq = frame.seq
            due = max(due + interval_s, loop.time())
            await asyncio.sleep(due - loop.time())

    async def snapshot(self, _request: web.Request) -> web.Response:
        jpeg = await self.hub.snapshot()
        if jpeg is None:
            return json_error(503, "no frame yet")
        return web.Response(body=jpeg, content_type="image/jpeg", headers=SECURITY_HEADERS)

    # -- prompts --------------------------------------------------------------------------

    def prompt_state(self) -> dict[str, Any]:
        active, pending = self.prompts.active, self.prompts.pending
        failed_generation, failure = self.prompts.last_failure
        return {"prompts": list(active.prompts), "generation": active.generation,
                "warnings": list(active.warnings),
                "pending": pending.generation if pending is not None else None,
                "failure": ({"generation": failed_generation, "message": failure}
                            if failed_generation > active.generation else None),
                "limits": {"prompts": MAX_PROMPTS, "characters": MAX_PROMPT_CHARS}}

    def change_prompts(self, texts: Any) -> int:
        """The new set's generation; PromptError (bad set) or ControlError (too many)."""
        wait_s = self.prompt_rate.wait_s()
        if wait_s > 0:
            raise ControlError(f"too many prompt changes; try again in {math.ceil(wait_s)} s")
        return self.prompts.request(texts)

    async def get_prompts(self, _request: web.Request) -> web.Response:
        return web.json_response(self.prompt_state(), headers=SECURITY_HEADERS)

    async def post_prompts(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            return json_error(400, f"body: not JSON ({str(exc).splitlines()[0]})")
        if not isinstance(body, dict) or "prompts" not in body:
            return json_error(400, 'body: must be an object {"prompts": ["a cat", ...]}')
        try:
            generation = self.change_prompts(body["prompts"])
        except PromptError as exc:
            return json_error(400, str(exc))
        except ControlError as exc:
            return json_error(429, str(exc), **{"Retry-After": str(math.ceil(
                1.0 / PROMPTS_PER_S))})
        return web.json_response({"generation": generation}, status=202,
                                 headers=SECURITY_HEADERS)

    # -- the websocket ------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        if len(self.websockets) >= self.config.max_viewers:
            return json_error(503, "too many websocket clients")
        ws = web.WebSocketResponse(max_msg_size=MAX_BODY_BYTES, heartbeat=20.0, timeout=1.0)
        await ws.prepare(request)
        self.websockets.add(ws)
        replies: deque = deque(maxlen=16)
        wake = asyncio.Event()
        sender = asyncio.create_task(self._send_status(ws, replies, wake))
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    replies.append(self.command(message.data))
                    wake.set()
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            self.websockets.discard(ws)
        return ws

    def command(self, text: str) -> dict[str, Any]:
        """One message from a page: the reply to send back."""
        try:
            message = json.loads(text)
            kind = message.get("type") if isinstance(message, dict) else None
        except ValueError:
            return {"type": "error", "message": "not JSON"}
        try:
            if kind == "prompts":
                return {"type": "accepted", "what": kind,
                        "generation": self.change_prompts(message.get("prompts"))}
            if kind in ("threshold", "paused", "heatmap"):
                self.view.request(kind, message.get("value"))
                return {"type": "accepted", "what": kind}
            if kind == "paint":
                latency = message.get("latency_ms")
                if isinstance(latency, (int, float)) and math.isfinite(latency):
                    self.browser_latency_ms = float(latency)
                return {"type": "accepted", "what": kind}
        except (PromptError, ControlError) as exc:
            return {"type": "error", "what": kind, "message": str(exc)}
        return {"type": "error", "message": "type: must be prompts, threshold, paused, heatmap "
                                            "or paint"}

    async def _send_status(self, ws: web.WebSocketResponse, replies: deque,
                           wake: asyncio.Event) -> None:
        sent_at, last = 0.0, None
        try:
            while not ws.closed:
                while replies:
                    await ws.send_str(json.dumps(replies.popleft(), ensure_ascii=False))
                message = self.status_message()
                now = time.monotonic()
                if message != last and (now - sent_at >= STATUS_INTERVAL_S
                                        or _prompts_changed(message, last)):
                    await ws.send_str(json.dumps(message, ensure_ascii=False))
                    sent_at, last = now, message
                wake.clear()
                waits = {asyncio.ensure_future(self.hub.changed(1.0)),
                         asyncio.ensure_future(wake.wait())}
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiting in waits:
                        waiting.cancel()
        except (ConnectionError, RuntimeError):
            pass   # the page went away

    def status_message(self) -> dict[str, Any]:
        status = self.hub.status
        message: dict[str, Any] = {"type": "status", "viewers": self.hub.viewers,
                                   **self.prompt_state()}
        if status is None:
            return {**message, "frame": None}
        detections = status.detections
        message.update(
            frame=status.frame_index, captured_ms=round(wall_ms(status.captured_at), 1),
            capture_fps=round(status.capture_fps, 1), inference_fps=round(status.inference_fps, 1),
            latency_ms=None if status.latency_ms is None else round(status.latency_ms, 1),
            threshold=status.threshold, paused=status.paused, heatmap=status.heatmap,
            labels=list(detections.labels) if detections is not None else [],
            detections=detections.to_record()["detections"] if detections is not None else [],
            detections_frame=detections.frame_index if detections is not None else None)
        return message

    # -- health and metrics ---------------------------------------------------------------

    async def healthz(self, _request: web.Request) -> web.Response:
        status = self.hub.status
        if status is None:
            return web.json_response({"ok": False, "reason": "no frame yet"}, status=503)
        age_s = time.monotonic() - status.captured_at
        ok = status.paused or age_s <= HEALTHY_AGE_S
        return web.json_response({"ok": ok, "last_frame_age_s": round(age_s, 3),
                                  "paused": status.paused}, status=200 if ok else 503)

    async def metrics(self, _request: web.Request) -> web.Response:
        status = self.hub.status
        value = (lambda name, default=math.nan: getattr(status, name, default)
                 if status is not None else default)
        latency = value("latency_ms")
        rows = [
            ("capture_fps", "gauge", "frames per second captured (smoothed)",
             value("capture_fps")),
            ("inference_fps", "gauge", "frames per second through inference (smoothed)",
             value("inference_fps")),
            ("latency_ms", "gauge", "capture-to-result latency of the newest result",
             math.nan if latency is None else latency),
            ("browser_latency_ms", "gauge", "capture-to-paint latency a page last reported",
             self.browser_latency_ms),
            ("viewers", "gauge", "MJPEG streams open", self.hub.viewers),
            ("websockets", "gauge", "websocket clients connected", len(self.websockets)),
            ("frames_encoded_total", "counter", "frames JPEG-encoded for the streams",
             self.hub.frames_encoded),
            ("prompt_generation", "gauge", "generation of the active prompt set",
             self.prompts.active.generation),
        ]
        lines = []
        for name, kind, help_text, number in rows:
            lines += [f"# HELP realtime_{name} {help_text}", f"# TYPE realtime_{name} {kind}",
                      f"realtime_{name} {_number(number)}"]
        lines += ["# HELP realtime_frames_dropped_total frames dropped: never seen by "
                  "inference (latest-frame-wins), or not sent to a stream viewer (slow or "
                  "paced)", "# TYPE realtime_frames_dropped_total counter",
                  f'realtime_frames_dropped_total{{stage="inference"}} '
                  f'{value("frames_dropped", 0)}',
                  f'realtime_frames_dropped_total{{stage="stream"}} {self.hub.frames_skipped}']
        return web.Response(text="\n".join(lines) + "\n", headers=SECURITY_HEADERS,
                            content_type="text/plain", charset="utf-8")


def _prompts_changed(message: dict, last: dict | None) -> bool:
    """A new prompt set, or the first detections with one: sent at once, not paced."""
    return last is None or any(message.get(key) != last.get(key)
                               for key in ("generation", "pending", "labels"))


def _number(value: float) -> str:
    return "NaN" if isinstance(value, float) and math.isnan(value) else f"{value:g}"


# --------------------------------------------------------------------------- the thread


class WebServer:
    """The server thread ("web"): start() binds (ConfigError when it cannot), feed() takes
    shown frames from the render loop, join() stops it within a bounded time."""

    def __init__(self, config: ServeConfig, prompts: PromptController,
                 view: ViewControl) -> None:
        self.config = config
        token = config.token or ("" if config.loopback else secrets.token_urlsafe(18))
        self.web = WebView(config, prompts, view, token)
        self.feed = self.web.hub.feed
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)

    @property
    def url(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        host = f"[{host}]" if ":" in host else host
        token = self.web.guard.token
        return f"http://{host}:{self.port}/" + (f"?token={token}" if token else "")

    def start(self) -> "WebServer":
        self._thread.start()
        if not self._ready.wait(10.0) or self._error is not None:
            self.join(SHUTDOWN_S)
            reason = self._error.strerror if isinstance(self._error, OSError) else self._error
            raise ConfigError(f"serve.address: cannot listen on {self.config.address} "
                              f"({reason or 'timed out'})")
        if not self.config.loopback:
            print(f"warning: the browser view listens on {self.config.address}, reachable from "
                  "other machines; it asks for the token in this URL", file=sys.stderr)
        print(f"browser view: {self.url}", file=sys.stderr)
        return self

    def join(self, timeout_s: float) -> bool:
        """Stop serving (streams end, websockets close) and wait for the thread."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and self._thread.is_alive():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:
                pass   # the loop already ended
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # never leave start() waiting
            log.debug("web server failed", exc_info=True)
            self._error = self._error or exc
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        runner = web.AppRunner(self.web.application(), access_log=None,
                               shutdown_timeout=SHUTDOWN_S, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
            await site.start()
            self.port = runner.addresses[0][1]
        except OSError as exc:
            self._error = exc
            await runner.cleanup()
            return
        self._ready.set()
        await self._stopping.wait()
        await runner.cleanup()
