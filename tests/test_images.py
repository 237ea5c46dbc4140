"""dashboards.images: the image route accepts only a lake run id and integer chunk/sample numbers, and a real
tornado server on the embedded lake answers with the sample's exact bytes, or 404."""

from __future__ import annotations

import asyncio
import io
import threading
import urllib.error
import urllib.request

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.routing import PathMatches
from tornado.web import Application

from dashboards.images import LAKE_ENV, ROUTES
from ingest.writer import encode_png, encode_thumbnail
from store import connect
from store.lake import SAMPLES_SCHEMA, Lake, samples_parts
from store.maps import sample_image

PATTERN = ROUTES[0][0]


def matches(path: str):
    """The route's groups for a request path, matched as tornado matches it (None: refused)."""
    found = PathMatches(PATTERN).regex.match(path)
    return found.groups() if found else None


@pytest.mark.parametrize("path,groups", [
    ("/image/run-1/0/5", ("run-1", "0", "5", None)),
    ("/image/run-1/0/5/thumb", ("run-1", "0", "5", "/thumb")),
    ("/image/a.b_c-D9/123456789/123456789012345678", ("a.b_c-D9", "123456789", "123456789012345678", None)),
    ("/image/" + "r" * 128 + "/0/0", ("r" * 128, "0", "0", None)),
])
def test_route_accepts(path, groups):
    assert matches(path) == groups


@pytest.mark.parametrize("path", [
    "/image/../x/0/0", "/image/./0/0", "/image/..%2Fx/0/0", "/image/a%2F..%2Fb/0/0", "/image/a/../b/0/0",
    "/image/run/0/x", "/image/run/x/0", "/image/run/0/-1", "/image/run/-1/0", "/image/run/0/1.5", "/image/run/0/5/thumbnail",
    "/image/-run/0/0", "/image/.run/0/0", "/image/_run/0/0", "/image//0/0", "/image/run/0/0/",
    "/image/run/1234567890/0",            # chunk: at most 9 digits
    "/image/run/0/1234567890123456789",   # sample: at most 18 digits
    "/image/" + "r" * 129 + "/0/0",       # run id: at most 128 characters
    "/image/run/0/5/thumb/extra", "/images/run/0/5", "/x/image/run/0/5",
])
def test_route_refuses(path):
    assert matches(path) is None


class ThreadServer:
    """A tornado HTTPServer serving ROUTES on 127.0.0.1 (ephemeral port), its IOLoop in a thread."""

    def __init__(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            sockets = bind_sockets(0, "127.0.0.1")
            self.port = sockets[0].getsockname()[1]
            server = HTTPServer(Application(ROUTES))
            server.add_sockets(sockets)
            ready.set()
            self.loop.run_forever()
            server.stop()
            self.loop.run_until_complete(server.close_all_connections())
            self.loop.close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(10), "server did not start"

    def get(self, path: str) -> tuple[int, dict, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture()
def served(embedded_lake, monkeypatch):
    monkeypatch.setenv(LAKE_ENV, str(embedded_lake["lake"]))
    server = ThreadServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def large_images(tmp_path_factory) -> dict:
    """A lake of one run whose images are large enough to have WebP thumbnails (the digits are not),
    written as ingest writes samples: 96x96 PNGs, thumbnails by ingest.writer.encode_thumbnail."""
    lake = Lake(tmp_path_factory.mktemp("large-images") / "lake")
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(3)]
    rows = [{"run_id": "big", "sample_id": i, "chunk": 0, "seed": i, "class_id": None, "class_name": None,
             "prompt": f"prompt {i}", "tags": [], "steps": 1, "width": 96, "height": 96,
             "image_png": encode_png(p), "thumbnail": encode_thumbnail(p)} for i, p in enumerate(pixels)]
    assert all(r["thumbnail"] for r in rows)
    lake.write_parquet(pa.Table.from_pylist(rows, schema=SAMPLES_SCHEMA), *samples_parts("big", 0))
    return {"lake": lake.root, "rows": rows}


def test_serves_webp_thumbnail_apart_from_the_image(large_images, monkeypatch):
    monkeypatch.setenv(LAKE_ENV, str(large_images["lake"]))
    server = ThreadServer()
    try:
        for row in large_images["rows"][1:]:
            status, headers, body = server.get(f"/image/big/0/{row['sample_id']}/thumb")
            assert (status, headers["Content-Type"]) == (200, "image/webp")
            assert body == row["thumbnail"]
            assert Image.open(io.BytesIO(body)).format == "WEBP"
            status, headers, body = server.get(f"/image/big/0/{row['sample_id']}")
            assert (status, headers["Content-Type"]) == (200, "image/png")
            assert body == row["image_png"]
            assert Image.open(io.BytesIO(body)).size == (96, 96)
        assert server.get("/image/big/0/3/thumb")[0] == 404
    finally:
        server.stop()


@pytest.fixture(scope="module")
def samples(embedded_lake):
    con = connect(embedded_lake["lake"])
    rows = con.execute("SELECT run_id, chunk, sample_id FROM samples ORDER BY chunk, sample_id").fetchall()
    con.close()
    return rows


def test_serves_exact_image_and_thumbnail_bytes(served, samples, embedded_lake):
    lake = embedded_lake["lake"]
    chunks = sorted({chunk for _, chunk, _ in samples})
    assert len(chunks) >= 2
    # the first sample, and one of a later chunk (the chunk in the URL must be used)
    for run_id, chunk, sample_id in (samples[0], next(s for s in samples if s[1] == chunks[-1])):
        for suffix, thumbnail in (("/thumb", True), ("", False)):
            expected, mime = sample_image(lake, run_id, chunk, sample_id, thumbnail=thumbnail)
            status, headers, body = served.get(f"/image/{run_id}/{chunk}/{sample_id}{suffix}")
            assert status == 200
            assert headers["Content-Type"] == mime and mime in ("image/png", "image/webp")
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert body == expected and len(body) > 50
            assert body.startswith(b"\x89PNG" if mime == "image/png" else b"RIFF")
    # two different samples are two different images
    first = served.get(f"/image/{samples[0][0]}/{samples[0][1]}/{samples[0][2]}")[2]
    second = served.get(f"/image/{samples[1][0]}/{samples[1][1]}/{samples[1][2]}")[2]
    assert first != second


def test_missing_or_refused_is_404(served, samples):
    run_id, chunk, sample_id = samples[-1]
    for path in (f"/image/{run_id}/{chunk}/{sample_id + 100000}",     # no such sample
                 f"/image/{run_id}/{chunk}/{sample_id + 100000}/thumb",
                 f"/image/{run_id}/{chunk + 50}/{sample_id}",          # no such chunk
                 f"/image/{run_id}/0/{sample_id}",                     # the sample is in another chunk
                 "/image/no-such-run/0/0",
                 f"/image/../{run_id}/0/0", f"/image/{run_id}/0/x"):
        status, _, body = served.get(path)
        assert status == 404, path
        assert not body.startswith(b"\x89PNG"), path
