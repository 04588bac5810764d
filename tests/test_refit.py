"""The refit ([after] refit, `kit recipe run --refit`): after the vote is fitted, every voted member
is fine-tuned on train + validation, and the same vote (fitted on the members' held-out validation
predictions) is applied to the refit members' test predictions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kit.data import FeatureStore, split_for
from kit.records import SubmissionManifest
from kit.rundir import RunDir
from kit.train.targets import build_targets

from conftest import recipe_toml

REFIT = recipe_toml(["a", {"name": "b", "train.seed": 1}], name="tinyrf",
                    base={"train": {"max_steps": 30, "eval_every": 15}},
                    after={"predict": True, "which": "last", "ensemble": "auto", "refit": {"share": 0.3}})


def test_a_refit_trains_on_validation_too_with_its_real_labels(tiny_data):
    store = FeatureStore.open(tiny_data, progress=False)
    split = split_for(store)
    held_out = build_targets(store, split)
    refit = build_targets(store, split, train_on_val=True)
    assert np.intersect1d(held_out.index, split.val).size == 0 and (held_out.labels[split.val] == -1).all()
    assert sorted(refit.index) == sorted(np.concatenate([split.train, split.val]))
    assert (refit.labels[split.val] == store.labels[split.val]).all()


@pytest.mark.slow
def test_recipe_refit_votes_the_refit_members_with_the_vote_fitted_before(tiny_data, tmp_path):
    from kit.zoo import run_recipe

    recipe = tmp_path / "tinyrf.toml"
    recipe.write_text(REFIT)
    runs, subs = tmp_path / "runs", tmp_path / "subs"
    result = run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(runs), workers=1, progress=False,
                        submissions=subs)
    root = runs / "tinyrf"
    for name in ("a", "b"):
        refit = RunDir.of(root / f"{name}-refit")
        assert refit.summary()["step"] == 9                             # share 0.3 of max_steps 30
        assert "train_on_val = true" in (refit.path / "config.toml").read_text()
    before, after = result.before_refit, result.ensemble
    assert before is not None and after is not None and Path(before.csv).name == "tinyrf-before-refit.csv"
    manifest = SubmissionManifest.load(subs / "tinyrf.json")
    assert [Path(m).name for m in manifest.members] == ["a-refit", "b-refit"]
    assert [Path(m).name for m in manifest.fitted_on] == ["a", "b"]
    # the same fit: validation predictions of the members before the refit, so the same method and weights
    prior = SubmissionManifest.load(subs / "tinyrf-before-refit.json")
    assert (manifest.method, manifest.weights, manifest.temperatures) == (prior.method, prior.weights,
                                                                          prior.temperatures)
    assert after.val_acc == before.val_acc and after.members == [str(root / "a-refit"), str(root / "b-refit")]
    assert result.refits == after.members                          # the typed record the bench reads
    # a re-run keeps the finished refits
    summary = RunDir.of(root / "a-refit").summary()
    run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(runs), workers=1, progress=False,
               submissions=subs)
    assert RunDir.of(root / "a-refit").summary() == summary
    # --fresh moves the refits aside with their members (probe 23: they stayed, and were moved aside again
    # inside the new root when the refit came round, the old run split over two places)
    logs: list[str] = []
    run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(runs), workers=1, progress=False,
               submissions=subs, fresh=True, log=logs.append)
    [old] = runs.glob("tinyrf.old-*")
    assert sorted(p.name for p in old.iterdir() if p.is_dir()) == ["a", "a-refit", "b", "b-refit"]
    assert not list(root.glob("*.old-*")) and any("a-refit, b-refit" in line for line in logs)


@pytest.mark.slow
def test_a_student_taught_after_the_refit_reports_no_in_sample_validation_score(tiny_data, tmp_path):
    """The student starts from a refit member and trains on validation too: its score there is no
    estimate of anything, so the recipe gives none (before: 1.0 on data where the members scored 0.5)."""
    from kit.zoo import run_recipe

    recipe = tmp_path / "tinyrf.toml"
    recipe.write_text(recipe_toml(["a", {"name": "b", "train.seed": 1}], name="tinyrf",
                                  base={"train": {"max_steps": 30, "eval_every": 15}},
                                  after={"predict": True, "which": "last", "ensemble": "auto",
                                         "refit": {"share": 0.3}, "distill": {"share": 0.2}}))
    logs: list[str] = []
    result = run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(tmp_path / "runs"), workers=1,
                        progress=False, submissions=tmp_path / "subs", log=logs.append)
    student = tmp_path / "runs" / "tinyrf" / "student"
    assert "train_on_val = true" in (student / "config.toml").read_text()
    assert result.student is not None and result.student.csv and result.student.val_acc is None
    assert any("no held-out score" in line for line in logs), logs


def test_by_hand_a_vote_or_report_of_refit_members_says_its_validation_scores_are_in_sample(tiny_data, tmp_path,
                                                                                          capsys):
    from kit.cli import main
    from kit.zoo import run_recipe

    recipe = tmp_path / "tinyrf.toml"
    recipe.write_text(REFIT)
    run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(tmp_path / "runs"), workers=1, progress=False,
               submissions=tmp_path / "subs")
    root = tmp_path / "runs" / "tinyrf"
    refits = [str(root / "a-refit"), str(root / "b-refit")]
    capsys.readouterr()
    for argv in (["report", *refits], ["ensemble", *refits, "--vote", "auto", "--out", str(tmp_path / "by-hand")]):
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert "trained on the validation split too (a refit)" in err and "in-sample" in err, err
    assert main(["report", str(root / "a"), str(root / "b")]) == 0                # the members refit from: honest
    assert "in-sample, not estimates" not in capsys.readouterr().err
