"""The browser view's defences, checked before any handler runs.

- Host: only the names the server is meant to be reached by (its address,
  localhost, loopback, serve.allowed_hosts; any IP literal and this machine's
  name when it listens on every interface), so a page on another site cannot
  reach it through DNS rebinding.
- Token: required when one is set (always when listening beyond loopback):
  from ``?token=``, an ``Authorization: Bearer`` header or the HttpOnly
  SameSite cookie that the first request with a good token sets; compared in
  constant time.
- Origin: requests that change something (POST) and the websocket must come
  from the server's own origin when the browser says where they come from.
- Size: request bodies (and websocket messages) at most MAX_BODY_BYTES.
- Rate: prompt changes through a token bucket (:class:`RateLimit`).
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
import time
from typing import Callable
from urllib.parse import urlsplit

from ..config import LOOPBACK_HOSTS, ServeConfig

MAX_BODY_BYTES = 16 * 1024
COOKIE = "realtime_token"
UNGUARDED_PATHS = ("/healthz",)     # liveness probes carry no token and reveal nothing
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def host_name(host_header: str) -> str:
    """'Example.org:8080' -> 'example.org'; '[::1]:80' -> '::1'."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """Decides whether a request may go on; `problem` names the status and the reason."""

    def __init__(self, config: ServeConfig, token: str) -> None:
        self.token = token
        bound = config.host.lower()
        self.any_interface = bound in WILDCARD_HOSTS
        names = {*LOOPBACK_HOSTS, *(h.lower() for h in config.allowed_hosts)}
        if not self.any_interface:
            names.add(bound)
        else:
            names.update({socket.gethostname().lower(), socket.getfqdn().lower()})
        self.names = frozenset(names)

    def host_allowed(self, host_header: str | None) -> bool:
        name = host_name(host_header or "")
        if not name:
            return False
        return name in self.names or (self.any_interface and _is_ip(name))

    def token_ok(self, candidates: list[str]) -> bool:
        if not self.token:
            return True
        expected = self.token.encode()
        return any(hmac.compare_digest(c.encode(), expected) for c in candidates if c)

    def origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        """No Origin (a script, curl): allowed; otherwise it must be this very server."""
        if origin is None:
            return True
        parts = urlsplit(origin)
        return (parts.scheme in ("http", "https") and bool(parts.netloc)
                and parts.netloc.lower() == (host_header or "").lower()
                and self.host_allowed(parts.netloc))

    def problem(self, *, path: str, method: str, host: str | None, origin: str | None,
                tokens: list[str], content_length: int | None,
                websocket: bool) -> tuple[int, str] | None:
        """(status, reason) when the request must be refused, else None."""
        if not self.host_allowed(host):
            return 403, f"Host {host!r} is not a name this server answers to"
        if path not in UNGUARDED_PATHS and not self.token_ok(tokens):
            return 401, "a valid token is required (open the URL with ?token= printed at start)"
        changes = websocket or method not in ("GET", "HEAD", "OPTIONS")
        if changes and not self.origin_allowed(origin, host):
            return 403, f"Origin {origin!r} may not change this server"
        if content_length is not None and content_length > MAX_BODY_BYTES:
            return 413, f"request body over {MAX_BODY_BYTES} bytes"
        return None


class RateLimit:
    """A token bucket: `burst` events at once, refilled at `per_s` a second."""

    def __init__(self, per_s: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s, self.burst, self.clock = per_s, burst, clock
        self._tokens, self._at = float(burst), clock()

    def wait_s(self) -> float:
        """0 when an event may happen now (and counts it); else the seconds to wait."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.per_s
