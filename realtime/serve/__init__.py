"""The browser view (``--serve [HOST:]PORT``): the live annotated stream, the prompts,
the threshold and REST endpoints, served by aiohttp on its own thread.

aiohttp is an optional extra (requirements-web.txt); it is imported only when
the view is switched on, and its absence is a one-line input error.
"""

from __future__ import annotations

from ..config import ConfigError, ServeConfig
from ..control import PromptController, ViewControl

INSTALL_HINT = "pip install -r requirements-web.txt"


def start_web(config: ServeConfig, prompts: PromptController, view: ViewControl):
    """A started :class:`~realtime.serve.server.WebServer`; ConfigError when aiohttp is
    missing or the address cannot be bound."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise ConfigError(f"serve.address: the browser view needs aiohttp: {INSTALL_HINT}"
                          ) from None
    from .server import WebServer

    return WebServer(config, prompts, view).start()
