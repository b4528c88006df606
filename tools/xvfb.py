"""A private virtual X screen whose contents can be read back as an image.

Needs the Xvfb binary (Debian package ``xvfb``) and nothing else: Xvfb's
``-fbdir`` keeps the screen in a file in XWD format, which is the screenshot.
The live-window test and ``tools/screenshot_window.py`` (the README picture)
both use it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def read_xwd(path: Path) -> np.ndarray:
    """The screen as a BGR image, from an XWD file of a 24/32-bit TrueColor screen."""
    data = Path(path).read_bytes()
    header = struct.unpack(">25I", data[:100])
    if header[1] != 7:                                   # file_version: try little endian
        header = struct.unpack("<25I", data[:100])
    header_size, width, height = header[0], header[4], header[5]
    bits_per_pixel, bytes_per_line, ncolors = header[11], header[12], header[19]
    if bits_per_pixel != 32:
        raise ValueError(f"{path}: unexpected {bits_per_pixel} bits per pixel")
    offset = header_size + ncolors * 12
    rows = np.frombuffer(data, np.uint8, bytes_per_line * height, offset)
    pixels = rows.reshape(height, bytes_per_line)[:, :width * 4].reshape(height, width, 4)
    return pixels[:, :, :3].copy()                      # B, G, R, pad in memory (LSB first)


@contextlib.contextmanager
def virtual_screen(width: int, height: int, fbdir: Path | None = None
                   ) -> Iterator[tuple[str, Path]]:
    """Start Xvfb on a free display; yields (DISPLAY value, framebuffer file)."""
    with contextlib.ExitStack() as stack:
        if fbdir is None:
            fbdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="xvfb-")))
        read_fd, write_fd = os.pipe()
        server = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
             "-fbdir", str(fbdir), "-nolisten", "tcp"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        try:
            with os.fdopen(read_fd) as pipe:
                display = pipe.readline().strip()       # Xvfb writes it once it is ready
            if not display:
                raise RuntimeError("Xvfb did not start")
            yield f":{display}", fbdir / "Xvfb_screen0"
        finally:
            server.terminate()
            server.wait(10)
