"""`make serve` / `python -m dashboards serve`: check the lake, then run `panel serve` on the explorer
with the image route plugin, bound to 127.0.0.1 unless told otherwise.

    python -m dashboards serve [--lake lake] [--host 127.0.0.1] [--port 5006] [--show]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import sys
from pathlib import Path

from store.lake import Lake

EXPLORER = Path(__file__).with_name("explorer.py")
WARMUP = Path(__file__).with_name("warmup.py")
LAKE_ENV = "DMD2_LENS_LAKE"


class ServeError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def panel_command(lake: str, host: str, port: int, show: bool = False) -> list[str]:
    """The `panel serve` command line for the explorer (no network beyond `host`)."""
    origins = [f"{host}:{port}"] + ([f"localhost:{port}"] if host == "127.0.0.1" else [])
    command = [sys.executable, "-m", "panel", "serve", str(EXPLORER), "--plugins", "dashboards.images",
               "--setup", str(WARMUP), "--address", host, "--port", str(port)]
    for origin in origins:
        command += ["--allow-websocket-origin", origin]
    return command + (["--show"] if show else [])


def check_lake(lake: str) -> None:
    from store.catalogue import list_layouts

    if "://" not in lake and not Path(lake).is_dir():
        raise ServeError(f"lake {lake} does not exist; run `make ingest && make embed` (or `make demo`) first")
    if not list_layouts(Lake(lake)):
        raise ServeError(f"lake {lake} has no layouts yet; run `make embed` first")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the explorer on a lake")
    serve.add_argument("--lake", default="lake")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=5006)
    serve.add_argument("--show", action="store_true", help="open a browser tab")
    args = parser.parse_args(argv)
    try:
        check_lake(args.lake)
    except ServeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(f"warning: binding to {args.host} exposes the lake's images and metadata to every machine that can "
              "reach it; the explorer has no authentication", file=sys.stderr)
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/explorer"
    print(f"serving lake {args.lake} at {url}  (Ctrl-C stops)", flush=True)
    env = dict(os.environ, **{LAKE_ENV: os.path.abspath(args.lake) if "://" not in args.lake else args.lake})
    command = panel_command(args.lake, args.host, args.port, args.show)
    if shutil.which(command[0]) is None and not os.path.exists(command[0]):
        print("error: python not found to run panel", file=sys.stderr)
        return 2
    os.execve(command[0], command, env)
    return 0
