"""Benchmarks of the browser view (docs/benchmarks.md, "Browser view").

    python tools/bench_web.py viewers --counts 0 1 2 4 8    # server CPU per viewer, 720p
    python tools/bench_web.py latency                        # capture -> part arrival / paint
    python tools/bench_web.py prompts                        # prompt change -> first detection
    python tools/bench_web.py prompts --real [--method dense]   # ... on models/shapes-clip

`viewers` and `latency` run the application in a child process on a synthetic
30 fps camera with a detector that finds nothing (so the child's CPU is
capture, drawing and the server); the viewers and the browser run in this
process or in chromium, so their CPU is not counted.  `prompts --real` runs
``main.py --demo --realtime --headless --serve`` with the shapes model.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- the child


class SyntheticCamera:
    """A live source: generated moving shapes, paced at `fps` (frames made up front)."""

    def __init__(self, width: int, height: int, fps: float, frames: int = 60) -> None:
        from realtime.live.source import SourceSpec
        from realtime.scenes import MovingScene

        scene = MovingScene(width, height, 3, seed=1)
        self.images = [scene.frame(i).frame for i in range(frames)]
        self.spec, self.fps, self.frame_count = SourceSpec("camera", 0), fps, None
        self.width, self.height, self.live, self.name = width, height, True, "synthetic"
        self._next, self._count = time.monotonic(), 0

    def read(self):
        from realtime.live.source import Grabbed

        self._next += 1.0 / self.fps
        time.sleep(max(0.0, self._next - time.monotonic()))
        image = self.images[self._count % len(self.images)]
        self._count += 1
        return Grabbed(None, image)

    def reopen(self) -> bool:
        return True

    def close(self) -> None:
        pass


class BenchDetector:
    """`echo`: one box per frame labelled with the first prompt; `null`: no box."""

    def __init__(self, prompts, echo: bool) -> None:
        self.labels, self.echo = tuple(prompts), echo
        self.model = SimpleNamespace(device="bench")

    def set_prompts(self, prompts):
        self.labels = tuple(prompts)

    def set_threshold(self, threshold: float) -> None:
        pass

    def detect(self, image, frame_index=0, timestamp_s=0.0):
        from realtime.detections import Detections

        if not self.echo:
            return Detections(self.labels, frame_index=frame_index, timestamp_s=timestamp_s)
        h, w = image.shape[:2]
        return Detections(self.labels, np.array([[w / 4, h / 4, w * 3 / 4, h * 3 / 4]],
                                                np.float32),
                          np.array([0.9], np.float32), np.array([0.3], np.float32),
                          np.array([0]), frame_index, timestamp_s)


def child(args) -> int:
    from realtime.config import config_from_dict
    from realtime.live import app

    width, height = (int(v) for v in args.size.split("x"))
    config = config_from_dict({
        "app": {"headless": True, "prompts": ["a red circle"]},
        "serve": {"address": f"127.0.0.1:{args.port}", "max_fps": 30.0, "max_viewers": 64}})
    return app.run(config, detector_factory=lambda prompts, _: BenchDetector(
        prompts, args.detector == "echo"), reader=SyntheticCamera(width, height, 30.0))


# --------------------------------------------------------------------------- the parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(command: list[str], port: int) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    import urllib.request

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited with {process.returncode}")
        time.sleep(0.3)
    raise RuntimeError("the server did not become healthy")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def bench_child(port: int, detector: str = "null", size: str = "1280x720") -> subprocess.Popen:
    return start([sys.executable, __file__, "child", "--port", str(port), "--detector",
                  detector, "--size", size], port)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def read_part(content) -> tuple[dict[str, str], int]:
    """(headers, JPEG size) of the next MJPEG part."""
    line = await content.readline()
    while line == b"\r\n":
        line = await content.readline()
    if not line:
        raise EOFError
    headers = {}
    while (line := await content.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("ascii").partition(":")
        headers[name.strip().lower()] = value.strip()
    size = int(headers["content-length"])
    await content.readexactly(size)
    return headers, size


async def viewer(session, url: str, frames: list, latencies: list | None = None) -> None:
    async with session.get(url) as response:
        while True:
            headers, _ = await read_part(response.content)
            frames.append(time.monotonic())
            if latencies is not None:
                latencies.append(time.time() * 1000 - float(headers["x-captured-ms"]))


def percentiles(values) -> str:
    values = sorted(values)
    if not values:
        return "-"
    return (f"median {statistics.median(values):.0f} ms, p90 "
            f"{values[int(0.9 * (len(values) - 1))]:.0f} ms (n={len(values)})")


async def measure_viewers(pid: int, port: int, counts, seconds: float) -> list[tuple]:
    import aiohttp

    rows = []
    url = f"http://127.0.0.1:{port}/stream.mjpg"
    async with aiohttp.ClientSession() as session:
        for count in counts:
            frames = [[] for _ in range(count)]
            tasks = [asyncio.create_task(viewer(session, url, frames[i])) for i in range(count)]
            await asyncio.sleep(2.0)                       # warm up
            t0, c0 = time.monotonic(), cpu_s(pid)
            start_counts = [len(f) for f in frames]
            await asyncio.sleep(seconds)
            elapsed, used = time.monotonic() - t0, cpu_s(pid) - c0
            fps = [(len(f) - s) / elapsed for f, s in zip(frames, start_counts)]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            rows.append((count, 100.0 * used / elapsed, statistics.mean(fps) if fps else 0.0))
            await asyncio.sleep(1.0)
    return rows


def run_viewers(args) -> None:
    port = free_port()
    process = bench_child(port)
    try:
        rows = asyncio.run(measure_viewers(process.pid, port, args.counts, args.seconds))
    finally:
        stop(process)
    cpu = {count: used for count, used, _ in rows}
    print("| viewers | server process CPU (% of one core) | frames/s each viewer got | "
          "over no viewer | per viewer beyond the first |")
    print("| --- | --- | --- | --- | --- |")
    for count, used, fps in rows:
        over = f"{used - cpu[0]:+.1f} %" if 0 in cpu and count else "-"
        beyond = (f"{(used - cpu[1]) / (count - 1):+.2f} %" if 1 in cpu and count > 1 else "-")
        print(f"| {count} | {used:.1f} % | {fps:.1f} | {over} | {beyond} |")


async def measure_arrival(port: int, seconds: float) -> list[float]:
    import aiohttp

    frames, latencies = [], []
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(viewer(session, f"http://127.0.0.1:{port}/stream.mjpg",
                                          frames, latencies))
        await asyncio.sleep(1.0)
        del latencies[:]
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return latencies


def measure_paint(port: int, seconds: float) -> list[float]:
    from tools.browser import chromium, missing

    if missing():
        raise SystemExit(f"error: {missing()}")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        driver = chromium(profile, 1920, 1080)    # a panel wide enough for the 1280 stream
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            time.sleep(2.0)
            driver.execute_script("window.realtimeStats.latencies.length = 0;")
            time.sleep(seconds)
            return driver.execute_script("return window.realtimeStats.latencies.slice(-300);")
        finally:
            driver.quit()


def run_latency(args) -> None:
    port = free_port()
    process = bench_child(port)
    try:
        arrival = asyncio.run(measure_arrival(port, args.seconds))
        paint = measure_paint(port, args.seconds)
    finally:
        stop(process)
    print(f"capture -> MJPEG part arrival (aiohttp client): {percentiles(arrival)}")
    print(f"capture -> paint (chromium, page's own measure): {percentiles(paint)}")


async def measure_prompts(port: int, sets: list[list[str]]) -> list[float]:
    import aiohttp

    base, delays = f"http://127.0.0.1:{port}", []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{base}/ws") as ws:
            for prompts in sets:
                while True:   # start from a quiet socket: drop what is queued
                    try:
                        await ws.receive(timeout=0.05)
                    except asyncio.TimeoutError:
                        break
                t0 = time.perf_counter()
                async with session.post(f"{base}/prompts", json={"prompts": prompts}) as r:
                    assert r.status == 202, await r.text()
                while True:
                    message = await ws.receive_json(timeout=120)
                    if message["type"] == "status" and message.get("labels") == prompts:
                        delays.append((time.perf_counter() - t0) * 1000)
                        break
                await asyncio.sleep(0.6)           # under the rate limit (2 changes/s)
    return delays


def run_prompts(args) -> None:
    port = free_port()
    if args.real:
        command = [sys.executable, str(ROOT / "main.py"), "--demo", "--realtime", "--headless",
                   "--serve", f"127.0.0.1:{port}"]
        if args.method:
            command += ["--method", args.method]
        process = start(command, port)
    else:
        process = bench_child(port, "echo", "640x480")
    unseen = [[f"a shape number {i}", "a purple circle"] for i in range(args.changes)]
    seen = [["a purple circle", "a blue star"], ["a blue star"]] * (args.changes // 2)
    try:
        new = asyncio.run(measure_prompts(port, unseen))
        cached = asyncio.run(measure_prompts(port, seen))
    finally:
        stop(process)
    what = f"shapes-clip, {args.method or 'windows'}" if args.real else "echo detector"
    print(f"{what}: prompt change -> first detection with it (POST to websocket status)")
    print(f"  unseen prompts (text encoder runs): {percentiles(new)}")
    print(f"  prompts seen before (cached):        {percentiles(cached)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("child", help="(internal) the app on a synthetic camera")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--detector", choices=("null", "echo"), default="null")
    c.add_argument("--size", default="1280x720")
    v = commands.add_parser("viewers", help="server CPU per MJPEG viewer at 720p")
    v.add_argument("--counts", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    v.add_argument("--seconds", type=float, default=10.0)
    lat = commands.add_parser("latency", help="capture to part arrival and to paint, 720p")
    lat.add_argument("--seconds", type=float, default=10.0)
    p = commands.add_parser("prompts", help="prompt change to first detection")
    p.add_argument("--real", action="store_true", help="main.py --demo with models/shapes-clip")
    p.add_argument("--method", default="", help="with --real: the detection method")
    p.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    if args.command == "child":
        sys.exit(child(args))
    {"viewers": run_viewers, "latency": run_latency, "prompts": run_prompts}[args.command](args)


if __name__ == "__main__":
    main()
