"""The accuracy bench: a recipe and the course sample at the same wall time, scored with the key."""
import json

import pytest

from kit.bench_accuracy import run_accuracy_bench

# A Transformer and a ResNet, statistics pooling and linear heads, voted on by the auto ensemble.
MEMBERS = ("tfm", {"name": "cnn", "model.encoder": "resnet", "model.channels": 4, "model.resnet_depth": 10})


@pytest.mark.slow
def test_accuracy_bench_scores_members_ensemble_and_course_sample(tiny_data, tiny_recipe, tmp_path):
    recipe = tiny_recipe(*MEMBERS, name="pair", file="pair.toml", after={"ensemble": "auto", "which": "last"},
                         base={"model": {"pooling": "stats", "head": "linear", "head_bn": True},
                               "train": {"max_steps": 40}})
    result = run_accuracy_bench(str(recipe), data=str(tiny_data), out=tmp_path, runs=tmp_path / "runs",
                                per_member_minutes=0.02, course_minutes=0.05, workers=1)
    kinds = [r["kind"] for r in result["rows"]]
    assert kinds == ["member", "member", "ensemble", "baseline"]
    for row in result["rows"]:
        assert 0.0 <= row["public"] <= 1.0 and 0.0 <= row["private"] <= 1.0
    course = result["rows"][-1]
    assert 0 < course["minutes"] < 0.5                 # the time it was given (by default the recipe's)
    assert "gain_over_best_member" in result and "private_over_course" in result
    saved = json.loads((tmp_path / "bench_accuracy.json").read_text())
    assert saved["rows"] == result["rows"]
    md = (tmp_path / "bench_accuracy.md").read_text()
    assert "course sample (same wall time)" in md and "ensemble vs best member" in md
    assert not (tmp_path / "submissions").exists()            # nothing written outside the bench's runs dir


@pytest.mark.slow
def test_accuracy_bench_scores_each_refit_member_with_no_validation_figure(tiny_data, tiny_recipe, tmp_path):
    recipe = tiny_recipe(*MEMBERS, name="pairrf", file="pairrf.toml",
                         after={"ensemble": "auto", "which": "last", "refit": {"share": 0.3}},
                         base={"model": {"pooling": "stats", "head": "linear", "head_bn": True},
                               "train": {"max_steps": 30, "eval_every": 15}})
    result = run_accuracy_bench(str(recipe), data=str(tiny_data), out=tmp_path, runs=tmp_path / "runs",
                                per_member_minutes=0.02, course=False, stages="refit", same_budget=True,
                                workers=1)          # in this process: worker processes are tested elsewhere
    refits = [r for r in result["rows"] if r["kind"] == "refit member"]
    assert [r["name"] for r in refits] == ["tfm-refit", "cnn-refit"]
    for row in refits:           # trained on validation: scored on test only
        assert row["val_acc"] is None and 0.0 <= row["private"] <= 1.0 and row["minutes"] > 0
    kinds = [r["kind"] for r in result["rows"]]
    assert kinds.index("refit member") > kinds.index("ensemble")          # after the plain run's rows
    md = (tmp_path / "bench_accuracy.md").read_text()
    assert "| tfm-refit |  |" in md and "vote before the refit" in md
