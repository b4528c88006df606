"""Servers on 127.0.0.1 for stream tests: files over HTTP, a live MJPEG stream, and a
server that accepts connections and never answers.  Each binds port 0 and runs in
daemon threads; use them as context managers."""

from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _serving(handler) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def serve_files(directory: Path):
    """http://127.0.0.1:PORT serving the files of `directory` (with Content-Length)."""
    return _serving(functools.partial(_Quiet, directory=str(directory)))


def serve_mjpeg(frames_per_connection: int, fps: float = 50.0, size=(64, 48)):
    """A live multipart MJPEG stream (no length, no frame count) that ends each
    connection after `frames_per_connection` frames, as a flapping camera would."""

    class Mjpeg(http.server.BaseHTTPRequestHandler):
        connections = 0

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            type(self).connections += 1
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            image = np.full((size[1], size[0], 3), 90, np.uint8)
            jpeg = cv2.imencode(".jpg", image)[1].tobytes()
            part = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                    % len(jpeg)) + jpeg + b"\r\n"
            try:
                for _ in range(frames_per_connection):
                    self.wfile.write(part)
                    time.sleep(1.0 / fps)
            except OSError:
                pass

    return _serving(Mjpeg)


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.accepted = threading.Event()
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self._held.append(connection)
            self.accepted.set()

    def __enter__(self) -> "SilentServer":
        return self

    def __exit__(self, *exc) -> None:
        self._socket.close()
        for connection in self._held:
            connection.close()
