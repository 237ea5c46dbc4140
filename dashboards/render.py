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
DENSITY_CMAP = colorcet.fire[40:230]  # dark red to yellow: its near-white end would vanish on the page
NUMERIC_CMAP = colorcet.bmy
# Ring colours over the map; every ring has a black outline so it reads on any class colour.
MARKER_COLOURS = {"selected": "#ffffff", "neighbour": "#ffb000", "collected": "#00a2ff", "hover": "#222222",
                  "generated": "#00c853"}
MARKER_NAMES = {"selected": "selected", "neighbour": "neighbour", "collected": "collected", "hover": "hovered",
                "generated": "generated"}

CSS = """
.lens-thumbs { display: flex; flex-wrap: wrap; gap: 6px; }
.lens-thumb { width: 76px; font-size: 11px; text-align: center; overflow: hidden; }
.lens-thumb img, .lens-generated-sample img, .lens-selected-sample img, .lens-pair img {
  image-rendering: pixelated; background: #000; }
.lens-thumb img { width: 64px; height: 64px; display: block; margin: auto; }
.lens-selected-sample img { width: 192px; height: 192px; }
.lens-generated-sample img { width: 64px; height: 64px; float: left; margin-right: 8px; }
.lens-pair { display: flex; gap: 16px; }
.lens-pair figure { margin: 0; font-size: 12px; text-align: center; }
.lens-pair img { width: 160px; height: 160px; display: block; }
.lens-meta td { padding: 0 6px; font-size: 12px; }
span.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
.lens-legend-rows div, .lens-legend div { font-size: 12px; white-space: nowrap; }
.lens-help { font-size: 12px; color: #444; }
.lens-colour-bar, .lens-marker-key { font-size: 11px; color: #333; }
.lens-marker-key { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 4px; }
.lens-ring-key { display: inline-flex; align-items: center; gap: 3px; }
.lens-ring-key .ring { display: inline-block; width: 8px; height: 8px; border-radius: 50%; border: 2px solid;
  box-shadow: 0 0 0 1.5px #000; }
.lens-error { color: #b00020; }
.lens-notice { font-size: 12px; color: #7a4b00; background: #fff4e0; border-left: 3px solid #e69f00;
  padding: 3px 6px; margin-bottom: 4px; }
.lens-alert { background: #fdecea; border-left: 4px solid #b00020; padding: 6px 10px; font-size: 13px; }
"""


# Tables: columns as wide as their title and figures (no title is cut; long titles wrap), and their own type
# size, so that the template's larger type does not widen them.
TABLE_CSS = """
:host .tabulator { font-size: 13px; }
.tabulator .tabulator-header .tabulator-col .tabulator-col-content .tabulator-col-title {
  white-space: normal; text-overflow: clip; overflow-wrap: break-word; }
"""


def html_pane(text: str = "", **options) -> pn.pane.HTML:
    """An HTML pane with the dashboards' styles (panes render in their own shadow DOM)."""
    return pn.pane.HTML(text, stylesheets=[CSS], **options)


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def choice_options(options: dict) -> dict:
    """Options of a `pn.widgets.MultiChoice` with their labels escaped: Bokeh's MultiChoice leaves Choices.js's
    `allowHTML` at its default (true), so a label is parsed as HTML (a class named `<img onerror=...>` would
    run its script when the list opens); escaped, it shows as the characters it is."""
    return {esc(label): value for label, value in options.items()}


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


def _category_colours(codes: np.ndarray) -> list[str]:
    return [category_colour(int(c)) for c in codes]


def _shaded(frame: pd.DataFrame, colour: str, canvas: ds.Canvas, codes: np.ndarray, span) -> tf.Image:
    if colour in ("label", "tags") and 0 < len(codes) <= MAX_BLENDED_CATEGORIES:
        agg = canvas.points(frame, "x", "y", ds.count_cat(colour))
        return tf.shade(agg, color_key=_category_colours(codes), min_alpha=200)
    if colour in ("label", "tags"):  # one category per pixel, coloured from a fixed lookup table
        values = canvas.points(frame, "x", "y", ds.max(f"{colour}_code"))
        found = values.to_numpy()
        rgba = np.zeros(found.shape + (4,), dtype=np.uint8)
        filled = np.isfinite(found) & (found >= 0)
        palette_index = np.asarray(codes, dtype=np.int64)[found[filled].astype(np.int64)] % len(PALETTE_RGBA)
        rgba[filled] = PALETTE_RGBA[palette_index]
        return tf.Image(rgba.view(np.uint32)[..., 0], coords=values.coords, dims=values.dims)
    if colour == "density":
        counts = canvas.points(frame, "x", "y", ds.count())
        if float(counts.max()) <= 1:  # one point per pixel: equalising one value would draw it all white
            return tf.shade(counts, cmap=DENSITY_CMAP, how="linear", span=(0, 2))
        return tf.shade(counts, cmap=DENSITY_CMAP, how="eq_hist")
    if colour == "grey":
        return tf.shade(canvas.points(frame, "x", "y", ds.count()), cmap=[BACKGROUND_GREY, BACKGROUND_GREY],
                        min_alpha=255)
    return tf.shade(canvas.points(frame, "x", "y", ds.mean(colour)), cmap=NUMERIC_CMAP, how="linear", span=span)


def _spread(image: tf.Image, points: int) -> tf.Image:
    # Few points: a fixed spread keeps single points visible; many: spread only where the view is sparse.
    fixed = 2 if points < 20_000 else 1 if points < 200_000 else 0
    return tf.dynspread(tf.spread(image, px=fixed) if fixed else image, threshold=0.6, max_px=3)


def shade(frame: pd.DataFrame, colour: str, x_range: tuple, y_range: tuple, codes: np.ndarray,
          span: tuple[float, float] = (0.0, 1.0), width: int = MAP_WIDTH, height: int = MAP_HEIGHT,
          highlight: pd.DataFrame | None = None) -> np.ndarray:
    """An RGBA image (rows top to bottom, width x height pixels) of the points in view, coloured by `colour`
    ("label" / "tags": category `i` in palette colour `codes[i]`; "density"; or a numeric column); with
    `highlight`, those points are coloured over all of `frame` in grey."""
    canvas = ds.Canvas(plot_width=width, plot_height=height, x_range=x_range, y_range=y_range)
    if highlight is None:
        image = _spread(_shaded(frame, colour, canvas, codes, span), len(frame))
        return image.to_numpy().view(np.uint8).reshape(height, width, 4)[::-1]
    base = _spread(_shaded(frame, "grey", canvas, codes, span), len(frame))
    top = _spread(_shaded(highlight, colour, canvas, codes, span), len(highlight))
    base_rgba = base.to_numpy().view(np.uint8).reshape(height, width, 4)
    top_rgba = top.to_numpy().view(np.uint8).reshape(height, width, 4)
    return np.where(top_rgba[..., 3:4] > 0, top_rgba, base_rgba)[::-1]


OVERLAY_COLOUR = "#3a3a3a"  # another run's samples placed on a map: dark grey, under the map's own colours


def shade_overlay(frame: pd.DataFrame, x_range: tuple, y_range: tuple, width: int, height: int) -> np.ndarray:
    """An RGBA image (rows top to bottom) of another run's placed samples in `OVERLAY_COLOUR`."""
    canvas = ds.Canvas(plot_width=width, plot_height=height, x_range=x_range, y_range=y_range)
    agg = canvas.points(frame, "x", "y", ds.count())
    image = _spread(tf.shade(agg, cmap=[OVERLAY_COLOUR, OVERLAY_COLOUR], how="linear", min_alpha=255), len(frame))
    return image.to_numpy().view(np.uint8).reshape(height, width, 4)[::-1]


def colour_bar(colour: str) -> str:
    """The legend of a numeric colouring: a gradient with what its ends mean."""
    cmap, low, high, title = {
        "density": (DENSITY_CMAP, "fewest", "most", "points per pixel (histogram-equalised)"),
        "knn_overlap": (NUMERIC_CMAP, "0", "1", "neighbour audit: share of raw-space neighbours kept on the map"),
    }[colour]
    stops = ", ".join(cmap[int(i * (len(cmap) - 1) / 8)] for i in range(9))
    return (f"<div class='lens-colour-bar' data-colour='{esc(colour)}'><div>{esc(title)}</div>"
            f"<div style='height:12px;background:linear-gradient(to right, {stops})'></div>"
            f"<div style='display:flex;justify-content:space-between'><span>{esc(low)}</span>"
            f"<span>{esc(high)}</span></div></div>")


def marker_key(roles: list[str]) -> str:
    """The legend of the rings drawn over the map."""
    items = "".join(f"<span class='lens-ring-key'><span class='ring' style='border-color:{MARKER_COLOURS[r]}'>"
                    f"</span>{esc(MARKER_NAMES[r])}</span>" for r in roles)
    return f"<div class='lens-marker-key'>{items}</div>"


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
