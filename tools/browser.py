"""Debian's chromium, driven by selenium through the system chromedriver.

Never a downloaded browser: the packages ``chromium`` and ``chromium-driver``
(/usr/bin/chromium, /usr/bin/chromedriver).  Used by the browser-view test,
``tools/screenshot_web.py`` (the README picture) and ``tools/bench_web.py``.
"""

from __future__ import annotations

from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def missing() -> str:
    """Why a browser cannot be driven here ("" when it can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file():
            return f"{path} is missing (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is missing (pip install -r requirements-web.txt)"
    return ""


def chromium(user_data_dir: str, width: int = 1280, height: int = 800):
    """A headless chromium with a fresh profile in `user_data_dir`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
