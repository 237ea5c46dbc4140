"""What every dashboard view draws with: datashader rasters of a layout's points (coloured by class or
prompt, optionally with a highlighted group over the rest in grey), the palette, image URLs, and HTML
panes whose every user string is escaped."""

from __future__ import annotations

import html

import colorcet
import datashader as ds
import datashader.transfer_functions as tf
import numpy as np
import pandas as pd
import panel as pn

MAP_WIDTH, MAP_HEIGHT = 760, 620
MAX_BLENDED_CATEGORIES = 40  # above this, a pixel shows one category (count_cat would need an array per category)
LOD_TIMEOUT_MS = 60
PALETTE = list(colorcet.b_glasbey_category10)
PALETTE_RGBA = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] + [255] for c in PALETTE], dtype=np.uint8)
BACKGROUND_GREY = "#d0d0d0"  # the points outside a highlighted group
MARKER_COLOURS = {"selected": "#e4002b", "neighbour": "#ffb000", "collected": "#00a2ff", "hover": "#222222",
                  "generated": "#00c853"}

CSS = """
.lens-thumbs { display: flex; flex-wrap: wrap; gap: 6px; }
.lens-thumb { width: 76px; font-size: 11px; text-align: center; overflow: hidden; }
.lens-thumb img, .lens-hover-card img, .lens-selected-sample img, .lens-pair img {
  image-rendering: pixelated; background: #000; }
.lens-thumb img { width: 64px; height: 64px; display: block; margin: auto; }
.lens-selected-sample img { width: 192px; height: 192px; }
.lens-hover-card img { width: 96px; height: 96px; }
.lens-pair { display: flex; gap: 16px; }
.lens-pair figure { margin: 0; font-size: 12px; text-align: center; }
.lens-pair img { width: 160px; height: 160px; display: block; }
.lens-meta td { padding: 0 6px; font-size: 12px; }
.lens-legend span.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
.lens-legend div { font-size: 12px; white-space: nowrap; }
.lens-help { font-size: 12px; color: #444; }
"""


def html_pane(text: str = "", **options) -> pn.pane.HTML:
    """An HTML pane with the dashboards' styles (panes render in their own shadow DOM)."""
    return pn.pane.HTML(text, stylesheets=[CSS], **options)


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


INLINE_IMAGES_LAKE: str | None = None  # set in notebooks, which have no image route


def inline_images(lake: str | None) -> None:
    """Embed the few images a view shows as data URIs (for notebooks); None restores URLs."""
    global INLINE_IMAGES_LAKE
    INLINE_IMAGES_LAKE = lake


def image_url(run_id: str, chunk: int, sample_id: int, thumb: bool = True) -> str:
    if INLINE_IMAGES_LAKE is not None:
        import base64

        from store.maps import sample_image

        data, mime = sample_image(INLINE_IMAGES_LAKE, run_id, chunk, sample_id, thumbnail=thumb)
        return f"data:{mime};base64,{base64.b64encode(data).decode()}"
    return f"/image/{run_id}/{int(chunk)}/{int(sample_id)}" + ("/thumb" if thumb else "")


def category_colour(code: int) -> str:
    return PALETTE[code % len(PALETTE)]


def thumb_card(run_id: str, chunk: int, sample_id: int, caption: str, extra: str = "") -> str:
    """A small image card (data-sample carries the id, for the tests and for linking)."""
    return (f"<div class='lens-thumb' data-sample='{int(sample_id)}'>"
            f"<img src='{esc(image_url(run_id, chunk, sample_id))}' loading='lazy'>"
            f"<div>{esc(caption)}</div>{extra}</div>")


def _shaded(frame: pd.DataFrame, colour: str, canvas: ds.Canvas, categories: list[str], span) -> tf.Image:
    if colour in ("label", "tags") and 0 < len(categories) <= MAX_BLENDED_CATEGORIES:
        agg = canvas.points(frame, "x", "y", ds.count_cat(colour))
        return tf.shade(agg, color_key=[category_colour(i) for i in range(len(categories))], min_alpha=200)
    if colour in ("label", "tags"):  # one category per pixel, coloured from a fixed lookup table
        values = canvas.points(frame, "x", "y", ds.max(f"{colour}_code"))
        codes = values.to_numpy()
        rgba = np.zeros(codes.shape + (4,), dtype=np.uint8)
        filled = np.isfinite(codes) & (codes >= 0)
        rgba[filled] = PALETTE_RGBA[codes[filled].astype(np.int64) % len(PALETTE_RGBA)]
        return tf.Image(rgba.view(np.uint32)[..., 0], coords=values.coords, dims=values.dims)
    if colour == "density":
        return tf.shade(canvas.points(frame, "x", "y", ds.count()), cmap=colorcet.fire[40:], how="eq_hist")
    if colour == "grey":
        return tf.shade(canvas.points(frame, "x", "y", ds.count()), cmap=[BACKGROUND_GREY, BACKGROUND_GREY],
                        min_alpha=255)
    return tf.shade(canvas.points(frame, "x", "y", ds.mean(colour)), cmap=colorcet.bmy, how="linear", span=span)


def _spread(image: tf.Image, points: int) -> tf.Image:
    # Few points: a fixed spread keeps single points visible; many: spread only where the view is sparse.
    fixed = 2 if points < 20_000 else 1 if points < 200_000 else 0
    return tf.dynspread(tf.spread(image, px=fixed) if fixed else image, threshold=0.6, max_px=3)


def shade(frame: pd.DataFrame, colour: str, x_range: tuple, y_range: tuple, categories: list[str],
          span: tuple[float, float], width: int = MAP_WIDTH, height: int = MAP_HEIGHT,
          highlight: pd.DataFrame | None = None) -> np.ndarray:
    """An RGBA image (rows top to bottom, width x height pixels) of the points in view, coloured by `colour`;
    with `highlight`, those points are coloured over all of `frame` in grey."""
    canvas = ds.Canvas(plot_width=width, plot_height=height, x_range=x_range, y_range=y_range)
    if highlight is None:
        image = _spread(_shaded(frame, colour, canvas, categories, span), len(frame))
        return image.to_numpy().view(np.uint8).reshape(height, width, 4)[::-1]
    base = _spread(_shaded(frame, "grey", canvas, categories, span), len(frame))
    top = _spread(_shaded(highlight, colour, canvas, categories, span), len(highlight))
    base_rgba = base.to_numpy().view(np.uint8).reshape(height, width, 4)
    top_rgba = top.to_numpy().view(np.uint8).reshape(height, width, 4)
    return np.where(top_rgba[..., 3:4] > 0, top_rgba, base_rgba)[::-1]


def marker_frame(points, roles: list[tuple[int, str]]) -> pd.DataFrame:
    """Positions of marked samples on a layout (`store.maps.MapPoints`) with their roles ("selected",
    "neighbour", ...); samples the layout lacks are left out."""
    ids = np.array([i for i, _ in roles], dtype=np.int64)
    rows = points.rows_of(ids)
    found = rows >= 0
    frame = points.frame
    return pd.DataFrame({"x": frame["x"].to_numpy()[rows[found]], "y": frame["y"].to_numpy()[rows[found]],
                         "role": [r for (_, r), f in zip(roles, found) if f]})


def quick_range_updates(plot, element) -> None:
    """Bokeh reports a wheel zoom's new range only once the interaction has been idle for `lod_timeout`
    (500 ms by default); the raster is ready in ~40 ms, so ask for the range sooner."""
    plot.state.lod_timeout = LOD_TIMEOUT_MS
    plot.state.lod_interval = LOD_TIMEOUT_MS


def home_range(extent: tuple[float, float, float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """The view showing every point with a 3% margin."""
    x0, x1, y0, y1 = extent
    pad_x, pad_y = 0.03 * (x1 - x0 or 1), 0.03 * (y1 - y0 or 1)
    return (x0 - pad_x, x1 + pad_x), (y0 - pad_y, y1 + pad_y)
