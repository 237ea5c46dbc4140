"""`python -m dashboards serve`: lake checks, loopback by default, the panel command it runs, and a real
server that answers only to the Host names it was started for (DNS rebinding): every kind of route (the app
page, its websocket, the image route, static files, the 404 fallback) refuses any other Host with a plain
403, Origin matching or not."""

from __future__ import annotations

import base64
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

from dashboards.hosts import REFUSAL
from dashboards.serve import is_loopback, main, panel_command, warn_exposure
from store import connect
from tests.conftest import REPO, Server, server_errors


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dashboards", "serve", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_missing_lake_is_one_clear_line(tmp_path):
    result = serve("--lake", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "does not exist" in result.stderr and "make demo" in result.stderr


def test_lake_without_layouts_is_refused(digits_lake):
    result = serve("--lake", str(digits_lake["lake"]))
    assert result.returncode == 2
    assert "no layouts" in result.stderr and "make embed" in result.stderr


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("0.0.0.0", False), ("192.168.1.4", False), ("example.org", False)])
def test_loopback_detection(host, loopback):
    assert is_loopback(host) == loopback


def test_panel_command_binds_where_told():
    command = panel_command("lake", "127.0.0.1", 5123)
    assert command[command.index("--address") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5123"
    assert "dashboards.images" in command
    assert "--allow-websocket-origin" in command and "*" not in " ".join(command)
    assert command[command.index("--allowed-hosts") + 1] == "127.0.0.1:5123,localhost:5123"
    assert command[command.index("-m") + 1] == "dashboards.hosts"


def test_allow_host_reaches_the_guard_and_the_websocket_origins():
    command = panel_command("lake", "0.0.0.0", 5123, allow=["Box.lan", "[::1]"])
    assert command[command.index("--allowed-hosts") + 1] == "localhost:5123,127.0.0.1:5123,box.lan:5123,[::1]:5123"
    origins = [command[i + 1] for i, arg in enumerate(command) if arg == "--allow-websocket-origin"]
    assert origins == ["localhost:5123", "127.0.0.1:5123", "box.lan:5123"]   # Bokeh cannot spell [::1]
    assert "0.0.0.0:5123" not in " ".join(command)


def test_a_wildcard_allow_host_is_refused_before_anything_runs(tmp_path):
    result = serve("--lake", str(tmp_path / "nowhere"), "--allow-host", "*")
    assert result.returncode == 2
    assert "not a host name" in result.stderr and result.stderr.strip().count("\n") == 0


def test_binding_every_address_without_names_warns(capsys):
    warn_exposure("0.0.0.0", [])
    assert "answers only to localhost names" in capsys.readouterr().err
    warn_exposure("0.0.0.0", ["box.lan"])
    assert "answers only" not in capsys.readouterr().err


def test_binding_beyond_this_machine_warns(capsys):
    warn_exposure("192.168.1.4", [])
    line = capsys.readouterr().err
    assert line.startswith("warning: binding to 192.168.1.4 exposes") and "no authentication" in line
    assert line.count("\n") == 1


def test_an_address_this_machine_lacks_is_one_line_before_anything_starts(embedded_lake, capsys):
    # 192.0.2.1 is a documentation address no interface has
    assert main(["serve", "--lake", str(embedded_lake["lake"]), "--host", "192.0.2.1", "--port", "5999"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot listen on 192.0.2.1:5999 (") and "--host" in err and err.count("\n") == 1


def test_a_port_another_program_holds_is_one_line(embedded_lake, capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["serve", "--lake", str(embedded_lake["lake"]), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port} (Address already in use)") and "--port" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("port", ["0", "-1", "65536", "70000", "5e3", "http"])
def test_a_port_outside_1_to_65535_is_one_line(embedded_lake, capsys, port):
    with pytest.raises(SystemExit) as ended:
        main(["serve", "--lake", str(embedded_lake["lake"]), "--port", port])
    err = capsys.readouterr().err
    assert ended.value.code == 2 and err.startswith("error: --port ") and port in err and "65,535" in err
    assert err.count("\n") == 1


# --- the real server and the Host header --------------------------------------------------------------

TRUSTED = "trusted.example"


@pytest.fixture(scope="module")
def served(embedded_lake, tmp_path_factory):
    """`python -m dashboards serve --allow-host trusted.example` on a copy of the embedded lake, and paths
    of each kind of route (a real sample's image)."""
    lake = tmp_path_factory.mktemp("hosts-served") / "lake"
    shutil.copytree(embedded_lake["lake"], lake)
    con = connect(lake)
    run_id, chunk, sample_id = con.execute("SELECT run_id, chunk, sample_id FROM samples LIMIT 1").fetchone()
    con.close()
    server = Server(lake, args=("--allow-host", TRUSTED))
    yield {"server": server, "port": server.port, "image": f"/image/{run_id}/{chunk}/{sample_id}"}
    errors = server_errors(server.output())
    server.stop()
    assert errors == []


def get(port: int, path: str, host: str, origin: str | None = None) -> tuple[int, bytes]:
    """GET `path` from the server on 127.0.0.1:`port` with this Host header (as a rebound name sends it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers={"Host": host, **({"Origin": origin} if origin else {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def upgrade(port: int, host: str, origin: str, token: str | None = None) -> tuple[str, bytes]:
    """A websocket handshake on /explorer/ws over a raw socket: the status line and the body."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET /explorer/ws HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", f"Origin: {origin}"]
    lines += [f"Sec-WebSocket-Protocol: bokeh, {token}"] if token else []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        while length and len(body) < int(length.group(1)):
            body += sock.recv(65536)
        return head.split(b"\r\n")[0].decode(), body


def session_token(port: int, host: str) -> str:
    status, page = get(port, "/explorer", host)
    assert status == 200
    return re.search(rb'"token":\s*"([^"]+)"', page).group(1).decode()


def route_paths(served) -> list[str]:
    return ["/explorer", served["image"], served["image"] + "/thumb", "/static/js/bokeh.min.js",
            "/explorer/autoload.js?bokeh-autoload-element=x", "/favicon.ico", "/no-such-route"]


@pytest.mark.parametrize("name", ["evil.example", "127.0.0.1.evil.example", "localhost.", "127.0.0.2", TRUSTED + "s"])
def test_every_route_refuses_a_host_it_was_not_started_for(served, name):
    port = served["port"]
    for path in route_paths(served):
        for host in (f"{name}:{port}", name):
            assert get(port, path, host) == (403, REFUSAL.encode()), (path, host)
    assert upgrade(port, f"{name}:{port}", f"http://{name}:{port}")[0] == "HTTP/1.1 403 Forbidden"


def test_the_allowed_names_at_another_port_are_refused(served):
    port = served["port"]
    for host in (f"127.0.0.1:{port + 1}", f"localhost:{port + 1}", "localhost", f"{TRUSTED}:80"):
        assert get(port, "/explorer", host) == (403, REFUSAL.encode()), host
        assert get(port, served["image"], host)[0] == 403, host


def test_dns_rebinding_with_matching_origin_is_refused(served):
    """The attack: a page of evil.example, its name rebound to 127.0.0.1, on the server's port: Host and Origin
    match each other, and name the attacker's site. Nothing answers, not even with a valid session token."""
    port = served["port"]
    host, origin = f"evil.example:{port}", f"http://evil.example:{port}"
    token = session_token(port, f"127.0.0.1:{port}")
    for path in route_paths(served):
        assert get(port, path, host, origin) == (403, REFUSAL.encode()), path
    assert upgrade(port, host, origin, token) == ("HTTP/1.1 403 Forbidden", REFUSAL.encode())
    assert "refused a request for Host 'evil.example:" in served["server"].output()


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost", "LocalHost", TRUSTED])
def test_the_names_it_was_started_for_are_served(served, name):
    port = served["port"]
    host, origin = f"{name}:{port}", f"http://{name.lower()}:{port}"
    status, page = get(port, "/explorer", host)
    assert status == 200 and b"bokeh" in page.lower()
    image = get(port, served["image"], host)
    assert image[0] == 200 and image[1].startswith(b"\x89PNG")
    assert get(port, "/static/js/bokeh.min.js", host)[0] == 200
    assert get(port, "/no-such-route", host)[0] == 404
    assert upgrade(port, host, origin, session_token(port, host))[0] == "HTTP/1.1 101 Switching Protocols"
