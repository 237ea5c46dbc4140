"""`make serve` / `python -m dashboards serve`: check the lake, then run `panel serve` on the explorer
with the image route plugin, bound to 127.0.0.1 unless told otherwise, answering only to the Host names
it was started for (`dashboards.hosts`: the bound address, localhost on loopback, and each --allow-host).

    python -m dashboards serve [--lake lake] [--host 127.0.0.1] [--port 5006] [--allow-host NAME ...] [--show]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from dashboards.hosts import ALLOWED_FLAG, WILDCARDS, HostError, allowed_hosts, is_loopback
from store.lake import Lake
from store.options import OneLineParser, bounded_int

EXPLORER = Path(__file__).with_name("explorer.py")
WARMUP = Path(__file__).with_name("warmup.py")
LAKE_ENV = "DMD2_LENS_LAKE"


class ServeError(ValueError):
    pass


def panel_command(lake: str, host: str, port: int, show: bool = False, allow: Sequence[str] = ()) -> list[str]:
    """The `panel serve` command line for the explorer (no network beyond `host`), run by `dashboards.hosts`
    so that it answers only to the allowed Host names; the websocket origins are the same names (Bokeh's
    origin list cannot spell an IPv6 address: those pages are served, their websocket refused)."""
    allowed = allowed_hosts(host, port, allow)
    command = [sys.executable, "-m", "dashboards.hosts", ALLOWED_FLAG, ",".join(allowed),
               "serve", str(EXPLORER), "--plugins", "dashboards.images",
               "--setup", str(WARMUP), "--address", host, "--port", str(port)]
    for origin in allowed:
        if not origin.startswith("["):
            command += ["--allow-websocket-origin", origin]
    return command + (["--show"] if show else [])


def check_lake(lake: str) -> None:
    from store.catalogue import list_layouts

    if "://" not in lake and not Path(lake).is_dir():
        raise ServeError(f"lake {lake} does not exist; run `make ingest && make embed` (or `make demo`) first")
    if not list_layouts(Lake(lake)):
        raise ServeError(f"lake {lake} has no layouts yet; run `make embed` first")


def check_address(host: str, port: int) -> None:
    """Bind the address and port `panel serve` will listen on, and let go: an address this machine does not
    have, or a port another program holds, is one line now instead of a traceback after the warm-up (the
    same socket option as Tornado's, so a port left in TIME_WAIT by a stopped server is free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        reason = err.strerror or str(err)
        raise ServeError(f"cannot listen on {host}:{port} ({reason}); give --host an address of this machine "
                         "(default 127.0.0.1) or another --port") from None


def warn_exposure(host: str, allow: Sequence[str]) -> None:
    if not is_loopback(host):
        print(f"warning: binding to {host} exposes the lake's images and metadata to every machine that can "
              "reach it; the explorer has no authentication", file=sys.stderr)
    if host in WILDCARDS and not allow:
        print(f"warning: bound to {host or 'every address'}, the server answers only to localhost names; name the "
              "others that browsers use to reach it with --allow-host NAME", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m dashboards", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the explorer on a lake")
    serve.add_argument("--lake", default="lake")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=bounded_int(1, 65535), default=5006, help="port to listen on (default 5006)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME[:PORT]",
                       help="also answer to this Host name (repeatable); a server bound to 0.0.0.0 answers only "
                            "to localhost names and these")
    serve.add_argument("--show", action="store_true", help="open a browser tab")
    args = parser.parse_args(argv)
    try:
        command = panel_command(args.lake, args.host, args.port, args.show, args.allow_host)
        check_lake(args.lake)
        check_address(args.host, args.port)
    except (ServeError, HostError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    warn_exposure(args.host, args.allow_host)
    shown = "127.0.0.1" if args.host in WILDCARDS else f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{args.port}/explorer"
    print(f"serving lake {args.lake} at {url}  (Ctrl-C stops)", flush=True)
    env = dict(os.environ, **{LAKE_ENV: os.path.abspath(args.lake) if "://" not in args.lake else args.lake})
    if shutil.which(command[0]) is None and not os.path.exists(command[0]):
        print("error: python not found to run panel", file=sys.stderr)
        return 2
    os.execve(command[0], command, env)
    return 0
