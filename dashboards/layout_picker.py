"""Choosing what the map shows: run (with its model), layer (in capture order), step, and the layout
version by its human name (method and parameters, point count, full or subset, creation time). A run
opens on its newest full layout, never on a subset."""

from __future__ import annotations

from typing import Callable

import panel as pn

from store import catalogue
from store.lake import LayoutKey


class LayoutPicker:
    def __init__(self, lake: str, con, on_change: Callable[[LayoutKey], None],
                 wanted: dict[str, str] | None = None) -> None:
        """`wanted`: URL values (run, layer, step, layout) to start from where they exist."""
        self.lake, self.con, self.on_change = lake, con, on_change
        self.wanted = dict(wanted or {})
        self.layouts = catalogue.list_layouts(lake)
        self.rejected: list[str] = []  # URL values that named nothing, for a notice
        runs = sorted({k.run_id for k in self.layouts})
        models = catalogue.run_models(con)
        self.run = pn.widgets.Select(label="Run (model)", options={f"{r} ({models.get(r, '?')})": r for r in runs},
                                     sizing_mode="stretch_width")
        self.layer = pn.widgets.Select(label="Layer", sizing_mode="stretch_width")
        self.step = pn.widgets.Select(label="Step", sizing_mode="stretch_width")
        self.version = pn.widgets.Select(label="Layout", sizing_mode="stretch_width")
        self.run.value = self._wanted("run", runs, runs[0] if runs else None)
        self._refresh_layers()
        self.run.param.watch(lambda e: self._refresh_layers(), "value")
        self.layer.param.watch(lambda e: self._refresh_steps(), "value")
        self.step.param.watch(lambda e: self._refresh_versions(), "value")
        self.version.param.watch(lambda e: self._changed(), "value")
        self.wanted = {}

    @property
    def key(self) -> LayoutKey | None:
        return self.version.value

    def _wanted(self, name: str, valid: list, default):
        value = self.wanted.get(name)
        if value is None:
            return default
        if value not in valid:
            notice = f"ignored URL parameter {name}={value[:100]!r}: not one of the available values"
            if notice not in self.rejected:
                self.rejected.append(notice)
            return default
        return value

    def _keys(self, **fixed) -> list[LayoutKey]:
        return [k for k in self.layouts if all(getattr(k, f) == v for f, v in fixed.items())]

    def _refresh_layers(self) -> None:
        order = catalogue.run_layers(self.con, self.run.value)
        layers = catalogue.in_capture_order({k.layer for k in self._keys(run_id=self.run.value)}, order)
        current = self.layer.value if self.layer.value in layers else None
        if current is None:
            newest = catalogue.newest_full_layout(self.lake, self._keys(run_id=self.run.value))
            current = self._wanted("layer", layers, newest.layer if newest else None)
        self.layer.param.update(options=layers, value=current)
        self._refresh_steps()

    def _refresh_steps(self) -> None:
        keys = self._keys(run_id=self.run.value, layer=self.layer.value)
        labels = {str(s): s for s in sorted({k.step for k in keys})}
        value = self.step.value if self.step.value in labels.values() else None
        if value is None:
            newest = catalogue.newest_full_layout(self.lake, keys)
            wanted = self._wanted("step", list(labels), None)
            value = labels[wanted] if wanted is not None else (newest.step if newest else None)
        self.step.param.update(options=labels, value=value)
        self._refresh_versions()

    def _refresh_versions(self) -> None:
        keys = self._keys(run_id=self.run.value, layer=self.layer.value, step=self.step.value)
        infos = sorted((catalogue.layout_info(self.lake, k) for k in keys), key=lambda i: (i.subset, -i.created))
        options = {f"{i.key.pooling} · {i.name}": i.key for i in infos}
        by_hash = {k.params_hash: k for k in keys}
        value = self.version.value if self.version.value in keys else None
        if value is None:
            wanted = self._wanted("layout", list(by_hash), None)
            value = by_hash[wanted] if wanted is not None else catalogue.newest_full_layout(self.lake, keys)
        self.version.param.update(options=options, value=value)

    def _changed(self) -> None:
        if self.key is not None:
            self.on_change(self.key)

    def refresh(self) -> None:
        """Re-read the lake's layouts (after a recompute saved one)."""
        self.layouts = catalogue.list_layouts(self.lake)
        self._refresh_versions()

    def choose(self, run_id: str | None = None, layer: str | None = None, key: LayoutKey | None = None) -> None:
        """Switch to a run and/or layer (where laid out), or to one layout."""
        if key is not None:
            self.run.value, self.layer.value, self.step.value = key.run_id, key.layer, key.step
            self.version.value = key
            return
        if run_id in self.run.options.values():
            self.run.value = run_id
        if layer in self.layer.options:
            self.layer.value = layer

    def widgets(self) -> list:
        return [self.run, self.layer, self.step, self.version]
