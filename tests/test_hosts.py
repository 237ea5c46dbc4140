"""dashboards.hosts: which Host values a server answers to, and the guard in `find_handler` that refuses the
others before routing, checked on every route of a real Panel server's tornado application (Panel's and
Bokeh's routes, the image route and one added after the server was built). The real `python -m dashboards
serve` process is checked over HTTP in tests/test_serve.py."""

from __future__ import annotations

import types

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.routing import Router
from tornado.web import RequestHandler

from dashboards.hosts import ForbiddenHost, HostError, allowed_hosts, guarded, host_key, main
from dashboards.images import ROUTES


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1", ["127.0.0.1:5006", "localhost:5006"]),
    ("localhost", ["localhost:5006", "127.0.0.1:5006", "[::1]:5006"]),
    ("::1", ["[::1]:5006", "localhost:5006", "127.0.0.1:5006"]),
    ("0.0.0.0", ["localhost:5006", "127.0.0.1:5006"]),           # a wildcard is no Host: loopback names only
    ("192.168.1.4", ["192.168.1.4:5006"]),
    ("MyBox.lan", ["mybox.lan:5006"]),
])
def test_allowed_hosts_of_a_bound_address(address, expected):
    assert allowed_hosts(address, 5006) == expected


def test_allow_host_adds_names_at_the_port_or_their_own():
    assert allowed_hosts("0.0.0.0", 5006, ["Box.lan", "example.org:443", "fe80::1", "10.0.0.2", "box.lan"]) == [
        "localhost:5006", "127.0.0.1:5006", "box.lan:5006", "example.org:443", "[fe80::1]:5006", "10.0.0.2:5006"]


@pytest.mark.parametrize("name", ["*", "", "*.example.org", "a b", "evil.example:x", "host:0", "host:70000",
                                  "[127.0.0.1]", "http://host", "host/path"])
def test_allow_host_refuses_what_is_not_a_name(name):
    with pytest.raises(HostError, match="not a host name"):
        allowed_hosts("127.0.0.1", 5006, [name])


@pytest.mark.parametrize("header, key", [
    ("LocalHost:5006", "localhost:5006"), ("localhost", "localhost:80"), ("[::1]:5006", "[::1]:5006"),
    ("127.0.0.1:05006", "127.0.0.1:5006"), ("evil.example:5006", "evil.example:5006"),
    ("127.0.0.1:5006:1", None), ("[::1]x", None), ("[::1", None), ("[::1]:", None), ("localhost:", None),
    ("localhost:\u0663", None),
    ("a,b:5006", None), ("", None),
])
def test_host_key(header, key):
    assert host_key(header, 80) == key


def test_launcher_without_allowed_hosts_is_a_usage_error():
    with pytest.raises(SystemExit, match="usage"):
        main(["serve", "dashboards/explorer.py"])


class Later(RequestHandler):
    def get(self) -> None:
        self.write("later")


# One path per route of the server (a new route that none of these reaches fails the coverage test).
PATHS = ["/favicon.ico", "/explorer/ws", "/explorer/metadata", "/explorer/autoload.js", "/explorer",
         "/explorer/static/js/bokeh.min.js", "/image/run-1/0/5/thumb", "/components/x.js", "/",
         "/static/extensions/panel/x.js", "/static/js/bokeh.min.js", "/later"]


def leaves(router: Router) -> list:
    """Every rule of a router whose target is a handler, nested routers (`add_handlers`) included."""
    found = []
    for rule in router.rules:
        found += leaves(rule.target) if isinstance(rule.target, Router) else [rule]
    return found


def request(path: str, host: str | None) -> HTTPServerRequest:
    """A GET of `path` for `host` (None: an HTTP/1.0 request without Host, the one kind tornado accepts)."""
    headers = HTTPHeaders({"Host": host} if host is not None else {})
    version = "HTTP/1.1" if host is not None else "HTTP/1.0"
    return HTTPServerRequest(start_line=RequestStartLine("GET", path, version), headers=headers)


@pytest.fixture(scope="module")
def application():
    """The tornado application of a real Panel server with the image route, guarded for 127.0.0.1:5006 (this
    instance only), and one route added after it was built."""
    import panel as pn
    from panel.io.server import get_server

    server = get_server({"explorer": lambda: pn.pane.Markdown("x")}, port=0, address="127.0.0.1", start=False,
                        extra_patterns=list(ROUTES))
    app = server._tornado
    app.find_handler = types.MethodType(guarded(type(app).find_handler, allowed_hosts("127.0.0.1", 5006)), app)
    app.add_handlers(r".*", [(r"/later", Later)])
    yield app
    server._http.stop()


def test_the_paths_reach_every_route(application):
    rules = leaves(application.default_router)
    assert len(rules) >= len(PATHS)
    unreached = [rule for rule in rules if not any(rule.matcher.match(request(p, "x")) is not None for p in PATHS)]
    assert unreached == []


@pytest.mark.parametrize("path", [*PATHS, "/no-such-route"])
def test_every_route_refuses_a_foreign_host_before_routing(application, path):
    for host in ("evil.example:5006", "127.0.0.1:5007", "evil.example", "127.0.0.1", "localhost.:5006", None):
        assert application.find_handler(request(path, host)).handler_class is ForbiddenHost, host
    for host in ("127.0.0.1:5006", "localhost:5006", "LOCALHOST:5006"):
        assert application.find_handler(request(path, host)).handler_class is not ForbiddenHost, host


def test_the_later_route_is_routed_when_the_host_is_allowed(application):
    assert application.find_handler(request("/later", "localhost:5006")).handler_class is Later
