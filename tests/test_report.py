"""The ensemble report: oracle and disagreement on hand-made predictions, a report of run dirs
with its picture, the test scores from an answer key, and the `kit report` command."""
import json

import numpy as np
import pytest

from kit.cli import main
from kit.ensemble import ensemble_runs
from kit.errors import KitError
from kit.report import disagreement_matrix, format_report, mean_disagreement, oracle_accuracy, report_runs


def test_oracle_and_disagreement_on_a_hand_made_example():
    labels = np.array([0, 1, 2, 0])
    preds = np.array([[0, 1, 0, 1],        # right on 0, 1
                      [0, 2, 2, 1],        # right on 0, 2
                      [1, 2, 0, 1]])       # right on none
    assert oracle_accuracy(preds, labels) == 0.75        # utterance 3 nobody gets right
    matrix = disagreement_matrix(preds)
    np.testing.assert_allclose(matrix, [[0, 0.5, 0.5],
                                        [0.5, 0, 0.5],
                                        [0.5, 0.5, 0]])
    assert mean_disagreement(matrix) == pytest.approx(0.5)
    assert mean_disagreement(disagreement_matrix(preds[:1])) is None


# ---------------------------------------------------------------- run dirs on disk (conftest: predicted)
@pytest.fixture
def runs(predicted):
    return [predicted.run("r1", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2]),
            predicted.run("r2", [0, 1, 2, 1, 1, 2], [0, 1, 1, 2], mode="full", val_acc_full=5 / 6,
                          val_acc_sliding=4 / 6),
            predicted.run("r3", [1, 1, 2, 0, 2, 2], [1, 1, 2, 0])]


@pytest.fixture
def answers(tmp_path, predicted):
    key = tmp_path / "answers.csv"
    usage = ["Public", "Public", "Private", "Private"]
    key.write_text("Id,Category,Usage\n" + "".join(
        f"{i},{predicted.SPEAKERS[k]},{u}\n" for i, k, u in zip(predicted.TEST_IDS, [0, 1, 2, 0], usage, strict=True)))
    return key


def test_report_of_an_ensemble_writes_its_picture_beside_the_csv(tmp_path, runs, answers):
    ens = ensemble_runs(runs, vote="hard", name="three", out_dir=tmp_path / "subs")
    r = report_runs(runs, ensemble_result=ens, answers=answers)
    assert [m["member"] for m in r["members"]] == ["r1", "r2", "r3"]
    assert [m["val_acc"] for m in r["members"]] == pytest.approx([5 / 6, 5 / 6, 4 / 6])
    assert [m["mode"] for m in r["members"]] == ["sliding", "full", "sliding"]
    assert r["members"][1]["val_acc_full"] == pytest.approx(5 / 6) and r["members"][0]["val_acc_full"] is None
    assert r["oracle"] == 1.0 and r["best_member_acc"] == pytest.approx(5 / 6)
    # the three members' argmax differ pairwise on 2, 3 and 3 of the 6 utterances
    assert r["mean_disagreement"] == pytest.approx((2 + 3 + 3) / 18)
    e = r["ensemble"]
    assert e["val_acc"] == 1.0 and e["oof_acc"] is None and e["gain_in_sample"] == pytest.approx(1 / 6)
    # test: r1 gets 3/4 (public 2/2, private 1/2); the hard vote's CSV the same
    assert (r["members"][0]["public"], r["members"][0]["private"]) == (1.0, 0.5)
    assert (e["public"], e["private"]) == (1.0, 0.5)
    png = tmp_path / "subs" / "three_report.png"
    assert r["png"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = format_report(r)
    assert "oracle" in text and "disagreement" in text and "three_report.png" in text


def test_report_without_an_ensemble_computes_the_honest_one(tmp_path, runs):
    r = report_runs(runs, png=tmp_path / "r.png", folds=3)
    e = r["ensemble"]
    assert e["csv"] is None and e["method"] in ("single", "hard", "equal", "weighted")
    assert 0 <= e["oof_acc"] <= 1 and e["gain_oof"] == pytest.approx(e["oof_acc"] - 5 / 6)
    assert all(m["temperature"] > 0 for m in r["members"])
    assert (tmp_path / "r.png").is_file()
    assert "out-of-fold" in format_report(r)


def test_report_refuses_a_manifest_of_other_runs(tmp_path, runs):
    ens = ensemble_runs(runs[:2], vote="soft", name="two", out_dir=tmp_path / "subs")
    with pytest.raises(KitError, match="made from other runs"):
        report_runs(runs, ensemble_result=ens["manifest"])


def test_cli_report(tmp_path, runs, answers, capsys):
    assert main(["ensemble", *map(str, runs), "--vote", "auto", "--folds", "3", "--name", "a",
                 "--out", str(tmp_path / "subs")]) == 0
    capsys.readouterr()
    assert main(["report", *map(str, runs), "--ensemble", str(tmp_path / "subs" / "a.json"),
                 "--answers", str(answers)]) == 0
    text = capsys.readouterr().out
    assert "public" in text and "out-of-fold (honest)" in text and "r2" in text
    assert (tmp_path / "subs" / "a_report.png").is_file()
    assert main(["report", *map(str, runs), "--json", "--png", str(tmp_path / "j.png")]) == 0
    assert json.loads(capsys.readouterr().out)["oracle"] == 1.0


def test_report_says_which_member_lost_steps_to_a_shared_machine(runs, capsys):
    quiet, shared = {"probed": 10.0, "achieved": 9.8, "cpu_cores": 0.97}, {"probed": 6.9, "achieved": 6.8,
                                                                           "cpu_cores": 0.04}  # shared from the start
    for run, rates in zip(runs[:2], (quiet, shared), strict=True):
        (run / "summary.json").write_text(json.dumps({"name": run.name, "step": 40, "stopped_reason": "budget",
                                                       "steps_per_second": rates}))
    (runs[2] / "summary.json").write_text("{damaged")                    # no summary to read: nothing said
    text = format_report(report_runs(runs, png=False, folds=3))
    lines = [line for line in text.splitlines() if "lost steps" in line]
    assert lines == ["r2: lost steps: 0.04 of a CPU core (CPU time / wall time) - was the machine shared?"]


def test_report_of_a_vote_kept_aside_scores_and_draws_that_vote_not_the_newer_one(tmp_path, runs, answers):
    """Probe 36: a manifest kept aside (NAME.json.old-<time>, when a submitted vote is replaced) names
    NAME.csv, the newer vote's file: the report scored that one as its own and drew over its picture."""
    subs = tmp_path / "subs"
    ensemble_runs(runs, vote="hard", name="v", out_dir=subs)            # test [0,1,2,2]: public 1.0, private 0.5
    stamp = ".old-20261206-101500"
    for name in ("v.csv", "v.json"):                                    # as kit.submission.keep_submitted moves them
        (subs / name).rename(subs / (name + stamp))
    ensemble_runs(runs[2:], vote="hard", name="v", out_dir=subs)        # the newer vote: public 0.5, private 1.0
    r = report_runs(runs, ensemble_result=subs / ("v.json" + stamp), answers=answers)
    assert (r["ensemble"]["public"], r["ensemble"]["private"]) == (1.0, 0.5)
    assert r["png"] == str(subs / f"v.csv{stamp}_report.png") and not (subs / "v_report.png").exists()
    (subs / ("v.csv" + stamp)).write_text("Id,Category\n")              # its CSV changed since: said, not scored
    with pytest.raises(KitError, match="no CSV holds the vote it records"):
        report_runs(runs, ensemble_result=subs / ("v.json" + stamp), answers=answers)


def test_a_home_folder_after_an_equals_sign_is_the_home_folder(tmp_path, runs, monkeypatch, capsys):
    """Probe 36: `--out=~/subs` (the shell leaves that `~` as it is) made a folder named `~` in the current
    one, while kit's lines read like the home folder."""
    home, here = tmp_path / "home", tmp_path / "here"
    home.mkdir(), here.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(here)
    assert main(["ensemble", *map(str, runs), "--name", "h", "--out=~/subs"]) == 0
    assert (home / "subs" / "h.csv").is_file() and not (here / "~").exists()
