"""Trajectories of selected samples across a run's steps or layers."""

from __future__ import annotations

from dashboards.map_tab import MapTab


def test_trajectories_follow_the_selection_and_are_thinned(paired_lake, monkeypatch):
    import dashboards.trajectories as trajectories_module

    lake = str(paired_lake["lake"])
    teacher = MapTab(lake, {"run": paired_lake["teacher"]})
    teacher.select_sample(5)
    teacher.trajectories.toggle.value = True
    info, paths = teacher.trajectories.info, teacher.map.paths
    assert "data-kind='steps'" in info.object and "step 0 → step 7" in info.object
    assert len(paths.data) == 1 and paths.data[0].shape == (2, 2)
    monkeypatch.setattr(trajectories_module, "MAX_PATHS", 50)
    xy = teacher.state.points.frame[["x", "y"]].to_numpy()
    teacher.map._box(bounds=(xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()))
    assert len(paths.data) == 50 and "a random 50 of 300" in info.object
    student = MapTab(lake, {"run": paired_lake["student"], "layer": "enc.8x8_block0"})
    student.select_sample(5)
    student.trajectories.toggle.value = True
    assert "data-kind='layers'" in student.trajectories.info.object and student.map.paths.data[0].shape == (3, 2)
    student.trajectories.toggle.value = False
    assert student.map.paths.data == []
