"""Hard and soft votes with known answers, Caruana weight selection, temperature scaling, the
cross-fitted choice of a combination, and ensembling run dirs."""
import json

import numpy as np
import pandas as pd
import pytest

from kit.cli import main
from kit.ensemble import (
    auto_ensemble,
    calibrate,
    crossfit,
    ensemble_runs,
    fit_temperature,
    fit_weights,
    fold_ids,
    hard_vote,
    load_member,
    log_probs,
    select_weights,
    soft_vote,
)
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.submission import validate_submission

from conftest import onehotish


# ---------------------------------------------------------------- votes on hand-made arrays
def test_hard_vote_majority():
    a, b, c = onehotish([0, 1, 2]), onehotish([0, 2, 2]), onehotish([1, 1, 0])
    assert hard_vote([a, b, c]).tolist() == [0, 1, 2]


def test_hard_vote_tie_goes_to_larger_summed_probability_then_lowest_class():
    a = np.array([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0]])
    b = np.array([[0.0, 0.6, 0.4], [0.4, 0.6, 0.0]])
    # row 0: one vote each for 0 and 1; summed probs 0.9 vs 0.7 -> 0
    # row 1: one vote each; summed probs 1.0 vs 1.0 -> lowest class, 0
    assert hard_vote([a, b]).tolist() == [0, 0]
    assert hard_vote([b, a]).tolist() == [0, 0]                # member order does not matter
    # class 2 gets no vote, so its larger summed probability cannot win the 0-vs-1 tie
    c = np.array([[0.5, 0.0, 0.5]])               # argmax 0 (first of the two maxima)
    d = np.array([[0.0, 0.5, 0.5]])               # argmax 1
    assert hard_vote([c, d]).tolist() == [0]


def test_hard_vote_weighted():
    a, b, c = onehotish([0, 0]), onehotish([1, 1]), onehotish([1, 2])
    assert hard_vote([a, b, c]).tolist() == [1, 0]             # row 1: three-way tie, equal sums -> 0
    assert hard_vote([a, b, c], weights=[3, 1, 1]).tolist() == [0, 0]
    # row 0: class 1 gets 0.1 + 0.2 (= 0.30000000000000004 in floats), class 0 gets 0.3: a tie,
    # which the confident member a (0.9 on class 0) wins on summed probability
    a = onehotish([0, 0], p=0.9)
    assert hard_vote([a, b, c], weights=[0.3, 0.1, 0.2]).tolist() == [0, 0]
    assert hard_vote([a, b, c], weights=[0.3, 0.1, 0.21]).tolist() == [1, 0]   # a real majority


def test_soft_vote_weighted_mean():
    a = np.array([[0.8, 0.2], [0.3, 0.7]])
    b = np.array([[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_allclose(soft_vote([a, b]), [[0.5, 0.5], [0.4, 0.6]])
    np.testing.assert_allclose(soft_vote([a, b], weights=[3, 1]), [[0.65, 0.35], [0.35, 0.65]])
    with pytest.raises(KitError, match="2 weights given for 3"):
        soft_vote([a, b, a], weights=[1, 2])


def test_select_weights_prefers_the_better_member():
    labels = np.array([0, 1, 2, 0, 1, 2])
    good = onehotish([0, 1, 2, 0, 1, 0])            # 5/6 right
    bad = onehotish([1, 2, 0, 0, 1, 2])             # 3/6 right
    w = select_weights([bad, good], labels)
    assert w[1] > w[0] and w.sum() == pytest.approx(1)
    assert select_weights([bad, good], labels, vote="hard")[1] > 0.5


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_selected_bag_is_at_least_as_good_as_the_best_member(mode):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 200)
    members = []
    for skill in (0.3, 0.5, 0.4, 0.2):                # noisy members of different quality
        logits = rng.normal(size=(200, 5))
        logits[np.arange(200), labels] += 3 * skill
        members.append(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    w = select_weights(members, labels, vote=mode)
    pred = hard_vote(members, w) if mode == "hard" else soft_vote(members, w).argmax(1)
    best_single = max((p.argmax(1) == labels).mean() for p in members)
    assert (pred == labels).mean() >= best_single


# ---------------------------------------------------------------- calibration and honest choice
def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def member_with_errors(rng, labels, c, error_rate, right_margin, wrong_margin):
    """Probabilities of a member that is wrong on a random `error_rate` of utterances, with
    margin `right_margin` on the label when right and `wrong_margin` on a random other class when wrong."""
    n = len(labels)
    rows = np.arange(n)
    z = rng.normal(0, 0.3, (n, c))
    wrong = rng.random(n) < error_rate
    other = (labels + rng.integers(1, c, n)) % c
    z[rows, labels] += np.where(wrong, 0, right_margin)
    z[rows, other] += np.where(wrong, wrong_margin, 0)
    return softmax(z)


@pytest.mark.parametrize("true_t", [0.4, 1.0, 3.0])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (4000, 10))                      # the member's logits
    truth = softmax(z / true_t)                           # the labels really come from softmax(z / T)
    labels = (truth.cumsum(axis=1) > rng.random((4000, 1))).argmax(axis=1)
    t = fit_temperature(log_probs(softmax(z)), labels)
    assert t == pytest.approx(true_t, rel=0.08)
    calibrated = np.exp(calibrate(log_probs(softmax(z)), t))
    np.testing.assert_allclose(calibrated.sum(axis=1), 1)
    assert (calibrated.argmax(axis=1) == z.argmax(axis=1)).all()     # scaling never changes the argmax


def test_fit_weights_favour_the_informative_member():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, 400)
    good = member_with_errors(rng, labels, 6, 0.2, 3, 1)
    noise = softmax(rng.normal(0, 1, (400, 6)))
    for pool in ("geo", "mean"):
        w = fit_weights([log_probs(noise), log_probs(good)], labels, pool)
        assert w.sum() == pytest.approx(1) and (w >= 0).all() and w[1] > 0.8


def test_crossfit_never_reads_the_held_out_fold_labels():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 120)
    logps = [log_probs(member_with_errors(rng, labels, 5, 0.4, 3, 1.5)) for _ in range(3)]
    folds = fold_ids(labels, 5)
    assert sorted(np.bincount(folds).tolist()) == [24] * 5
    first = crossfit(logps, labels, folds=folds)
    held = folds == 0
    shuffled = labels.copy()
    shuffled[held] = (labels[held] + 1 + rng.integers(0, 4, held.sum())) % 5     # every held-out label changed
    second = crossfit(logps, shuffled, folds=folds)
    for method, pred in first["oof_pred"].items():
        np.testing.assert_array_equal(second["oof_pred"][method][held], pred[held])
    # the other folds were fitted on the changed labels, so their predictions may move; fold 0's score does
    assert first["oof_acc"] != second["oof_acc"]


def test_calibrated_vote_of_complementary_members_beats_the_best_member():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    # each member is wrong on a different random third, and only mildly sure when wrong
    members = [member_with_errors(rng, labels, 10, 0.35, 4, 1) for _ in range(3)]
    best = max((m.argmax(axis=1) == labels).mean() for m in members)
    r = auto_ensemble(members, labels, test_probs_list=members)
    assert r["method"] in ("equal", "weighted")
    assert r["oof_acc"] > best + 0.1
    assert r["oof_acc"] >= max(c["oof_acc"] for c in r["candidates"].values())
    assert r["candidates"]["single"]["oof_acc"] <= best
    assert (r["test_pred"] == r["val_pred"]).all()           # fitted on all of validation, applied to test


def test_one_dominant_member_among_noise_falls_back_to_the_single_member():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 300)
    dominant = member_with_errors(rng, labels, 10, 0.2, 4, 4)
    noise = [softmax(rng.normal(0, 3, (300, 10))) for _ in range(2)]
    r = auto_ensemble([noise[0], dominant, noise[1]], labels)
    assert r["method"] == "single" and r["weights"].tolist() == [0, 1, 0]
    assert r["candidates"]["hard"]["oof_acc"] < r["oof_acc"]
    assert r["temperatures"][0] > 5 and r["temperatures"][2] > 5    # noise is flattened


# ---------------------------------------------------------------- run dirs on disk (conftest: predicted)
def test_ensemble_writes_valid_csv_and_manifest(tmp_path, predicted):
    r1 = predicted.run("r1", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2])
    r2 = predicted.run("r2", [0, 1, 2, 1, 1, 2], [0, 1, 1, 2])
    r3 = predicted.run("r3", [1, 1, 2, 0, 2, 2], [1, 1, 2, 0])
    out = tmp_path / "subs"
    r = ensemble_runs([r1, r2, r3], vote="hard", name="three", out_dir=out)

    frame = pd.read_csv(r["csv"])
    assert list(frame.columns) == ["Id", "Category"]
    assert frame["Id"].tolist() == predicted.TEST_IDS
    assert frame["Category"].tolist() == ["id10001", "id10002", "id10003", "id10003"]
    assert validate_submission(r["csv"], predicted.data_dir) == []
    # val: r1 5/6, r2 5/6, r3 4/6, each wrong in a different place, so the majority is always right
    assert [row["val_acc"] for row in r["table"][:3]] == pytest.approx([5 / 6, 5 / 6, 4 / 6])
    assert r["table"][-1]["member"].startswith("ensemble") and r["val_acc"] == pytest.approx(6 / 6)

    manifest = json.loads(r["manifest"].read_text())
    assert manifest["members"] == [str(r1), str(r2), str(r3)] and manifest["vote"] == "hard"
    assert manifest["csv_sha256"] == sha256_file(r["csv"])
    assert manifest["member_test_probs_sha256"][0] == sha256_file(r1 / "test_probs.npy")
    assert manifest["member_settings"][0]["window"] == 256


def test_auto_weights_never_read_test_data(tmp_path, predicted):
    rng = np.random.default_rng(0)
    runs = [predicted.run("a", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2]),
            predicted.run("b", [1, 2, 0, 0, 1, 2], [0, 1, 1, 2])]
    first = ensemble_runs(runs, vote="soft", weights="auto", name="w1", out_dir=tmp_path / "s")
    for run in runs:                                  # other test predictions (still probabilities), same validation
        other = rng.random((len(predicted.TEST_IDS), 3))
        np.save(run / "test_probs.npy", (other / other.sum(1, keepdims=True)).astype(np.float32))
    second = ensemble_runs(runs, vote="soft", weights="auto", name="w2", out_dir=tmp_path / "s")
    assert first["weights"] == second["weights"] and first["weights"][0] > first["weights"][1]


def test_mismatched_splits_and_missing_predictions_are_refused(tmp_path, predicted):
    r1 = predicted.run("r1", [0] * 6, [0] * 4)
    other = list(reversed(predicted.VAL_IDS))
    r2 = predicted.run("r2", [0] * 6, [0] * 4, val_ids=other)
    with pytest.raises(KitError, match="r1 and .*r2 were validated on different splits"):
        ensemble_runs([r1, r2], out_dir=tmp_path / "s")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(KitError, match="run `kit predict .*bare` first"):
        ensemble_runs([r1, bare], out_dir=tmp_path / "s")



def test_members_predicted_on_other_data_are_refused_as_such(tmp_path, predicted):
    r1 = predicted.run("r1", [0] * 6, [0] * 4)
    r2 = predicted.run("r2", [0] * 6, [0] * 4, val_ids=list(reversed(predicted.VAL_IDS)), data_dir="/data/other")
    with pytest.raises(KitError, match="r1 and .*r2 were predicted on different data .*/data/other"):
        ensemble_runs([r1, r2], out_dir=tmp_path / "s")

def test_predictions_for_other_data_are_refused(tmp_path, predicted):
    run = predicted.run("r1", [0] * 6, [0] * 4)
    ids = json.loads((run / "ids.json").read_text())
    (run / "ids.json").write_text(json.dumps({**ids, "test": list(reversed(predicted.TEST_IDS))}))
    with pytest.raises(KitError, match="do not follow .*testdata.json"):
        ensemble_runs([run], out_dir=tmp_path / "s")
    assert not (tmp_path / "s").exists()                  # nothing half-written


def test_cli_ensemble_prints_table(tmp_path, predicted, capsys):
    r1 = predicted.run("r1", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2])
    r2 = predicted.run("r2", [0, 1, 2, 1, 1, 2], [0, 1, 1, 2])
    out = tmp_path / "subs"
    assert main(["ensemble", str(r1), str(r2), "--vote", "soft", "--weights", "1,3", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ensemble (soft vote)" in text and "0.750" in text
    [csv] = out.glob("soft-2members-*.csv")
    assert validate_submission(csv, predicted.data_dir) == []
    assert main(["ensemble", str(r1), "--weights", "x,y", "--out", str(out)]) == 2


def test_auto_ensemble_of_run_dirs_records_its_choice(tmp_path, predicted):
    # predicted.run writes an ids.json of before the inference mode was recorded: no "mode" key
    r1 = predicted.run("r1", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2])
    r2 = predicted.run("r2", [0, 1, 2, 1, 1, 2], [0, 1, 1, 2])
    r3 = predicted.run("r3", [1, 1, 2, 0, 2, 2], [1, 1, 2, 0])
    assert load_member(r1).ids.mode is None and load_member(r1).ids.inference_mode == "sliding"
    r = ensemble_runs([r1, r2, r3], vote="auto", name="auto", out_dir=tmp_path / "s", folds=3)
    manifest = json.loads(r["manifest"].read_text())
    assert manifest["weights_mode"] == "auto" and manifest["method"] == r["method"]
    assert manifest["folds"] == 3 and manifest["pool"] == "geo"
    assert len(manifest["temperatures"]) == 3 and all(t > 0 for t in manifest["temperatures"])
    assert set(manifest["candidates"]) == {"single", "hard", "equal", "weighted"}
    for c in manifest["candidates"].values():
        assert 0 <= c["oof_acc"] <= 1 and 0 <= c["val_acc"] <= 1 and sum(c["weights"]) == pytest.approx(1)
    best_oof = max(c["oof_acc"] for c in manifest["candidates"].values())
    assert manifest["oof_acc"] == best_oof == r["oof_acc"]
    assert manifest["member_settings"][0]["mode"] == "sliding"
    assert r["table"][-1]["oof_acc"] == r["oof_acc"] and "temperature" in r["table"][0]
    assert validate_submission(r["csv"], predicted.data_dir) == []
    # soft + auto chooses among the soft family only; hard + auto between one member and the hard vote
    soft = ensemble_runs([r1, r2, r3], vote="soft", weights="auto", name="s", out_dir=tmp_path / "s")
    hard = ensemble_runs([r1, r2, r3], vote="hard", weights="auto", name="h", out_dir=tmp_path / "s")
    assert set(soft["candidates"]) == {"single", "equal", "weighted"}
    assert set(hard["candidates"]) == {"single", "hard"}
    with pytest.raises(KitError, match="--vote auto chooses its own weights"):
        ensemble_runs([r1, r2], vote="auto", weights=[1, 2], out_dir=tmp_path / "s")


def test_old_full_length_ids_json_reads_as_full_mode(tmp_path, predicted):
    run = predicted.run("r1", [0] * 6, [0] * 4)
    ids = json.loads((run / "ids.json").read_text())
    (run / "ids.json").write_text(json.dumps({**ids, "full": True}))
    assert load_member(run).ids.inference_mode == "full"


def test_cli_ensemble_auto_prints_the_out_of_fold_choice(tmp_path, predicted, capsys):
    r1 = predicted.run("r1", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2])
    r2 = predicted.run("r2", [0, 1, 2, 1, 1, 2], [0, 1, 1, 2])
    out = tmp_path / "subs"
    assert main(["ensemble", str(r1), str(r2), "--vote", "auto", "--folds", "3", "--pool", "mean",
                 "--name", "a", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "out-of-fold val acc of each method" in text and "ensemble (auto:" in text
    assert json.loads((out / "a.json").read_text())["pool"] == "mean"


def test_a_copy_of_a_run_dir_voted_as_a_second_member_is_said(tmp_path, predicted):
    """Probe 10: `kit ensemble A COPY` (a cp -r of A) voted A twice without a word; a link or `A/..` form is
    refused. A copy (or two members of the same settings and seed) is voted as asked, with a warning."""
    import shutil

    a = predicted.run("a", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2])
    b = predicted.run("b", [1, 2, 0, 0, 1, 2], [0, 1, 1, 2])
    copy = tmp_path / "copy-of-a"
    shutil.copytree(a, copy)
    logs: list[str] = []
    ensemble_runs([a, b, copy], out_dir=tmp_path / "s", log=logs.append)
    assert [line for line in logs if "hold the same test predictions" in line] == [
        f"warning: {a} and {copy} hold the same test predictions (a copy of one run dir, or the same settings and "
        "seed): that model counts twice"]
    logs.clear()
    ensemble_runs([a, b], out_dir=tmp_path / "s", log=logs.append)
    assert not any("same test predictions" in line for line in logs)
