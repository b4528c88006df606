"""The browser view's server through aiohttp's test client: the MJPEG stream (frame size,
widths, shared encoding, a slow viewer), REST, the websocket, and the defences
(400/401/403/413/429/503)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("aiohttp", reason="the browser view needs aiohttp "
                                      "(pip install -r requirements-web.txt)")

from helpers import Feeder, read_part, run, status, web_client  # noqa: E402
from realtime.control import PromptController  # noqa: E402
from realtime.serve.guard import MAX_BODY_BYTES  # noqa: E402


async def wait_for(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- the stream


def drain(sock: socket.socket) -> int:
    """Bytes waiting in a socket (read without blocking)."""
    sock.setblocking(False)
    total = 0
    try:
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    except BlockingIOError:
        pass
    return total


def test_two_mjpeg_parts_are_jpegs_of_the_frame_size_and_widths_are_rounded_down():
    async def scenario():
        async with web_client() as (client, view):
            with Feeder(view.hub, size=(320, 240)):
                response = await client.get("/stream.mjpg")
                assert response.status == 200
                assert response.headers["Content-Type"] == \
                    "multipart/x-mixed-replace; boundary=frame"
                parts = [await read_part(response.content) for _ in range(2)]
                small = await client.get("/stream.mjpg?width=200&fps=5")
                small_part = await read_part(small.content)
                response.close()
                small.close()
            return parts, small_part

    parts, (_, small_jpeg) = run(scenario())
    indices = []
    for headers, jpeg in parts:
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (240, 320, 3)
        assert abs(float(headers["x-captured-ms"]) / 1000 - time.time()) < 30
        indices.append(int(headers["x-frame-index"]))
    assert indices[1] > indices[0]
    small = cv2.imdecode(np.frombuffer(small_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert small.shape == (120, 160, 3)                 # 200 -> the 160-pixel stream


def test_viewers_of_one_width_share_each_encoded_frame():
    async def scenario():
        async with web_client() as (client, view):
            with Feeder(view.hub):
                streams = [await client.get("/stream.mjpg") for _ in range(3)]
                for stream in streams:
                    await read_part(stream.content)
                before = view.hub.frames_encoded
                heads = [await read_part(stream.content) for stream in streams for _ in range(3)]
                encoded = view.hub.frames_encoded - before
                for stream in streams:
                    stream.close()
            return encoded, heads

    encoded, heads = run(scenario())
    assert len(heads) == 9 and encoded < 9            # three viewers, not three encodings each


def test_a_viewer_that_never_reads_does_not_delay_another():
    async def scenario():
        async with web_client(max_fps=30.0) as (client, view):
            with Feeder(view.hub, fps=30.0, size=(640, 480), noise=True) as feeder:
                stuck = socket.socket()
                stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                stuck.connect(("127.0.0.1", client.port))
                stuck.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                reader = await client.get("/stream.mjpg")
                await wait_for(lambda: view.hub.viewers == 2)
                start, arrivals, received = time.monotonic(), [], 0
                while time.monotonic() - start < 4.0:
                    headers, jpeg = await read_part(reader.content)
                    arrivals.append((time.monotonic(), int(headers["x-frame-index"])))
                    received += len(jpeg)
                fed, viewers = feeder.fed, view.hub.viewers
                reader.close()
            stuck_received = drain(stuck)
            stuck.close()
            return arrivals, fed, viewers, received, stuck_received

    arrivals, fed, viewers, received, stuck_received = run(scenario())
    assert viewers == 2                                   # the stuck viewer is still connected
    assert stuck_received < received / 3                  # ... and was really stuck
    late = [t for t, _ in arrivals if t - arrivals[0][0] > 2.0]   # once its buffers are full
    gaps = np.diff([t for t, _ in arrivals])
    assert len(late) >= 10 and gaps.max() < 1.5, (len(late), gaps.max())
    assert arrivals[-1][1] >= fed - 15                    # and it sees recent frames


def test_stream_options_and_the_viewer_cap_are_enforced():
    async def scenario():
        async with web_client(max_viewers=1) as (client, view):
            codes = [(await client.get(f"/stream.mjpg?{query}")).status
                     for query in ("fps=0", "fps=100", "fps=abc", "fps=nan", "width=10",
                                   "width=big", "width=99999")]
            with Feeder(view.hub):
                first = await client.get("/stream.mjpg?fps=2&width=640")
                await read_part(first.content)
                second = await client.get("/stream.mjpg")
                body = await second.json()
                first.close()
            return codes, second.status, body

    codes, second, body = run(scenario())
    assert codes == [400] * 7
    assert second == 503 and "1 viewers already" in body["error"]


def test_snapshot_health_and_metrics():
    async def scenario():
        async with web_client() as (client, view):
            before = [(await client.get(p)).status for p in ("/snapshot.jpg", "/healthz")]
            view.hub.feed(np.zeros((48, 64, 3), np.uint8), status(7))
            await wait_for(lambda: view.hub.status is not None)
            snapshot = await (await client.get("/snapshot.jpg")).read()
            healthy = await client.get("/healthz")
            metrics = await (await client.get("/metrics")).text()
            view.hub.feed(np.zeros((48, 64, 3), np.uint8), status(8, time.monotonic() - 3.0))
            await wait_for(lambda: view.hub.status.frame_index == 8)
            stale = await client.get("/healthz")
            return before, snapshot, healthy.status, metrics, stale.status, await stale.json()

    before, snapshot, healthy, metrics, stale, stale_body = run(scenario())
    assert before == [503, 503] and healthy == 200
    assert cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
    assert stale == 503 and stale_body["last_frame_age_s"] >= 2.9
    values = dict(line.rsplit(" ", 1) for line in metrics.splitlines()
                  if not line.startswith("#"))
    assert float(values["realtime_capture_fps"]) == 30.0
    assert float(values["realtime_latency_ms"]) == 120.0
    assert values["realtime_viewers"] == "0"
    assert 'realtime_frames_dropped_total{stage="inference"}' in values
    assert "# TYPE realtime_frames_dropped_total counter" in metrics


# --------------------------------------------------------------------------- prompts


def test_post_prompts_answers_202_with_the_generation_and_keeps_colons_and_emoji():
    prompts = PromptController(["a cat"])

    async def scenario():
        async with web_client(prompts=prompts) as (client, _):
            response = await client.post("/prompts", json={"prompts": ["a dog: brown", "🐈‍⬛"]})
            state = await (await client.get("/prompts")).json()
            return response.status, await response.json(), state

    code, body, state = run(scenario())
    assert code == 202 and body == {"generation": 1}
    assert state["pending"] == 1 and state["prompts"] == ["a cat"]   # until the worker takes it
    assert prompts.take().prompts == ("a dog: brown", "🐈‍⬛")


@pytest.mark.parametrize("body, fragment", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b'["a cat"]', "must be an object"),
    (b'{"prompt": ["a cat"]}', "must be an object"),
    (b'{"prompts": "a cat"}', "must be a list of texts"),
    (b'{"prompts": []}', "no prompt given"),
    (b'{"prompts": ["a\\u0000cat"]}', "control character U+0000"),
])
def test_bad_prompt_requests_are_400_and_change_nothing(body, fragment):
    prompts = PromptController(["a cat"])

    async def scenario():
        async with web_client(prompts=prompts) as (client, _):
            response = await client.post("/prompts", data=body,
                                         headers={"Content-Type": "application/json"})
            return response.status, await response.json()

    code, answer = run(scenario())
    assert code == 400 and fragment in answer["error"]
    assert prompts.pending is None and prompts.active.generation == 0


def test_prompt_changes_are_rate_limited():
    async def scenario():
        async with web_client() as (client, _):
            codes = [(await client.post("/prompts", json={"prompts": [f"p{i}"]})).status
                     for i in range(12)]
            last = await client.post("/prompts", json={"prompts": ["again"]})
            return codes, last.headers.get("Retry-After")

    codes, retry_after = run(scenario())
    assert codes[:10] == [202] * 10 and 429 in codes[10:] and retry_after


def test_the_websocket_sends_status_and_takes_changes():
    prompts = PromptController(["a cat"])

    async def scenario():
        async with web_client(prompts=prompts) as (client, view):
            view.hub.feed(np.zeros((48, 64, 3), np.uint8), status(3))
            await wait_for(lambda: view.hub.status is not None)
            ws = await client.ws_connect("/ws")
            first = await ws.receive_json(timeout=5)
            replies = []
            for message in ({"type": "prompts", "prompts": ["a fox: red", "🦊"]},
                            {"type": "threshold", "value": 0.3},
                            {"type": "paused", "value": True},
                            {"type": "heatmap", "value": "yes"},
                            {"type": "zoom"}):
                await ws.send_json(message)
                while (reply := await ws.receive_json(timeout=5))["type"] == "status":
                    pass
                replies.append(reply)
            await ws.send_str("{oops")
            while (bad := await ws.receive_json(timeout=5))["type"] == "status":
                pass
            await ws.close()
            return first, replies, bad, view.view.take()

    first, replies, bad, view_changes = run(scenario())
    assert first["type"] == "status" and first["frame"] == 3 and first["prompts"] == ["a cat"]
    assert first["labels"] == ["a cat"] and first["threshold"] == 0.5
    assert replies[0] == {"type": "accepted", "what": "prompts", "generation": 1}
    assert replies[1]["type"] == replies[2]["type"] == "accepted"
    assert replies[3]["type"] == "error" and "true or false" in replies[3]["message"]
    assert replies[4]["type"] == "error" and bad == {"type": "error", "message": "not JSON"}
    assert prompts.take().prompts == ("a fox: red", "🦊")
    assert view_changes == {"threshold": 0.3, "paused": True}


# --------------------------------------------------------------------------- defences


def test_a_token_is_required_and_then_kept_in_an_httponly_cookie():
    async def scenario():
        async with web_client(token="s3cret-token") as (client, _):
            codes = {"none": (await client.get("/prompts")).status,
                     "wrong": (await client.get("/prompts?token=nope")).status,
                     "bearer": (await client.get(
                         "/prompts", headers={"Authorization": "Bearer s3cret-token"})).status,
                     "healthz": (await client.get("/healthz")).status,
                     "ws": (await client.get("/ws")).status}
            page = await client.get("/?token=s3cret-token", allow_redirects=False)
            cookie = page.headers["Set-Cookie"]
            codes["cookie"] = (await client.get("/prompts")).status   # the jar kept it
            codes["post"] = (await client.post("/prompts", json={"prompts": ["x"]})).status
            return codes, page.status, page.headers["Location"], cookie

    codes, page, location, cookie = run(scenario())
    assert codes == {"none": 401, "wrong": 401, "bearer": 200, "healthz": 503, "ws": 401,
                     "cookie": 200, "post": 202}
    assert page == 303 and location == "/"
    assert "realtime_token=s3cret-token" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


def test_wrong_host_or_origin_is_403_and_an_oversize_body_413():
    async def scenario():
        async with web_client() as (client, _):
            origin = f"http://127.0.0.1:{client.port}"
            codes = {
                "host": (await client.get("/prompts", headers={"Host": "evil.example"})).status,
                "rebound": (await client.get("/", headers={"Host": "attacker.test:80"})).status,
                "origin": (await client.post("/prompts", json={"prompts": ["x"]},
                                             headers={"Origin": "http://evil.example"})).status,
                "null": (await client.post("/prompts", json={"prompts": ["x"]},
                                           headers={"Origin": "null"})).status,
                "same": (await client.post("/prompts", json={"prompts": ["x"]},
                                           headers={"Origin": origin})).status,
                "ws": (await client.get("/ws", headers={"Origin": "http://evil.example",
                                                        "Connection": "Upgrade",
                                                        "Upgrade": "websocket"})).status,
                "localhost": (await client.get(
                    "/prompts", headers={"Host": f"localhost:{client.port}"})).status,
                "big": (await client.post("/prompts", data=b"{" + b" " * MAX_BODY_BYTES + b"}",
                                          headers={"Content-Type": "application/json"})).status,
            }

            async def chunks():
                for _ in range(20):
                    yield b" " * 1024

            codes["chunked"] = (await client.post("/prompts", data=chunks())).status
            ws = await client.ws_connect("/ws")
            await ws.send_str(json.dumps({"type": "prompts", "prompts": ["x" * MAX_BODY_BYTES]}))
            while (message := await ws.receive(timeout=5)).type.name == "TEXT":
                pass
            return codes, ws.close_code

    codes, close_code = run(scenario())
    assert codes == {"host": 403, "rebound": 403, "origin": 403, "null": 403, "same": 202,
                     "ws": 403, "localhost": 200, "big": 413, "chunked": 413}
    assert close_code == 1009                               # message too big


def test_listening_beyond_loopback_generates_a_token_and_prints_it_as_a_url():
    from realtime.config import ServeConfig
    from realtime.control import ViewControl
    from realtime.serve.server import WebServer

    server = WebServer(ServeConfig(address="0.0.0.0:8080"), PromptController(["a"]),
                       ViewControl())
    token = server.web.guard.token
    assert len(token) >= 20 and server.url.endswith(f":0/?token={token}")
    mine = WebServer(ServeConfig(address="0.0.0.0:8080", token="my-long-token"),
                     PromptController(["a"]), ViewControl())
    assert mine.web.guard.token == "my-long-token"
    local = WebServer(ServeConfig(address="8080"), PromptController(["a"]), ViewControl())
    assert local.web.guard.token == "" and local.config.host == "127.0.0.1"
