"""Dashboard benchmarks in a real browser (Debian's Chromium through Playwright) against a real
`panel serve` process, on synthetic lakes of 1M and 10M points (100 prompts, clustered layout):

- server start: until it answers HTTP (it loads the default layout and compiles datashader's kernels
  first, see `dashboards/warmup.py`);
- page open to first map: the first tab after start, and a second tab (every session of a server shares
  the loaded layouts);
- zoom re-render: a mouse-wheel step until the new raster arrives in the page;
- click to neighbour panel: a click on a point until its neighbours' thumbnails are listed;
- server memory: peak resident set of the server process (VmHWM).

With `--generate-lake LAKE` (a lake with a model run, e.g. `make demo`'s) it instead times "Generate and
place" (class 7, seeds 42, 43, ...): click until the new sample's card with its neighbours is listed.

    python -m dashboards.bench [--sizes 1000000,10000000] [--json out.json]
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

from dashboards.browser import PLOT_JS, free_port, launch

CLUSTERS = 400
PROMPTS = [f"prompt {i}: a photo of subject {i}" for i in range(100)]

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
    process = subprocess.Popen([sys.executable, "-m", "dashboards", "serve", "--lake", str(lake), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=2)
        except urllib.error.HTTPError:
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the dashboard server did not start")


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
    write_run(lake, "synthetic", n, PROMPTS, tags=["a", "b", "c"], clusters=CLUSTERS, progress=True)
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
            "click_median_s": round(statistics.median(clicks), 3), "click_max_s": round(max(clicks), 3),
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
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
