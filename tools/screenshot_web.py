"""Take a screenshot of the browser view (the README picture).

    python tools/screenshot_web.py --out docs/web-view.png -- --demo --realtime

Starts ``main.py --headless --serve 127.0.0.1:PORT`` with the arguments after
``--``, opens the page in Debian's headless chromium (tools/browser.py), adds
``--add`` prompts through the page's own input, waits ``--wait`` seconds, writes
the screenshot and stops the app with SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.browser import chromium, missing  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_frames(driver, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while driver.execute_script("return window.realtimeStats && window.realtimeStats.frames") \
            in (None, 0):
        if time.monotonic() > deadline:
            raise RuntimeError("no frame reached the page")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wait", type=float, default=8.0, help="seconds after the first frame")
    parser.add_argument("--add", action="append", default=[], metavar="PROMPT",
                        help="type this prompt into the page (repeatable)")
    parser.add_argument("--size", default="1280x720", help="browser window, WxH")
    parser.add_argument("app_args", nargs="*", help="arguments for main.py (after --)")
    args = parser.parse_args()
    if missing():
        sys.exit(f"error: {missing()}")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    port = free_port()
    child = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--headless", "--serve",
                              f"127.0.0.1:{port}", *args.app_args], cwd=ROOT)
    width, height = (int(v) for v in args.size.split("x"))
    try:
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            driver = chromium(profile, width, height)
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        driver.get(f"http://127.0.0.1:{port}/")
                        break
                    except Exception:
                        if time.monotonic() > deadline or child.poll() is not None:
                            raise
                        time.sleep(0.5)
                wait_for_frames(driver, 120)
                for prompt in args.add:
                    field = driver.find_element(By.ID, "prompt")
                    field.send_keys(prompt)
                    field.send_keys(Keys.ENTER)
                    time.sleep(1.0)
                time.sleep(args.wait)
                driver.save_screenshot(str(args.out))
            finally:
                driver.quit()
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
