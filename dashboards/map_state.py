"""What the Map tab shows, shared by its side panels: the lake, the layout's points, the rows passing the
filters, the selected sample and its neighbours, the collected set, the box/lasso region, the
generated samples placed on the layout, and the session's one heavy job. `MapTab` changes it and tells the
panels; panels only read it (and take the job)."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pandas as pd

from store import maps
from store.lake import LayoutKey


class SessionJob:
    """One heavy job (recompute a layout, generate, regenerate) at a time per session: each holds a whole
    model or a UMAP in memory, so a double click or a second button must not start another."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running: str | None = None

    def start(self, what: str) -> str | None:
        """None when `what` may start now (call `done` after it), else why not, for the page."""
        if not self._lock.acquire(blocking=False):
            return f"{self.running} is still running for this page; wait for it to finish"
        self.running = what
        return None

    def done(self) -> None:
        self.running = None
        self._lock.release()


@dataclasses.dataclass
class MapState:
    lake: str
    con: object
    points: maps.MapPoints | None = None
    keep: np.ndarray | None = None
    selected_id: int | None = None
    neighbour_ids: list[int] = dataclasses.field(default_factory=list)
    collected: list[int] = dataclasses.field(default_factory=list)
    region_rows: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, dtype=np.int64))
    generated_positions: pd.DataFrame = dataclasses.field(default_factory=lambda: pd.DataFrame({"x": [], "y": []}))
    job: SessionJob = dataclasses.field(default_factory=SessionJob)

    @property
    def key(self) -> LayoutKey:
        return self.points.key

    def present_rows(self, sample_ids: list[int]) -> np.ndarray:
        """Rows of these samples in the layout (absent ones dropped)."""
        rows = self.points.rows_of(sample_ids)
        return rows[rows >= 0].astype(np.int64)

    def picked_rows(self) -> np.ndarray:
        """The hand-picked samples: the collected set and the box/lasso region."""
        return np.union1d(self.present_rows(self.collected), self.region_rows).astype(np.int64)

    def label_of(self, sample_id: int) -> str:
        row = int(self.points.rows_of([sample_id])[0])
        return str(self.points.frame["label"].iat[row]) if row >= 0 else "(not in this layout)"

    def chunk_of(self, sample_id: int) -> int:
        row = int(self.points.rows_of([sample_id])[0])
        return int(self.points.frame["chunk"].iat[row]) if row >= 0 else 0
