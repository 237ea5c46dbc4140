"""The map's "Generate and place" and "Regenerate" controls.

Generate: choose a class (or type a prompt), optionally a seed and a count; the server generates those
samples with the model of the run on the map, on its own device, capturing the same layers (a new run in
the lake, `gen-<run>-<hash>`), places them on the current layout by k-NN interpolation in raw activation
space and lists each one's nearest samples. They stay marked on the map across layers and steps.

Regenerate: reruns the selected sample alone from its recorded seed and says in one line what it found:
an identical image, one equal up to batch-size rounding (the run generated it in a larger batch), or a
different one, with the largest pixel and activation differences (`Reproduction.summary`).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Callable

import pandas as pd
import panel as pn

from dashboards.map_state import MapState
from dashboards.render import esc, html_pane, image_url
from dashboards.thumbs import Thumbs, card
from store.lake import REAL_MODEL_PREFIX
from store.maps import sample_rows
from store.placement import place_run
from store.views import refresh

MAX_GENERATE = 8


class GeneratePanel:
    def __init__(self, state: MapState, k: Callable[[], int], on_placed: Callable[[pd.DataFrame], None],
                 on_select: Callable[[int], None], run_later: Callable[[Callable[[], None]], None]) -> None:
        """`k()`: how many neighbours to list; `on_placed(positions)`: mark generated samples (x, y) on the
        map; `on_select(sample_id)`: a neighbour thumbnail was clicked; `run_later(fn)`: run fn in the
        session's event loop (from a worker thread)."""
        self.state, self.k, self.on_placed, self.on_select, self.run_later = state, k, on_placed, on_select, run_later
        self.class_choice = pn.widgets.Select(label="Class", options={})
        self.prompt = pn.widgets.TextInput(label="Prompt", placeholder="a photo of ...", visible=False)
        self.seed = pn.widgets.TextInput(label="Seed (blank: random)", placeholder="random", width=140)
        self.count = pn.widgets.IntInput(label="How many", value=1, start=1, end=MAX_GENERATE, width=100)
        self.button = pn.widgets.Button(label="Generate and place", color="primary")
        self.status = html_pane("")
        self.results = pn.Column(css_classes=["lens-generated-list"], sizing_mode="stretch_width")
        self.regenerate_button = pn.widgets.Button(label="Regenerate from its seed", disabled=True)
        self.regenerate_status = html_pane("")
        self.generated_runs: list[str] = []
        self.button.on_click(lambda e: self.start_generate())
        self.regenerate_button.on_click(lambda e: self.start_regenerate())

    # --- following the map -----------------------------------------------------------------------------

    def follow_layout(self) -> None:
        """A new layout on the map: class choices of its run, and generated samples placed on it again. A run
        of real images has no model to generate with: both buttons are off, and say why."""
        points = self.state.points
        real = (points.model or "").startswith(REAL_MODEL_PREFIX)
        self.button.disabled = real
        self.status.object = "<span class='lens-help'>real images: no model to generate with</span>" if real else ""
        has_classes = points.has_classes
        options = points.class_options()
        value = self.class_choice.value if self.class_choice.value in options.values() else next(
            iter(options.values()), None)
        self.class_choice.param.update(options=options, value=value, visible=has_classes)
        self.prompt.visible = not has_classes
        self.show_generated()

    def placed(self) -> pd.DataFrame:
        """Generated samples of the map's run, placed on the current layout."""
        key = self.state.key
        frames = []
        for run_id in self.generated_runs:
            if run_id.startswith(f"gen-{key.run_id[:100]}-"):
                frame = place_run(self.state.lake, key, run_id, k=int(self.k()))
                frames.append(frame.assign(run_id=run_id))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            {"sample_id": [], "x": [], "y": [], "neighbour_ids": [], "distances": [], "run_id": []})

    # --- generate -------------------------------------------------------------------------------------

    def start_generate(self) -> None:
        text, count = self.seed.value.strip(), int(self.count.value)
        if text and not (text.isdigit() and len(text) <= 19 and int(text) + count <= 2**63):
            self.status.object = (f"<span class='lens-error'>seed {esc(text)} is not a whole number from 0 to "
                                  f"{2**63 - count:,}</span>")
            return
        first = int(text) if text else random.randrange(2**31)
        seeds = [first + i for i in range(count)]
        if self.state.points.has_classes:
            classes, prompts = [int(self.class_choice.value)], None
        else:
            if not self.prompt.value.strip():
                self.status.object = "<span class='lens-error'>type a prompt to generate from</span>"
                return
            classes, prompts = None, [self.prompt.value]
        refused = self.state.job.start("a generation")
        if refused:
            self.status.object = f"<span class='lens-error'>{esc(refused)}</span>"
            return
        self.button.disabled = True
        self.status.object = (f"<span class='lens-generate-status'>generating {len(seeds)} sample(s) with "
                              f"{esc(self.state.points.model)}…</span>")
        source = self.state.key.run_id
        threading.Thread(target=self.generate, args=(source, seeds, classes, prompts), daemon=True).start()

    def generate(self, source: str, seeds: list[int], classes, prompts) -> None:
        from ingest.interactive import generate_like  # lazy: torch, only when a user generates

        started = time.perf_counter()
        try:
            run_id, error = generate_like(self.state.lake, source, seeds, classes, prompts), None
        except Exception as err:  # shown on the page; the map stays usable
            run_id, error = None, f"{type(err).__name__}: {err}"
        seconds = time.perf_counter() - started

        def finish() -> None:
            self.state.job.done()
            if error:
                self.status.object = f"<span class='lens-error'>{esc(error)}</span>"
            else:
                refresh(self.state.con, self.state.lake)  # the new run's shards, in this page's views
                if run_id not in self.generated_runs:
                    self.generated_runs.append(run_id)
                self.show_generated()
                self.status.object = (f"<span class='lens-generate-done'>generated and placed in {seconds:.1f} s "
                                      f"(run {esc(run_id)})</span>")
            self.button.disabled = False

        self.run_later(finish)

    def show_generated(self) -> None:
        if not self.generated_runs:
            return
        placed = self.placed()
        self.on_placed(placed[["x", "y"]])
        state, key = self.state, self.state.key
        blocks = []
        for record in placed.itertuples():
            seed, label = generated_seed_and_label(state.con, record.run_id, int(record.sample_id))
            found = [(int(s), d) for s, d in zip(record.neighbour_ids, record.distances)
                     if state.points.rows_of([int(s)])[0] >= 0]
            header = html_pane(generated_html(record.run_id, int(record.sample_id), seed, label, (record.x, record.y),
                                              key, len(found)), sizing_mode="stretch_width")
            strip = Thumbs(on_action=lambda run, sample, action: self.on_select(sample),
                           css_classes=["lens-generated-neighbours"], sizing_mode="stretch_width",
                           items=[card(key.run_id, state.chunk_of(s), s, state.label_of(s), f"{d:.3g}") for s, d in found])
            blocks += [header, strip]
        self.results.objects = blocks

    # --- regenerate -----------------------------------------------------------------------------------

    def follow_selection(self) -> None:
        real = (self.state.points.model or "").startswith(REAL_MODEL_PREFIX)
        self.regenerate_button.disabled = self.state.selected_id is None or real
        self.regenerate_status.object = ""

    def start_regenerate(self) -> None:
        run_id, sample = self.state.key.run_id, self.state.selected_id
        if sample is None:
            return
        refused = self.state.job.start("a regeneration")
        if refused:
            self.regenerate_status.object = f"<span class='lens-error'>{esc(refused)}</span>"
            return
        self.regenerate_button.disabled = True
        self.regenerate_status.object = f"<span>regenerating sample {sample} from its seed…</span>"

        def work() -> None:
            from ingest.interactive import regenerate  # lazy: torch, only when a user regenerates

            try:
                result, error = regenerate(self.state.lake, run_id, sample), None
            except Exception as err:
                result, error = None, f"{type(err).__name__}: {err}"

            def finish() -> None:
                self.state.job.done()
                self.regenerate_button.disabled = False
                if error:
                    self.regenerate_status.object = f"<span class='lens-error'>{esc(error)}</span>"
                    return
                self.regenerate_status.object = regenerated_html(sample, result)

            self.run_later(finish)

        threading.Thread(target=work, daemon=True).start()

    def view(self) -> pn.viewable.Viewable:
        return pn.Column("### Generate and place", self.class_choice, self.prompt, pn.Row(self.seed, self.count),
                         self.button, self.status, sizing_mode="stretch_width")


def regenerated_html(sample: int, result) -> str:
    """The Regenerate result: the sample, its seed and the reproduction's one-line summary (identical,
    equal up to batch-size rounding, or different, with the numbers), verdict in `data-verdict`."""
    return (f"<div class='lens-regenerated' data-sample='{int(sample)}' data-verdict='{esc(result.verdict)}'>"
            f"sample {int(sample)} (seed {int(result.seed)}): {esc(result.summary())}</div>")


def generated_html(run_id: str, sample_id: int, seed: int, label: str, xy: tuple[float, float], key, nearest: int) -> str:
    """The header of one generated sample: its image, label (a class name or the user's prompt), seed, where it
    lands on the map's layer and step, and how many nearest samples follow."""
    return (f"<div class='lens-generated-sample' data-run='{esc(run_id)}' data-seed='{int(seed)}' "
            f"data-sample='{int(sample_id)}'><img src='{esc(image_url(run_id, 0, int(sample_id)))}'>"
            f"<div><b>{esc(label)}</b>, seed {int(seed)}: lands at ({xy[0]:.3g}, {xy[1]:.3g}) on "
            f"{esc(key.layer)} · step {int(key.step)}; its {int(nearest)} nearest samples:</div></div>")


def generated_seed_and_label(con, run_id: str, sample_id: int) -> tuple[int, str]:
    rows = sample_rows(con, run_id, [sample_id])
    if not len(rows):
        return 0, ""
    return int(rows["seed"].iat[0]), str(rows["label"].iat[0])
