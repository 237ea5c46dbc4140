"""`panel serve --plugins dashboards.images`: sample images served by URL straight from the lake.

    GET /image/<run_id>/<chunk>/<sample_id>        the full image (PNG)
    GET /image/<run_id>/<chunk>/<sample_id>/thumb  its thumbnail (WebP, or the PNG when small)

The lake is the folder in $DMD2_LENS_LAKE. Only run ids matching the lake's run-id pattern and integer
chunk/sample numbers reach the store, so a URL cannot name a file outside the lake.
"""

from __future__ import annotations

import os

from tornado.web import HTTPError, RequestHandler

from store.maps import sample_image

LAKE_ENV = "DMD2_LENS_LAKE"


class ImageHandler(RequestHandler):
    def get(self, run_id: str, chunk: str, sample_id: str, thumb: str | None = None) -> None:
        try:
            data, mime = sample_image(os.environ.get(LAKE_ENV, "lake"), run_id, int(chunk), int(sample_id),
                                      thumbnail=bool(thumb))
        except (KeyError, ValueError):
            raise HTTPError(404) from None
        self.set_header("Content-Type", mime)
        self.set_header("Cache-Control", "max-age=86400, immutable")  # shards are immutable
        self.set_header("X-Content-Type-Options", "nosniff")
        self.write(data)


ROUTES = [(r"/image/([A-Za-z0-9][A-Za-z0-9_.-]{0,127})/(\d{1,9})/(\d{1,18})(/thumb)?", ImageHandler, {})]
