"""Step plans: the LR schedule, and fitting a run's step total to a wall-clock allowance."""
import math

import pytest
import torch

from kit.budget import EVALS, RESERVE, StepPlan, lr_at


def test_lr_schedule_matches_timm_cosine_with_warmup():
    from timm.scheduler import CosineLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    total, warmup = 200, 20
    sched = CosineLRScheduler(opt, t_initial=total + 1, warmup_lr_init=0.0, warmup_t=warmup, t_in_epochs=False)
    for step in range(1, total + 1):
        sched.step_update(step)
        assert lr_at(step, total, warmup, 3e-3) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)


def test_fixed_plan_evaluates_every_eval_every_and_at_the_end():
    plan = StepPlan.fixed(total=250, warmup=10, eval_every=100)
    assert [s for s in range(1, 251) if plan.eval_due(s)] == [100, 200, 250]


def test_timed_plan_fits_the_allowance_and_ends_annealed():
    # 60 s allowance, 0.1 s per step, evaluations of 1 s: about (60*(1-RESERVE) - 5) / 0.1 steps.
    plan = StepPlan.timed(seconds=60.0, max_steps=100_000, warmup=1000)
    total = plan.fit(step=20, spent=2.0, step_seconds=0.1, eval_guess=1.0)
    expected = 20 + int((60 * (1 - RESERVE) - 2.0 - EVALS * 1.0) / 0.1)
    assert total == expected
    assert plan.warmup == total // 10                  # a long configured warm-up shrinks to a tenth
    assert lr_at(total, plan.total, plan.warmup, 1e-3) < 1e-6        # the last update is annealed
    evals = [s for s in range(1, total + 1) if plan.eval_due(s) and not plan.evaluated(1.0)]
    assert len(evals) == EVALS and evals[-1] == total
    assert evals == [math.ceil(total * k / EVALS) for k in range(1, EVALS + 1)]


def test_timed_plan_never_exceeds_max_steps_nor_goes_backwards():
    plan = StepPlan.timed(seconds=3600.0, max_steps=500, warmup=50)
    assert plan.fit(step=10, spent=1.0, step_seconds=0.01, eval_guess=0.1) == 500
    assert plan.fit(step=300, spent=3599.0, step_seconds=1.0, eval_guess=0.1) == 301   # out of time: stop next step


def test_timed_plan_survives_a_resume():
    plan = StepPlan.timed(seconds=60.0, max_steps=10_000, warmup=10)
    plan.fit(step=20, spent=2.0, step_seconds=0.05, eval_guess=0.5)
    plan.evaluated(0.7)
    again = StepPlan.timed(seconds=60.0, max_steps=10_000, warmup=10)
    again.load_state_dict(plan.state_dict())
    assert (again.total, again.warmup, again.evals_done, again.eval_seconds) == \
        (plan.total, plan.warmup, plan.evals_done, plan.eval_seconds)


@pytest.mark.slow
def test_a_time_budgeted_run_fits_its_steps_evaluates_and_ends_annealed(tiny_data, tmp_path):
    """A run given train.minutes sets its own step total (far below max_steps here), evaluates
    EVALS times on bounded crops and takes its last step at a learning rate near zero."""
    import pandas as pd

    from kit.config import from_dict
    from kit.train import train

    cfg = from_dict({"data": {"data_dir": str(tiny_data), "segment_len": 64, "store_dtype": "float32"},
                     "model": {"d_model": 32, "ffn_dim": 64, "n_heads": 2},
                     "train": {"batch_size": 16, "lr": 3e-3, "warmup_steps": 1000, "max_steps": 1_000_000,
                               "minutes": 0.15, "cpu_threads": 1}})
    # 9 s: the first fit comes after 23 steps, which 3 s (0.05 min) did not cover on a loaded 2-core machine
    # (6 steps/s with an outside test beside the suite): 24 steps, 2 evaluations, failed on the machine's speed
    summary = train(cfg, tmp_path / "run", progress=False)
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert summary["stopped_reason"] == "budget"
    assert 20 < summary["step"] == summary["total_steps"] < 1_000_000
    assert len(metrics) == EVALS and metrics["step"].iloc[-1] == summary["step"]
    assert metrics["lr"].iloc[-1] < 1e-3 * 3e-3                     # annealed, not cut at the peak
    rates = summary["steps_per_second"]                             # measured at the start and achieved
    assert rates["probed"] > 0 and rates["achieved"] > 0 and rates["planned_steps"] > 20
    assert 0 < rates["cpu_cores"] < 4                               # the process's CPU seconds per wall second


def test_a_run_that_lost_its_step_rate_says_so():
    from kit.budget import SHARED_BELOW, step_rate_note

    assert step_rate_note(None) == "" and step_rate_note({"probed": 0.0, "achieved": 3.0}) == ""
    assert step_rate_note({"probed": 10.0, "achieved": 10.0 * SHARED_BELOW, "planned_steps": 900}) == ""
    note = step_rate_note({"probed": 10.0, "achieved": 6.2, "planned_steps": 1800})
    assert note.startswith("lost steps: 6.2 steps/s against 10.0 at its start (62%; 1,800 steps planned then)")
    at_the_line = step_rate_note({"probed": 10.0, "achieved": 7.996, "planned_steps": 900})
    assert "(79%;" in at_the_line                                   # under 80%, never printed as 80%
    # probe 13: every planned step done in under a second: the rate's ratio is noise, no step was lost
    assert step_rate_note({"probed": 154.6, "achieved": 123.0, "planned_steps": 100, "step": 100,
                           "cpu_cores": 0.99}) == ""
    assert step_rate_note({"probed": 10.0, "achieved": 6.2, "planned_steps": 1800, "step": 1100}).startswith(
        "lost steps: 6.2 steps/s")
    # shared from the start: the rate measured then was already low, but the run had a fraction of a core
    shared = step_rate_note({"probed": 6.9, "achieved": 6.8, "planned_steps": 150, "cpu_cores": 0.04})
    assert shared == "lost steps: 0.04 of a CPU core (CPU time / wall time) - was the machine shared?"
    assert step_rate_note({"probed": 6.9, "achieved": 6.8, "planned_steps": 150, "cpu_cores": 0.97}) == ""


def test_the_probe_survives_a_resume():
    from kit.budget import StepPlan

    plan = StepPlan.timed(60.0, 10_000, 10)
    plan.fit(step=23, spent=3.0, step_seconds=0.05, eval_guess=0.5)
    again = StepPlan.timed(60.0, 10_000, 10)
    again.load_state_dict(plan.state_dict())
    assert again.probe_rate == plan.probe_rate == 20.0 and again.probe_total == plan.probe_total > 23
    again.fit(step=73, spent=10.0, step_seconds=0.2, eval_guess=0.5)        # later fits keep the first
    assert again.probe_rate == 20.0


def test_the_recipe_table_notes_a_member_that_lost_steps(tmp_path):
    import json

    from kit.zoo import RecipeRun

    for name, achieved in (("kept", 9.5), ("starved", 4.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"name": name, "step": 900, "seconds": 120.0, "best_val_acc": 0.5, "stopped_reason": "budget",
             "steps_per_second": {"probed": 10.0, "achieved": achieved, "planned_steps": 1200}}))
    run = RecipeRun(recipe=type("R", (), {"name": "r"})(), budget="quick", data_dir=tmp_path, store=None,
                    root=tmp_path, chosen=["kept", "starved"], log=print, progress=False, workers=1,
                    submissions=tmp_path)
    notes = {m.name: m.note for m in run.results(set(), None).members}
    assert notes["kept"] == "" and notes["starved"].startswith("lost steps: 4.0 steps/s against 10.0 at its start")


def test_the_recipe_table_notes_a_member_that_ran_well_past_its_minutes(tmp_path):
    """Probe 42 D4: a member whose first steps ran slow (a starved machine) trained 2.7x its minutes, and
    the recipe's table said only "lost steps"; it now says so, as `kit train` does, from the minutes its
    config.toml gave it. A config that cannot be read gives no such note, never an error."""
    import json

    from kit.rundir import RunDir
    from kit.zoo import RecipeRun

    for name, seconds, config in (("on-time", 20.0, "[train]\nminutes = 0.3\n"),
                                  ("overran", 120.3, "[train]\nminutes = 0.3\n"),
                                  ("damaged", 120.3, "[train\nminutes = "), ("untimed", 120.3, "[train]\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.toml").write_text(config)
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"name": name, "step": 900, "seconds": seconds, "best_val_acc": 0.5, "stopped_reason": "budget"}))
    run = RecipeRun(recipe=type("R", (), {"name": "r"})(), budget="quick", data_dir=tmp_path, store=None,
                    root=tmp_path, chosen=["on-time", "overran", "damaged", "untimed"], log=print, progress=False,
                    workers=1, submissions=tmp_path)
    notes = {m.name: m.note for m in run.results(set(), None).members}
    assert notes["overran"].startswith("took 2.0 minutes against its 0.3")
    assert notes["on-time"] == notes["damaged"] == notes["untimed"] == ""
    assert RunDir.of(tmp_path / "overran").planned_minutes == 0.3
    assert RunDir.of(tmp_path / "damaged").planned_minutes == 0


def test_real_data_without_a_gpu_gets_the_quick_budget_and_says_why(tiny_data, tmp_path, monkeypatch):
    """Probe 31: data with no synthetic marker (the real competition, or another generator's fetched
    through an emulator) got the full budget on a CPU: models sized for hours of GPU time."""
    import shutil

    import torch

    from kit.layout import SYNTH_MARKER
    from kit.members import default_budget

    real = shutil.copytree(tiny_data, tmp_path / "real", ignore=shutil.ignore_patterns(SYNTH_MARKER, ".kit-cache"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    budget, said = default_budget(real, elsewhere=False)
    assert budget == "quick" and "real data, but no GPU is here" in said and "--budget full" in said
    assert default_budget(real, elsewhere=True)[0] == "full"              # a launcher's GPUs train it
    assert default_budget(tiny_data, elsewhere=True)[0] == "quick"        # synthetic: quick wherever
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_budget(real, elsewhere=False) == ("full", f"the full budget: {real} is real data (--budget chooses)")


def test_a_re_run_keeps_the_budget_its_members_trained_at(tiny_data, tmp_path, monkeypatch):
    """Probe 32: members trained at the full budget (the default on real data before, or --budget full)
    could not be continued by a plain re-run on a machine without a GPU: the new quick default refused
    them, and the only advice threw the work away."""
    import json
    import shutil

    import torch

    from kit.layout import SYNTH_MARKER
    from kit.members import default_budget

    real = shutil.copytree(tiny_data, tmp_path / "real", ignore=shutil.ignore_patterns(SYNTH_MARKER, ".kit-cache"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = tmp_path / "runs" / "boss"
    (root / "m1").mkdir(parents=True)
    (root / "m1" / "identity.json").write_text(json.dumps({"config": {}, "data": {}, "budget": "full"}))
    (root / "m2").mkdir()                                               # not trained yet: no say
    budget, said = default_budget(real, False, root)
    assert budget == "full" and f"the members in {root} trained at it" in said
    assert default_budget(real, False, tmp_path / "none")[0] == "quick"


def test_fresh_chooses_its_budget_afresh_not_from_the_members_it_moves_aside(tiny_data, tiny_recipe, tmp_path,
                                                                              monkeypatch):
    """Probe 33: `--fresh` took the budget of the members it was about to move aside (a demo's quick one
    for the real data, or the reverse) and said they were the reason."""
    import json

    import torch

    from kit.zoo import RecipeRun

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    recipe = tiny_recipe("mean", budget={"quick": {"train.max_steps": 5}, "full": {"train.max_steps": 5}})
    root = tmp_path / "runs" / "tiny"
    (root / "mean").mkdir(parents=True)
    (root / "mean" / "identity.json").write_text(json.dumps({"config": {}, "data": {}, "budget": "full"}))
    said = []

    def opened(fresh: bool, only=None) -> str:
        overrides = {"submit": None, "ensemble": None, "pseudo": None, "distill": None, "refit": None, "lmft": None,
                     "audition": False, "timed": (None, None), "blocker": None, "fresh": fresh, "elsewhere": False}
        run = RecipeRun.open(recipe, str(tiny_data), None, str(tmp_path / "runs"), only, False, said.append, 1,
                             str(tmp_path / "subs"), overrides)
        return run.budget

    assert opened(fresh=False) == "full"                      # a re-run continues them
    assert opened(fresh=True) == "quick"                      # synthetic data, chosen afresh
    (root / "kept").mkdir()                                   # probe 34: --fresh --only moves only its own aside
    (root / "kept" / "identity.json").write_text(json.dumps({"config": {}, "data": {}, "budget": "full"}))
    assert opened(fresh=True, only=["mean"]) == "full"
