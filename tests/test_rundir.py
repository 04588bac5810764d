"""kit.rundir.RunDir: "finished" and its neighbours, defined once."""
from __future__ import annotations

import json

from kit.layout import synth_marker
from kit.rundir import RunDir


def _summary(run, **fields):
    run.mkdir(parents=True, exist_ok=True)
    (run / "summary.json").write_text(json.dumps({"step": 10, **fields}))


def test_finished_means_a_summary_not_stopped_by_a_time_limit(tmp_path):
    run = RunDir(tmp_path / "m")
    assert not run.finished and run.progress() == "not started" and run.stopped_reason is None
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "last.pt").write_bytes(b"x")
    assert run.has_checkpoint and run.progress() == "checkpointed, not finished"
    _summary(tmp_path / "m", stopped_reason="time")
    assert run.stopped_at_time_limit and not run.finished          # a session's limit: it resumes
    _summary(tmp_path / "m", stopped_reason="budget")
    assert run.finished and run.progress() == "finished" and not run.diverged
    _summary(tmp_path / "m", stopped_reason="diverged")
    assert run.finished and run.diverged                           # done: never trained again by a re-run


def test_an_unreadable_summary_is_not_finished(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "summary.json").write_text("{not json")
    assert RunDir.of(tmp_path / "m").summary() is None and not RunDir.of(tmp_path / "m").finished


def test_a_summary_of_the_wrong_shape_is_not_finished(tmp_path):
    """Probe 51 F7: {"stopped_reason": 5, "step": "x"} counted as finished (steps "x", params 0) and was voted."""
    run = RunDir.of(tmp_path / "m")
    for text in ('{"stopped_reason": 5, "step": "x"}', '{"stopped_reason": "budget", "step": true}'):
        _summary(tmp_path / "m")
        (tmp_path / "m" / "summary.json").write_text(text)
        assert run.summary() is None and not run.finished and "not a summary kit wrote" in run.summary_problem()
    for text in ('{"stopped_reason": "diverged"}', '{"step": 3, "best_val_acc": "high"}', "{}",      # probe 52
                 '{"step": 3}', '{"stopped_reason": "budget", "step": null}',
                 '{"stopped_reason": "interrupted", "step": 3}', '{"stopped_reason": "budget", "step": -5}'):
        (tmp_path / "m" / "summary.json").write_text(text)
        assert run.summary() is None and not run.finished and "not a summary kit wrote" in run.summary_problem()
    _summary(tmp_path / "m", stopped_reason="budget")
    assert run.finished and run.summary_problem() is None


def test_the_synthetic_marker_is_read_in_one_place(tiny_data, tmp_path):
    marker = synth_marker(tiny_data)
    assert marker is not None and marker["preset"] == "tiny" and "answers" in marker
    assert synth_marker(tmp_path) is None
