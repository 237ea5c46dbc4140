"""Dashboard benchmarks in a real browser (Debian's Chromium through Playwright) against a real
`panel serve` process, on synthetic lakes of 1M and 10M points (100 prompts, clustered layout):

- server start: until it answers HTTP (it loads the default layout and compiles datashader's kernels
  first, see `dashboards/warmup.py`);
- page open to first map: the first tab after start, and a second tab (every session of a server shares
  the loaded layouts);
- zoom re-render: a mouse-wheel step until the new raster arrives in the page;
- filter to redrawn map: a "Prompt contains" filter (Enter) until the map's pixels change, alternating
  between distinct filters so every step is a real change; the raster's arrival in the page is reported
  too, and the count of points shown must equal DuckDB's count over the lake's samples;
- click to neighbour panel: a click on a point until its neighbours' thumbnails are listed;
- server memory: peak resident set of the server process (VmHWM).

With `--generate-lake LAKE` (a lake with a model run, e.g. `make demo`'s) it instead times "Generate and
place" (class 7, seeds 42, 43, ...): click until the new sample's card with its neighbours is listed.

    python -m dashboards.bench [--sizes 1000000,10000000] [--repeats 5] [--json out.json]
    python -m dashboards.bench --generate-lake /tmp/demo-lake
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from dashboards.browser import PLOT_JS, coloured_fraction, free_port, launch, map_pixels

CLUSTERS = 400
PROMPTS = [f"prompt {i}: a photo of subject {i}" for i in range(100)]
RUN_ID = "synthetic"
# Prompt filters taken in turn; neighbours differ, so each one redraws the map ("" clears the filter).
FILTERS = ["prompt 7:", "prompt 42:", "subject 1", ""]
PROMPT_INPUT = "input[placeholder='any prompt']:visible"

# (JSON key, figure, target) of the printed report; "_median_s" figures also show their maximum.
FIGURES = [
    ("server_start_s", "server start (loads the default layout, compiles datashader's kernels)", ""),
    ("open_first_s", "page open to first map, first tab after start", "<= 3 s at 1M"),
    ("open_second_s", "same, a second tab", ""),
    ("zoom_median_s", "zoom (one wheel step) until the new raster is in the page", "<= 0.5 s at 1M, <= 2 s at 10M"),
    ("filter_median_s", "prompt filter (Enter) until the map's pixels change", "<= 0.5 s at 1M, <= 2 s at 10M"),
    ("filter_raster_median_s", "same, until the new raster is in the page", ""),
    ("filter_screenshot_median_s", "(one screenshot of the map, the pixel check's resolution)", ""),
    ("click_median_s", "click on a point until its neighbours' thumbnails are listed", "<= 1 s at 1M"),
    ("server_peak_rss_mb", "server memory, peak resident set (VmHWM), MB", "<= 3 GB at 10M"),
]

RASTER_JS = """
() => {
  for (const doc of Bokeh.documents) {
    for (const m of doc.all_models) {
      if (m.type === 'GlyphRenderer' && m.glyph.type === 'ImageRGBA') return m.data_source.data.image[0];
    }
  }
  return null;
}
"""


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(lake: Path, port: int) -> subprocess.Popen:
    """`python -m dashboards serve` on `lake`, once it answers HTTP; if it exits or never answers, raise
    with the end of what it wrote."""
    log = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-m", "dashboards", "serve", "--lake", str(lake), "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=2)
        except urllib.error.HTTPError:
            return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    process.kill()
    process.wait(30)
    log.seek(0)
    tail = log.read().decode(errors="replace")[-2000:]
    raise RuntimeError(f"the dashboard server did not start (exit status {process.returncode}):\n{tail}")


def open_map(page, url: str) -> float:
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(".lens-shown", timeout=600_000)
    page.wait_for_function(f"() => ({RASTER_JS})() !== null", timeout=600_000)
    return time.perf_counter() - start


def zoom_once(page) -> float:
    g = page.evaluate(PLOT_JS)
    page.evaluate(f"() => {{ window.__lensRaster = ({RASTER_JS})(); }}")
    page.mouse.move(g["left"] + g["width"] * 0.5, g["top"] + g["height"] * 0.5)
    start = time.perf_counter()
    page.mouse.wheel(0, -200)
    page.wait_for_function(f"() => ({RASTER_JS})() !== window.__lensRaster", timeout=60_000, polling=10)
    return time.perf_counter() - start


def settle(page, quiet_ms: int = 500, timeout_s: float = 60) -> None:
    """Wait until the map's raster has stayed the same for `quiet_ms` (a fresh page may redraw once it
    knows its size), so that what follows measures only its own change."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        page.evaluate(f"() => {{ window.__lensRaster = ({RASTER_JS})(); }}")
        page.wait_for_timeout(quiet_ms)
        if page.evaluate(f"() => ({RASTER_JS})() === window.__lensRaster"):
            return
    raise RuntimeError("the map kept redrawing; nothing to measure a filter against")


def expected_counts(lake: Path, run_id: str, filters: list[str]) -> dict[str, int]:
    """Samples per prompt filter (case-blind substring, "" = all), counted by DuckDB straight from the
    lake's samples shards: independent of the dashboard's own filtering code."""
    import duckdb

    shards = str(lake / "samples" / run_id / "*.parquet")
    with duckdb.connect() as con:
        query = "SELECT count(*) FROM read_parquet(?) WHERE contains(lower(prompt), lower(?))"
        return {text: con.execute(query, [shards, text]).fetchone()[0] for text in filters}


def filter_once(page, text: str, expected: int, timeout_s: float = 60) -> dict:
    """Type `text` into "Prompt contains" and press Enter; return the seconds until the new raster is in
    the page (`raster_s`) and until a screenshot of the map's frame differs from before (`pixels_s`; the
    change happened during that last screenshot, which took `screenshot_s`), and the share of the map
    drawn afterwards. Raises if the pixels never change or the count shown is not `expected`."""
    from playwright.sync_api import expect

    page.mouse.move(1, 1)  # no pointer over the map
    before = map_pixels(page, 0)
    page.evaluate(f"() => {{ window.__lensRaster = ({RASTER_JS})(); }}")
    field = page.locator(PROMPT_INPUT).first
    field.fill(text)
    start = time.perf_counter()
    field.press("Enter")
    page.wait_for_function(f"() => ({RASTER_JS})() !== window.__lensRaster", timeout=timeout_s * 1000, polling=10)
    raster_s = time.perf_counter() - start
    while True:  # the raster is in the page; now until a person would see the change
        shot = time.perf_counter()
        after = map_pixels(page, 0)
        pixels_s = time.perf_counter() - start
        if after.shape != before.shape or (after != before).any():
            break
        if pixels_s > timeout_s:
            raise RuntimeError(f"filter {text!r}: the map's pixels did not change within {timeout_s:.0f} s")
        page.wait_for_timeout(20)
    expect(page.locator(".lens-shown").first).to_have_text(f"{expected:,}", timeout=timeout_s * 1000)
    return {"raster_s": raster_s, "pixels_s": pixels_s, "screenshot_s": time.perf_counter() - shot,
            "coloured": coloured_fraction(after)}


def bench_filters(page, url: str, lake: Path, repeats: int) -> dict:
    """`repeats` prompt filters in turn (FILTERS, each differing from the one before) on a fresh view."""
    counts = expected_counts(lake, RUN_ID, FILTERS)
    open_map(page, url)
    settle(page)
    steps, every = {}, []
    for i in range(repeats):
        text = FILTERS[i % len(FILTERS)]
        every.append(filter_once(page, text, counts[text]))
        steps.setdefault(text, []).append(every[-1])

    def median(name: str) -> float:
        return round(statistics.median(step[name] for step in every), 3)

    return {"filter_median_s": median("pixels_s"), "filter_max_s": round(max(s["pixels_s"] for s in every), 3),
            "filter_raster_median_s": median("raster_s"),
            "filter_raster_max_s": round(max(s["raster_s"] for s in every), 3),
            "filter_screenshot_median_s": median("screenshot_s"),
            "filter_steps_s": [[FILTERS[i % len(FILTERS)], round(step["pixels_s"], 3)] for i, step in enumerate(every)],
            "filter_counts": {text: counts[text] for text in steps},
            "filter_coloured_fraction": {text: round(runs[-1]["coloured"], 4) for text, runs in steps.items()}}


def click_once(page, x: float, y: float, previous: str | None) -> tuple[float, str]:
    g = page.evaluate(PLOT_JS)
    px = g["left"] + (x - g["x0"]) / (g["x1"] - g["x0"]) * g["width"]
    py = g["top"] + (g["y1"] - y) / (g["y1"] - g["y0"]) * g["height"]
    start = time.perf_counter()
    page.mouse.click(px, py)
    page.wait_for_function(
        "(prev) => { const e = document.querySelector('body'); const els = [];"
        " function all(root) { for (const n of root.querySelectorAll('*')) { els.push(n);"
        " if (n.shadowRoot) all(n.shadowRoot); } } all(document);"
        " const sel = els.find(n => n.classList && n.classList.contains('lens-selected-sample'));"
        " const thumbs = els.filter(n => n.classList && n.classList.contains('lens-thumb'));"
        " return sel && sel.dataset.sample !== prev && thumbs.length > 0; }",
        arg=previous or "", timeout=60_000, polling=10)
    sample = page.locator(".lens-selected-sample").first.get_attribute("data-sample")
    return time.perf_counter() - start, sample


def bench_size(n: int, browser, workdir: Path, repeats: int = 5) -> dict:
    from store.synthetic import cluster_centres, write_run

    lake = workdir / f"lake-{n}"
    start = time.perf_counter()
    write_run(lake, RUN_ID, n, PROMPTS, tags=["a", "b", "c"], clusters=CLUSTERS, progress=True)
    build_s = time.perf_counter() - start
    port = free_port()
    start = time.perf_counter()
    server = start_server(lake, port)
    server_start_s = time.perf_counter() - start
    try:
        url = f"http://127.0.0.1:{port}/explorer"
        context = browser.new_context(viewport={"width": 1500, "height": 1100})
        page = context.new_page()
        cold = open_map(page, url)
        warm_page = context.new_page()
        warm = open_map(warm_page, url)
        warm_page.close()
        zooms = [zoom_once(page) for _ in range(repeats)]
        filters = bench_filters(page, url, lake, repeats)
        open_map(page, url)  # a fresh view, then clicks on cluster centres (a different sample each)
        clicks, sample = [], None
        for x, y in cluster_centres(CLUSTERS, 0)[:repeats]:
            elapsed, sample = click_once(page, float(x), float(y), sample)
            clicks.append(elapsed)
        context.close()
        memory = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(lake, ignore_errors=True)
    return {"points": n, "lake_build_s": round(build_s, 1), "server_start_s": round(server_start_s, 2),
            "open_first_s": round(cold, 2), "open_second_s": round(warm, 2),
            "zoom_median_s": round(statistics.median(zooms), 3), "zoom_max_s": round(max(zooms), 3),
            **filters, "click_median_s": round(statistics.median(clicks), 3), "click_max_s": round(max(clicks), 3),
            "server_peak_rss_mb": round(memory)}


def bench_generate(lake: Path, browser, repeats: int = 5) -> dict:
    """Click "Generate and place" (class 7, seeds 42, 43, ...) on a real lake's first run and time each
    answer: the new sample generated on the server's CPU, written as a run, placed, neighbours listed."""
    import shutil as shell

    work = Path(tempfile.mkdtemp(prefix="dmd2-lens-generate-bench-")) / "lake"
    shell.copytree(lake, work, ignore=shell.ignore_patterns("gen-*"))  # the caller's lake stays untouched
    port = free_port()
    server = start_server(work, port)
    try:
        page = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
        open_map(page, f"http://127.0.0.1:{port}/explorer")
        page.locator("select:has(option:text-is('7: 7'))").select_option(label="7: 7")
        times = []
        for i in range(repeats):
            seed = page.locator("input[placeholder='random']")
            seed.fill(str(42 + i))
            seed.press("Enter")
            page.wait_for_timeout(300)
            start = time.perf_counter()
            page.get_by_role("button", name="Generate and place").click()
            page.locator(f".lens-generated-sample[data-seed='{42 + i}']").wait_for(timeout=300_000)
            times.append(time.perf_counter() - start)
    finally:
        server.terminate()
        server.wait(30)
        shell.rmtree(work.parent, ignore_errors=True)
    return {"generate_first_s": round(times[0], 2), "generate_median_s": round(statistics.median(times[1:] or times), 2),
            "repeats": repeats}


def report(results: list[dict]) -> str:
    """The browser figures as a Markdown table: one column per lake size, medians with the maximum in
    brackets, and the target."""
    head = ["figure"] + [f"{r['points']:,} points" for r in results] + ["target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, name, target in FIGURES:
        cells = []
        for r in results:
            worst = r.get(key.replace("_median_s", "_max_s")) if key.endswith("_median_s") else None
            cells.append("" if key not in r else f"{r[key]}" + (f" ({worst})" if worst is not None else ""))
        lines.append("| " + " | ".join([name, *cells, target]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--generate-lake", help="instead: time 'Generate and place' on this lake (e.g. the demo's)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    results = []
    with tempfile.TemporaryDirectory(prefix="dmd2-lens-dash-bench-") as tmp, sync_playwright() as playwright:
        browser = launch(playwright)
        sizes = [] if args.generate_lake else [int(s) for s in args.sizes.split(",")]
        if args.generate_lake:
            results.append(bench_generate(Path(args.generate_lake), browser, args.repeats))
            print(json.dumps(results[-1]), flush=True)
        for n in sizes:
            result = bench_size(n, browser, Path(tmp), args.repeats)
            print(json.dumps(result), flush=True)
            results.append(result)
        browser.close()
    if sizes:
        print(report([r for r in results if "points" in r]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
