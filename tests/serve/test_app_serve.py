"""The browser view in the running application (fake detector and camera, headless):
prompt changes over REST and the websocket reach the detector and show in the next
detections and in the JSON Lines file; threshold, pause and heat map reach the render
loop; the server thread stops with the others; input errors are one line."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time

import pytest

pytest.importorskip("aiohttp", reason="the browser view needs aiohttp "
                                      "(pip install -r requirements-web.txt)")
import aiohttp  # noqa: E402

from conftest import FakeCamera, FakeFactory, app_config, free_port, pipeline_threads  # noqa: E402
from helpers import RunningApp, serve_config  # noqa: E402
from realtime.live import app  # noqa: E402


async def statuses(ws, until, timeout_s: float = 10.0) -> dict:
    """Status messages until one satisfies `until`; that one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = await ws.receive_json(timeout=timeout_s)
        if message["type"] == "status" and until(message):
            return message
    raise AssertionError("no such status in time")


async def wait_healthy(session, base: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the server never became healthy")


def test_prompt_changes_over_rest_and_websocket_reach_the_detector(tmp_path):
    port, dets = free_port(), tmp_path / "d.jsonl"
    base = f"http://127.0.0.1:{port}"
    rest_prompts, ws_prompts = ["a dog: brown", "🐕"], ["a cat", "chat noir 🐈‍⬛"]

    async def scenario(running):
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base)
            async with session.ws_connect(f"{base}/ws") as ws:
                async with session.post(f"{base}/prompts",
                                        json={"prompts": rest_prompts}) as response:
                    assert response.status == 202
                    rest_generation = (await response.json())["generation"]
                # tracked: a new prompt's box shows from its min_hits-th frame
                seen_rest = await statuses(ws, lambda m: m["labels"] == rest_prompts
                                           and m["detections"])
                await ws.send_json({"type": "prompts", "prompts": ws_prompts})
                seen_ws = await statuses(ws, lambda m: m["labels"] == ws_prompts
                                         and m["detections"])
                for change in ({"type": "threshold", "value": 0.25},
                               {"type": "heatmap", "value": True},
                               {"type": "paused", "value": True}):
                    await ws.send_json(change)
                paused = await statuses(ws, lambda m: m["paused"] and m["heatmap"]
                                        and m["threshold"] == 0.25)
                async with session.get(f"{base}/prompts") as response:
                    state = await response.json()
                async with session.get(f"{base}/healthz") as response:
                    health = response.status        # paused is not unhealthy
                return rest_generation, seen_rest, seen_ws, paused, state, health

    with RunningApp(serve_config(port, detections=str(dets))) as running:
        rest_generation, seen_rest, seen_ws, paused, state, health = asyncio.run(
            scenario(running))
        detector = running.factory.built[0]
        thresholds = list(detector.thresholds)
    assert running.code == 0 and pipeline_threads() == []
    assert rest_generation == 1 and seen_rest["generation"] == 1
    assert seen_rest["detections"][0]["label"] == "a dog: brown"      # the next detections
    assert seen_ws["generation"] == 2 and seen_ws["detections"][0]["label"] == "a cat"
    assert state["prompts"] == ws_prompts and state["generation"] == 2
    assert 0.25 in thresholds and paused["paused"] and health == 200
    records = [json.loads(line) for line in dets.read_text(encoding="utf-8").splitlines()]
    changes = [(r["generation"], r["prompts"]) for r in records if "prompts" in r]
    assert changes == [(0, ["a red circle"]), (1, rest_prompts), (2, ws_prompts)]
    first_ws = next(i for i, r in enumerate(records) if r.get("generation") == 2)
    assert {d["label"] for r in records[first_ws:] for d in r["detections"]} == {"a cat"}


def test_the_server_comes_up_while_the_model_loads_and_stops_with_the_run(tmp_path):
    port = free_port()
    loaded = threading.Event()

    class SlowFactory(FakeFactory):
        def __call__(self, prompts, config):
            loaded.wait(10)
            return super().__call__(prompts, config)

    async def probe() -> tuple[int, int]:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 10
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        early = response.status
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            loaded.set()
            await wait_healthy(session, f"http://127.0.0.1:{port}")
            async with session.get(f"http://127.0.0.1:{port}/prompts") as response:
                return early, response.status

    running = RunningApp(serve_config(port))
    running.factory = SlowFactory()
    with running:
        early, later = asyncio.run(probe())
    assert (early, later) == (503, 200)                  # no frame while the model loads
    assert running.code == 0 and pipeline_threads() == []


def test_a_busy_port_and_a_missing_aiohttp_are_one_line_input_errors(capsys, monkeypatch):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        factory = FakeFactory()
        config = serve_config(busy.getsockname()[1])
        assert app.run(config, detector_factory=factory, reader=FakeCamera()) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: serve.address: cannot listen on")
    assert factory.built == [] and pipeline_threads() == []
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    assert app.run(serve_config(free_port()), detector_factory=factory,
                   reader=FakeCamera()) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: serve.address: the browser view needs aiohttp: pip install -r "
        "requirements-web.txt"]


def test_serve_flags_and_address_validation():
    import main
    from realtime.config import ConfigError, ServeConfig

    config = main.config_from_args(main.build_parser().parse_args(
        ["--serve", "[::1]:9000", "--serve-token", "long-enough", "--serve-max-viewers", "3",
         "--serve-max-fps", "10"]))
    serve = config.serve
    assert (serve.host, serve.port, serve.token, serve.max_viewers, serve.max_fps) == (
        "::1", 9000, "long-enough", 3, 10.0)
    assert ServeConfig(address="8080").host == "127.0.0.1" and ServeConfig().address == ""
    assert not ServeConfig(address="0.0.0.0:80").loopback
    for bad in ("http", "70000", "::1:80", "host:", ":80"):
        with pytest.raises(ConfigError, match=r"serve\.address: must be \[HOST:\]PORT"):
            ServeConfig(address=bad)
    with pytest.raises(ConfigError, match="serve.token: must be at least 8"):
        ServeConfig(address="80", token="short")
    assert app_config().serve.address == ""
