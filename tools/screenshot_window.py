"""Take a screenshot of the live window on a virtual screen (the README picture).

    python tools/screenshot_window.py --out docs/demo-window.png -- --demo
    python tools/screenshot_window.py --wait 20 --out shot.png -- --source clip.mp4 --prompt "a dog"

Everything after ``--`` goes to ``main.py`` unchanged.  The app runs in its
real OpenCV window on a private Xvfb screen (Debian package ``xvfb``); after
``--wait`` seconds the screen is read, cropped to the window, written as PNG,
and the app is stopped with SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.xvfb import read_xwd, virtual_screen  # noqa: E402


def crop_to_content(screen: np.ndarray) -> np.ndarray:
    """The screen without the black desktop around the window."""
    ys, xs = np.nonzero(screen.max(axis=-1) > 0)
    if len(xs) == 0:
        raise RuntimeError("the screen is empty: the window did not appear")
    return screen[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def screenshot(app_args: list[str], wait_s: float, screen_px: tuple[int, int]) -> np.ndarray:
    with virtual_screen(*screen_px) as (display, framebuffer):
        env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb")
        child = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *app_args], cwd=ROOT,
                                 env=env, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(wait_s)
            if child.poll() is not None:
                raise RuntimeError(f"main.py exited early:\n{child.communicate()[1]}")
            image = crop_to_content(read_xwd(framebuffer))
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                child.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/demo-window.png", help="PNG to write")
    parser.add_argument("--wait", type=float, default=15.0,
                        help="seconds between starting the app and the screenshot")
    parser.add_argument("--screen", default="1024x768", help="virtual screen size WxH")
    parser.add_argument("app_args", nargs="*", help="arguments for main.py (after --)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.screen.lower().split("x"))
    try:
        image = screenshot(args.app_args or ["--demo"], args.wait, (width, height))
    except (RuntimeError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    cv2.imwrite(args.out, image)
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]})")


if __name__ == "__main__":
    main()
