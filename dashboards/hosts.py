"""The server answers only to the host names it was started for (against DNS rebinding).

A page on another site whose name is rebound to 127.0.0.1 reaches the explorer with matching `Host` and
`Origin` headers, so origin checks alone let it read images, save selections and generate. Every request
whose `Host` header (name and port) is not allowed gets a plain 403 before any handler runs: the check
sits in the Tornado application's `find_handler`, which the HTTP server calls for every request before
it consults the routing table, so it covers the app page, its websocket, static and autoload routes, the
image route, the 404 fallback and any route Bokeh or Panel adds later (`add_handlers` included).

    python -m dashboards.hosts --allowed-hosts 127.0.0.1:5006,localhost:5006 serve dashboards/explorer.py ...

runs `panel serve ...` in this process with the check installed (`python -m dashboards serve` builds
that command; see `allowed_hosts` for which names are allowed).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

from tornado.httputil import HTTPServerRequest
from tornado.web import RequestHandler

ALLOWED_FLAG = "--allowed-hosts"
WILDCARDS = ("", "0.0.0.0", "::")
LOOPBACK_NAMES = ("localhost", "127.0.0.1")
DEFAULT_PORTS = {"http": 80, "https": 443}
REFUSAL = "403 Forbidden: this server does not answer to that Host name (start it with --allow-host NAME)\n"
_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")

log = logging.getLogger(__name__)


class HostError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(name: str) -> str | None:
    """`name` as it appears in a Host header (lowercase, IPv6 in brackets), or None if it is not a name."""
    name = name.strip().lower()
    bracketed = name.startswith("[") and name.endswith("]")
    try:
        address = ipaddress.ip_address(name[1:-1] if bracketed else name)
    except ValueError:
        return name if not bracketed and _NAME.fullmatch(name) else None
    if address.version == 6:
        return f"[{address.compressed}]"
    return None if bracketed else address.compressed


def split_host(value: str) -> tuple[str, str | None]:
    """("name", "port" or None) of `name`, `name:port`, `[v6]` or `[v6]:port` (a bare IPv6 address: no port)."""
    value = value.strip()
    if value.startswith("[") and "]" in value:
        name, _, rest = value.partition("]")
        if not rest:
            return name + "]", None
        return name + "]", rest[1:] if rest.startswith(":") else ""   # "" is no port: refused
    if value.count(":") == 1:
        name, port = value.split(":")
        return name, port
    return value, None


def host_key(value: str, default_port: int) -> str | None:
    """The canonical `name:port` of a Host header value (or of an --allow-host NAME[:PORT]), None if malformed."""
    name, port = split_host(value)
    canonical = host_name(name)
    if canonical is None or (port is not None and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536)):
        return None
    return f"{canonical}:{int(port) if port else default_port}"


def allowed_hosts(address: str, port: int, extra: Iterable[str] = ()) -> list[str]:
    """The Host values (`name:port`) a server bound to `address`:`port` answers to.

    The bound address itself; on loopback also `localhost` and `127.0.0.1` (and `[::1]` when bound to
    ::1 or localhost). A wildcard bind (0.0.0.0, ::) is no name a browser sends, so it allows only the
    loopback names: other machines reach it by the names given in `extra`. Each of `extra` is NAME (at
    `port`) or NAME:PORT (for a proxy in front); wildcards are refused.
    """
    names = [] if address in WILDCARDS else [address]
    if address in WILDCARDS or is_loopback(address):
        names += [*LOOPBACK_NAMES, *(["[::1]"] if address in ("::1", "localhost", "::") else [])]
    keys = [host_key(name, port) for name in names]
    for name in extra:
        key = host_key(name, port)
        if key is None:
            raise HostError(f"--allow-host {name!r} is not a host name or address (NAME or NAME:PORT, no wildcards)")
        keys.append(key)
    return list(dict.fromkeys(k for k in keys if k is not None))


def request_allowed(request: HTTPServerRequest, allowed: frozenset[str]) -> bool:
    """Whether the request's Host header names an allowed host (tornado answers 400 to several; an HTTP/1.0
    request without one is refused)."""
    host = request.headers.get("Host")
    return host is not None and host_key(host, DEFAULT_PORTS.get(request.protocol, 80)) in allowed


class _AnyMethod:
    def __contains__(self, method: object) -> bool:
        return True


class ForbiddenHost(RequestHandler):
    """The answer to a request for a Host the server does not answer to: 403, plain text, for any method."""

    SUPPORTED_METHODS = _AnyMethod()  # type: ignore[assignment]

    def initialize(self, allowed: frozenset[str] = frozenset()) -> None:
        self.allowed = allowed

    def check_xsrf_cookie(self) -> None:
        pass

    def prepare(self) -> None:
        log.warning("refused a request for Host %r; this server answers to %s (more with --allow-host)",
                    self.request.headers.get("Host"), ", ".join(sorted(self.allowed)) or "no name")
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(REFUSAL)


FindHandler = Callable[..., Any]


def guarded(find_handler: FindHandler, allowed: Iterable[str]) -> FindHandler:
    """`find_handler` of a tornado Application, refusing with `ForbiddenHost` a request whose Host is not
    in `allowed` before the routing table is consulted."""
    hosts = frozenset(allowed)

    def find_allowed_handler(self: Any, request: HTTPServerRequest, **kwargs: Any) -> Any:
        if not request_allowed(request, hosts):
            return self.get_handler_delegate(request, ForbiddenHost, {"allowed": hosts})
        return find_handler(self, request, **kwargs)

    return find_allowed_handler


def install(allowed: Iterable[str]) -> None:
    """Guard every Bokeh server application this process creates (Panel's `Server` builds a BokehTornado)."""
    from bokeh.server.tornado import BokehTornado

    BokehTornado.find_handler = guarded(BokehTornado.find_handler, allowed)  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    """`--allowed-hosts A,B <panel arguments>`: install the guard, then run Panel's command line."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[0] != ALLOWED_FLAG or not argv[1]:
        raise SystemExit(f"usage: python -m dashboards.hosts {ALLOWED_FLAG} HOST:PORT[,...] serve APP ...")
    install(argv[1].split(","))
    from panel.command import main as panel_main

    sys.argv = ["panel", *argv[2:]]
    panel_main()


if __name__ == "__main__":
    main()
