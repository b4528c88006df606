"""The kiosk page in a real browser: Debian's chromium driven by selenium through the system
chromedriver (never a downloaded browser).  The page loads, the stream's pixels change,
and a prompt typed into the page with Enter becomes the active prompt set.

Skipped when chromium, chromedriver or selenium are missing, unless
REALTIME_REQUIRE_BROWSER=1 (CI sets it), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from conftest import free_port, pipeline_threads
from helpers import RunningApp, serve_config
from tools.browser import chromium, missing

MISSING = missing()
if not MISSING:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        MISSING = "aiohttp is missing (pip install -r requirements-web.txt)"
if MISSING and os.environ.get("REALTIME_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"REALTIME_REQUIRE_BROWSER=1 but {MISSING}")
pytestmark = pytest.mark.skipif(bool(MISSING), reason=MISSING)


CANVAS_SUM = """
const canvas = document.getElementById('view');
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let sum = 0;
for (let i = 0; i < data.length; i += 4) sum += data[i] * (i % 9973 + 1);
return [window.realtimeStats.frames, sum, canvas.width, canvas.height];
"""


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def texts(driver, selector: str) -> list[str]:
    """Texts of the matching elements, read in one script (the page redraws its lists)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent);",
        selector)


def chips(driver) -> list[str]:
    return texts(driver, "#chips li span")


@pytest.mark.slow
def test_the_page_streams_and_a_typed_prompt_becomes_active(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    port = free_port()
    with RunningApp(serve_config(port), size=(320, 240)) as running, \
            tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        driver = chromium(profile)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            first = wait_until(lambda: (lambda r: r if r[0] > 0 else None)(
                driver.execute_script(CANVAS_SUM)), 20, "the first frame on the canvas")
            assert first[2:] == [320, 240]
            time.sleep(0.5)
            second = driver.execute_script(CANVAS_SUM)
            assert second[0] > first[0] and second[1] != first[1]    # the pixels changed
            wait_until(lambda: chips(driver) == ["a red circle"], 10, "the prompt chips")
            field = driver.find_element(By.ID, "prompt")
            # ChromeDriver types only characters of the Basic Multilingual Plane: the
            # emoji goes in as a paste would, the rest as keystrokes.
            field.send_keys("a dog: brown ")
            driver.execute_script("arguments[0].value += arguments[1];"
                                  "arguments[0].dispatchEvent(new Event('input'));",
                                  field, "🐕")
            field.send_keys(Keys.END, Keys.ENTER)
            wait_until(lambda: chips(driver) == ["a red circle", "a dog: brown 🐕"], 5,
                       "the typed prompt among the active prompts")
            assert running.factory.built[0].labels == ("a red circle", "a dog: brown 🐕")
            detection = wait_until(lambda: texts(driver, "#detections li span"), 5,
                                   "the detections list")
            assert detection[:2] == ["a red circle", "87%"]
            status = driver.find_element(By.ID, "status").text
            assert "capture" in status and "paint" in status and "1 viewer" in status
            driver.save_screenshot(str(tmp_path / "page.png"))
        finally:
            driver.quit()
    assert running.code == 0 and pipeline_threads() == []
