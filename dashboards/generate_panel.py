"""The map's "Generate and place" and "Regenerate" controls.

Generate: choose a class (or type a prompt), optionally a seed and a count; the server generates those
samples with the model of the run on the map, on its own device, capturing the same layers (a new run in
the lake, `gen-<run>-<hash>`), places them on the current layout by k-NN interpolation in raw activation
space and lists each one's nearest samples. They stay marked on the map across layers and steps.

Regenerate: reruns the selected sample from its recorded seed and says whether the image and every
captured vector reproduce.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING

import pandas as pd
import panel as pn

from dashboards.render import esc, html_pane, thumb_card

if TYPE_CHECKING:
    from dashboards.explorer import Explorer

MAX_GENERATE = 8


class GeneratePanel:
    def __init__(self, explorer: "Explorer") -> None:
        self.explorer = explorer
        self.class_choice = pn.widgets.Select(label="Class", options={})
        self.prompt = pn.widgets.TextInput(label="Prompt", placeholder="a photo of ...", visible=False)
        self.seed = pn.widgets.TextInput(label="Seed (blank: random)", placeholder="random", width=140)
        self.count = pn.widgets.IntInput(label="How many", value=1, start=1, end=MAX_GENERATE, width=100)
        self.button = pn.widgets.Button(label="Generate and place", color="primary")
        self.status = html_pane("")
        self.results = html_pane("", css_classes=["lens-generated-list"])
        self.regenerate_button = pn.widgets.Button(label="Regenerate from its seed", disabled=True)
        self.regenerate_status = html_pane("")
        self.generated_runs: list[str] = []
        self.button.on_click(lambda e: self.start_generate())
        self.regenerate_button.on_click(lambda e: self.start_regenerate())

    # --- following the explorer -----------------------------------------------------------------------

    def follow_layout(self) -> None:
        """A new layout on the map: class choices of its run, and generated samples placed on it again."""
        points = self.explorer.points
        has_classes = points.has_classes
        options = {f"{i}: {name}": i for i, name in points.class_names.items()}
        value = self.class_choice.value if self.class_choice.value in options.values() else next(
            iter(options.values()), None)
        self.class_choice.param.update(options=options, value=value, visible=has_classes)
        self.prompt.visible = not has_classes
        self.show_generated()

    def placed(self) -> pd.DataFrame:
        """Generated samples of the map's run, placed on the current layout."""
        from store.placement import place_run

        key = self.explorer.key
        frames = []
        for run_id in self.generated_runs:
            if run_id.startswith(f"gen-{key.run_id[:100]}-"):
                frame = place_run(self.explorer.lake, key, run_id, k=int(self.explorer.k.value))
                frames.append(frame.assign(run_id=run_id))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            {"sample_id": [], "x": [], "y": [], "neighbour_ids": [], "distances": [], "run_id": []})

    # --- generate -------------------------------------------------------------------------------------

    def start_generate(self) -> None:
        text = self.seed.value.strip()
        if text and not (text.isdigit() and int(text) < 2**63):
            self.status.object = f"<span class='lens-error'>seed {esc(text)!s} is not a whole number ≥ 0</span>"
            return
        first = int(text) if text else random.randrange(2**31)
        seeds = [first + i for i in range(int(self.count.value))]
        if self.explorer.points.has_classes:
            classes, prompts = [int(self.class_choice.value)], None
        else:
            if not self.prompt.value.strip():
                self.status.object = "<span class='lens-error'>type a prompt to generate from</span>"
                return
            classes, prompts = None, [self.prompt.value]
        self.button.disabled = True
        self.status.object = (f"<span class='lens-generate-status'>generating {len(seeds)} sample(s) with "
                              f"{esc(self.explorer.points.model)}…</span>")
        source = self.explorer.key.run_id
        threading.Thread(target=self.generate, args=(source, seeds, classes, prompts), daemon=True).start()

    def generate(self, source: str, seeds: list[int], classes, prompts) -> None:
        import time

        from ingest.interactive import generate_like

        started = time.perf_counter()
        try:
            run_id, error = generate_like(self.explorer.lake, source, seeds, classes, prompts), None
        except Exception as err:  # shown on the page; the map stays usable
            run_id, error = None, f"{type(err).__name__}: {err}"
        seconds = time.perf_counter() - started

        def finish() -> None:
            if error:
                self.status.object = f"<span class='lens-error'>{esc(error)}</span>"
            else:
                if run_id not in self.generated_runs:
                    self.generated_runs.append(run_id)
                self.show_generated()
                self.status.object = (f"<span class='lens-generate-done'>generated and placed in {seconds:.1f} s "
                                      f"(run {esc(run_id)})</span>")
            self.button.disabled = False

        self.explorer.on_next_tick(finish)

    def show_generated(self) -> None:
        if not self.generated_runs:
            return
        explorer = self.explorer
        placed = self.placed()
        explorer.generated_positions = placed[["x", "y"]]
        explorer._update_markers()
        points, key = explorer.points, explorer.key
        cards = []
        for record in placed.itertuples():
            seed, label = generated_seed_and_label(explorer.con, record.run_id, int(record.sample_id))
            rows = points.rows_of(record.neighbour_ids)
            neighbours = "".join(
                thumb_card(key.run_id, int(points.frame["chunk"].iat[r]), int(s), str(points.frame["label"].iat[r]),
                           f"<div class='lens-distance'>{d:.3f}</div>")
                for s, r, d in zip(record.neighbour_ids, rows, record.distances) if r >= 0)
            cards.append(
                f"<div class='lens-generated-sample' data-run='{esc(record.run_id)}' data-seed='{seed}' "
                f"data-sample='{int(record.sample_id)}'><div class='lens-thumbs'>"
                f"{thumb_card(record.run_id, 0, int(record.sample_id), f'new · seed {seed}')}</div>"
                f"<div><b>{esc(label)}</b>, seed {seed}: lands at ({record.x:.2f}, {record.y:.2f}) on "
                f"{esc(key.layer)} · step {key.step}; its {len(record.neighbour_ids)} nearest samples:</div>"
                f"<div class='lens-thumbs lens-generated-neighbours'>{neighbours}</div></div>")
        self.results.object = "".join(cards)

    # --- regenerate -----------------------------------------------------------------------------------

    def follow_selection(self) -> None:
        self.regenerate_button.disabled = self.explorer.selected_id is None
        self.regenerate_status.object = ""

    def start_regenerate(self) -> None:
        run_id, sample = self.explorer.key.run_id, self.explorer.selected_id
        if sample is None:
            return
        self.regenerate_button.disabled = True
        self.regenerate_status.object = f"<span>regenerating sample {sample} from its seed…</span>"

        def work() -> None:
            from ingest.interactive import regenerate

            try:
                result, error = regenerate(self.explorer.lake, run_id, sample), None
            except Exception as err:
                result, error = None, f"{type(err).__name__}: {err}"

            def finish() -> None:
                self.regenerate_button.disabled = False
                if error:
                    self.regenerate_status.object = f"<span class='lens-error'>{esc(error)}</span>"
                    return
                verdict = ("identical" if result.identical else "reproduced within float rounding"
                           if result.reproduced() else "NOT reproduced")
                self.regenerate_status.object = (
                    f"<div class='lens-regenerated' data-sample='{sample}' data-verdict='{esc(verdict)}'>sample "
                    f"{sample} (seed {result.seed}): <b>{esc(verdict)}</b> · image "
                    f"{'identical' if result.image_identical else 'differs'} · {result.vectors_compared} vectors, "
                    f"largest difference {result.max_vector_difference:.3g} "
                    f"({result.max_relative_difference:.2g} of the largest value)</div>")

            self.explorer.on_next_tick(finish)

        threading.Thread(target=work, daemon=True).start()

    def view(self) -> pn.viewable.Viewable:
        return pn.Column("### Generate and place", self.class_choice, self.prompt, pn.Row(self.seed, self.count),
                         self.button, self.status, width=300)


def generated_seed_and_label(con, run_id: str, sample_id: int) -> tuple[int, str]:
    from store.maps import sample_rows

    rows = sample_rows(con, run_id, [sample_id])
    if not len(rows):
        return 0, ""
    return int(rows["seed"].iat[0]), str(rows["label"].iat[0])
