"""Pseudo-labelling and distillation: thresholds, files and manifest, no validation leakage,
resume of an interrupted round, the student as an ordinary run dir."""
from __future__ import annotations

import csv as csv_module
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from kit.data import FeatureStore, split_for
from kit.errors import KitError
from kit.infer import predict_run
from kit.pseudo import check_pseudo_labels, choose_threshold, make_pseudo_labels, true_precision
from kit.rundir import RunDir
from kit.train import train

from conftest import kit_cli, one_error, recipe_toml
from test_train import tiny_cfg

SHORT = ["train.max_steps=40", "train.eval_every=20"]


@pytest.fixture(scope="module")
def members(tiny_data, tmp_path_factory):
    """Two predicted tiny members (different seeds)."""
    root = tmp_path_factory.mktemp("members")
    dirs = []
    for seed in (0, 1):
        run_dir = root / f"m{seed}"
        train(tiny_cfg(tiny_data, *SHORT, f"train.seed={seed}"), run_dir, progress=False)
        predict_run(run_dir, which="last", progress=False)
        dirs.append(run_dir)
    return dirs


@pytest.fixture(scope="module")
def store(tiny_data):
    return FeatureStore.open(tiny_data, "float32", progress=False)


def test_threshold_keeps_the_target_precision_on_validation():
    conf = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    right = np.array([1, 1, 1, 0, 1, 1, 0, 0], dtype=bool)
    chosen = choose_threshold(conf, right, test_conf=np.array([0.97, 0.75, 0.65, 0.1]), precision=0.8,
                              min_support=3)
    # top 6 are 5/6 = 0.83 right; the top 7 would be 5/7 = 0.71
    assert chosen["threshold"] == 0.6 and chosen["val_count"] == 6
    assert chosen["estimated_precision"] == pytest.approx(5 / 6)
    assert chosen["test_count"] == 3
    none = choose_threshold(conf, np.zeros(8, dtype=bool), np.array([0.9]), precision=0.9)
    assert none["test_count"] == 0 and none["estimated_precision"] is None
    # the top 2 alone are right, but an estimate must rest on at least 7 utterances: none reaches 0.8 there
    thin = choose_threshold(conf, np.array([1, 1, 0, 0, 0, 0, 0, 0], dtype=bool), np.array([0.99]), precision=0.8,
                            min_support=7)
    assert thin["test_count"] == 0
    top = choose_threshold(conf, right, np.array([0.97, 0.75, 0.65, 0.1]), top_fraction=0.5)
    assert top["threshold"] == 0.75 and top["test_count"] == 2 and top["val_count"] == 4


def test_pseudo_labels_files_and_manifest(members, tiny_data, tiny_answers, tmp_path):
    rec = make_pseudo_labels(members, tmp_path / "pl", top_fraction=0.5)
    csv = pd.read_csv(tmp_path / "pl" / "pseudo.csv", dtype={"Id": str, "Category": str})
    test_ids = json.loads((tiny_data / "testdata.json").read_text())["utterances"]
    test_ids = {u["feature_path"] for u in test_ids}
    assert len(csv) == rec.test_count == 10 and set(csv["Id"]) <= test_ids
    saved = json.loads((tmp_path / "pl" / "pseudo.json").read_text())
    # what is written is what was compared: read back exactly, every confidence is at or above the
    # recorded threshold, and the lowest is it (top_fraction: the 10th highest confidence)
    with open(tmp_path / "pl" / "pseudo.csv", newline="") as f:
        written = [float(r["Confidence"]) for r in csv_module.DictReader(f)]
    assert min(written) == saved["threshold"] == rec.threshold
    assert saved["test_count"] == 10 and saved["n_test"] == 20 and saved["top_fraction"] == 0.5
    assert saved["members"] == [str(d.resolve()) for d in members] and len(saved["csv_sha256"]) == 64
    with np.load(tmp_path / "pl" / "teacher.npz") as z:
        assert z["probs"].shape == (20, 8) and np.allclose(z["probs"].sum(axis=1), 1, atol=1e-5)
        assert set(z["ids"].tolist()) == test_ids
    key = pd.read_csv(tiny_answers, dtype=str).set_index("Id")["Category"]
    assert true_precision(tmp_path / "pl" / "pseudo.csv", tiny_answers) == pytest.approx(
        float((csv["Category"].to_numpy() == key.reindex(csv["Id"]).to_numpy()).mean()))


def test_a_validation_utterance_in_the_pseudo_labels_is_refused(tiny_data, store, tmp_path):
    split = split_for(store, 0.1, 0)
    val_path = store.layout.train[int(split.val[0])].path
    (tmp_path / "bad.csv").write_text(f"Id,Category\n{val_path},{store.speakers[0]}\n")
    with pytest.raises(KitError, match="training utterance"):       # hand-written: allowed in, then refused
        train(tiny_cfg(tiny_data, *SHORT, f"data.pseudo_labels={tmp_path / 'bad.csv'}",
                       "data.allow_external_labels=true"), tmp_path / "run", progress=False)


def test_training_never_reads_a_validation_utterance(members, tiny_data, store, tmp_path, monkeypatch):
    make_pseudo_labels(members, tmp_path / "pl", top_fraction=0.5)
    rows_seen = []
    crop = FeatureStore.crop_batch

    def spy(self, index, segment_len, rng, random=True):
        if random:                                  # training crops; evaluation takes centre crops
            rows_seen.extend(np.asarray(index).tolist())
        return crop(self, index, segment_len, rng, random)

    monkeypatch.setattr(FeatureStore, "crop_batch", spy)
    summary = train(tiny_cfg(tiny_data, *SHORT, f"data.pseudo_labels={tmp_path / 'pl' / 'pseudo.csv'}",
                             f"train.teacher={tmp_path / 'pl' / 'teacher.npz'}"), tmp_path / "run", progress=False)
    split = split_for(store, 0.1, 0)
    seen = set(rows_seen)
    assert not seen & set(split.val.tolist())
    assert seen & set(store.test_index.tolist())            # test utterances were trained on
    assert summary["n_pseudo"] == 10 and summary["n_teacher"] == 20


def test_an_interrupted_fine_tune_round_resumes_exactly(members, tiny_data, tmp_path):
    make_pseudo_labels(members, tmp_path / "pl", top_fraction=0.5)
    settings = [*SHORT, f"data.pseudo_labels={tmp_path / 'pl' / 'pseudo.csv'}",
                f"train.teacher={tmp_path / 'pl' / 'teacher.npz'}", f"train.init_from={members[0]}",
                "train.max_steps=16", "train.eval_every=5"]
    straight = train(tiny_cfg(tiny_data, *settings), tmp_path / "straight", progress=False)
    train(tiny_cfg(tiny_data, *settings), tmp_path / "resumed", progress=False, stop_after=7)
    resumed = train(tiny_cfg(tiny_data, *settings), tmp_path / "resumed", resume=True, progress=False)
    assert resumed["weights_sha1"] == straight["weights_sha1"]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(members[0] / "last.pt", weights_only=True)["model"]
    assert any(not torch.equal(a[k], b[k]) for k in a)      # it did train from the member's weights


def test_changed_pseudo_labels_make_the_run_another_run(members, tiny_data, store, tmp_path):
    from kit.identity import run_identity
    from kit.runs import reuse_changes

    make_pseudo_labels(members, tmp_path / "pl", top_fraction=0.5)
    pl = tmp_path / "pl" / "pseudo.csv"
    cfg = tiny_cfg(tiny_data, *SHORT, f"data.pseudo_labels={pl}")
    train(cfg, tmp_path / "run", progress=False)
    assert reuse_changes(tmp_path / "run", run_identity(cfg, store)) == []
    pl.write_text("\n".join(pl.read_text().splitlines()[:3]) + "\n")      # fewer labels
    assert "contents of data.pseudo_labels" in reuse_changes(tmp_path / "run", run_identity(cfg, store))[0]


def test_a_fine_tune_moved_with_its_source_is_the_same_run(members, tiny_data, store, tmp_path):
    """Probe 14: `mv runs runs2` made a recipe's re-run retrain every fine-tune and student: their identity
    held the absolute path of train.init_from, though its contents (the same bytes) are in it too."""
    import shutil

    from kit.identity import run_identity
    from kit.runs import reuse_changes

    source = Path(shutil.copytree(members[0], tmp_path / "runs" / "a"))
    cfg = tiny_cfg(tiny_data, *SHORT, f"train.init_from={source / 'last.pt'}")
    train(cfg, tmp_path / "runs" / "a-refit", progress=False)
    moved = Path(shutil.move(tmp_path / "runs", tmp_path / "moved"))
    again = tiny_cfg(tiny_data, *SHORT, f"train.init_from={moved / 'a' / 'last.pt'}")
    assert reuse_changes(moved / "a-refit", run_identity(again, store)) == []
    other = tiny_cfg(tiny_data, *SHORT, f"train.init_from={members[1] / 'last.pt'}")     # other weights: another run
    assert "contents of train.init_from" in reuse_changes(moved / "a-refit", run_identity(other, store))[0]


def test_distilled_student_is_an_ordinary_predicted_run(members, tmp_path):
    from kit.distill import distill
    from kit.ensemble import ensemble_runs

    result = distill(members, tmp_path / "student", overrides=["train.max_steps=20", "train.eval_every=10"],
                     temperature=2.0, progress=False)
    student = tmp_path / "student"
    summary = RunDir.of(student).summary()
    assert summary["n_teacher"] == 20 and summary["n_pseudo"] == 0
    assert (student / "test_probs.npy").is_file() and result["pred"]["val_acc"] is not None
    ens = ensemble_runs([*members, student], vote="auto", name="with-student", out_dir=tmp_path / "sub")
    assert ens["csv"].is_file()
    with pytest.raises(KitError, match="--init best"):
        distill(members, tmp_path / "other", overrides=["model.d_model=16"], progress=False)


def test_resuming_a_finished_student_trains_nothing_and_says_so(members, tmp_path):
    """Probe 54 F7: `kit distill --resume` of a finished student said "((kept from the interrupted run)
    vote)" and rewrote its summary without a word; a hand-edited summary.json retrained it silently."""
    from kit.distill import distill

    student, said = tmp_path / "student", []
    steps = ["train.max_steps=20", "train.eval_every=10"]
    distill(members, student, overrides=steps, progress=False)
    kept = (student / "summary.json").read_bytes()
    again = distill(members, student, overrides=steps, resume=True, progress=False, log=said.append)
    assert (student / "summary.json").read_bytes() == kept and again["summary"]["step"] == 20
    assert "kept in its teacher.npz" in said[0] and "((" not in said[0]
    assert "already finished at step 20" in said[1] and "nothing trained" in said[1]
    (student / "summary.json").write_text('{"step": 20, "stopped_reason": "budget", "val_acc": 1.0}')
    said.clear()
    distill(members, student, overrides=steps, resume=True, progress=False, log=said.append)
    assert "summary.json cannot be read" in said[0] and "resumes" in said[0]
    assert not any("already finished" in line for line in said)


def test_distill_resume_into_a_missing_folder_is_refused_as_kit_train_refuses_it(members, tmp_path, capsys):
    """Probe 55: `kit distill ... --out st --resume` with no st trained a new student from its first step without
    a word (a typo in --out); `kit train --resume` refuses that, and now the student's resume does too."""
    missing = tmp_path / "st"
    code, out, err = kit_cli(capsys, "distill", *members, "--out", missing, "--resume", "--no-progress")
    one_error(code, err, f"{missing}: no run to resume (no such folder)", "leave out --resume")
    assert not missing.exists() and out == ""
    missing.write_text("hi")                            # probe 56: a file was first said to have nothing to resume
    code, out, err = kit_cli(capsys, "distill", *members, "--out", missing, "--resume", "--no-progress")
    one_error(code, err, f"{missing}: a file, not a run dir")
    assert missing.read_text() == "hi"


ROUNDS = recipe_toml(["a", {"name": "b", "train.seed": 1}], name="tinypl",
                     base={"train": {"max_steps": 30, "eval_every": 15}},
                     after={"predict": True, "which": "last", "ensemble": "auto",
                            "pseudo": {"top_fraction": 0.5, "share": 0.3, "fine_tune": "all"},
                            "distill": {"share": 0.2}})


@pytest.mark.slow
def test_recipe_pseudo_round_and_student(tiny_data, tmp_path):
    from kit.records import SubmissionManifest
    from kit.zoo import run_recipe

    recipe = tmp_path / "tinypl.toml"
    recipe.write_text(ROUNDS)
    runs, subs = tmp_path / "runs", tmp_path / "subs"
    result = run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(runs), workers=1, progress=False,
                        submissions=subs)
    (r1,) = result.rounds
    assert r1.count == 10 and [Path(d).name for d in r1.members] == ["a-pl1", "b-pl1"]
    for name in ("a-pl1", "b-pl1"):
        summary = RunDir.of(runs / "tinypl" / name).summary()
        assert summary["n_pseudo"] == 10 and summary["step"] == 9      # share 0.3 of max_steps 30
    manifest = SubmissionManifest.load(subs / "tinypl.json")
    assert [Path(m).name for m in manifest.members] == ["a-pl1", "b-pl1"]
    assert manifest.competition == json.loads((tiny_data / ".kit-synth.json").read_text())["competition"]
    assert len(manifest.trained_on) == 2 and manifest.trained_on[0]["pseudo"]["test_count"] == 10
    assert (subs / "tinypl-vote0.csv").is_file() and (subs / "tinypl-student.csv").is_file()
    assert RunDir.of(runs / "tinypl" / "student").summary()["n_teacher"] == 20
    # a re-run keeps every finished stage
    again = run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(runs), workers=1, progress=False,
                       submissions=subs)
    assert again.rounds[0].count == 10
    assert RunDir.of(runs / "tinypl" / "b-pl1").summary() == summary          # not trained again


def test_a_rerun_of_a_finished_student_writes_and_predicts_nothing_again(tiny_data, tmp_path):
    """Probe 11: distill() predicted the student from last.pt, a re-run of the recipe from its `which`
    (best.pt): another CSV, the old one kept as .old-*, and with distill.submit another submission."""
    from kit.zoo import run_recipe

    recipe = tmp_path / "tinyst.toml"
    recipe.write_text(recipe_toml(["a", {"name": "b", "train.seed": 1}], name="tinyst",
                                  base={"train": {"max_steps": 30, "eval_every": 10}},
                                  after={"predict": True, "which": "best", "ensemble": "soft",
                                         "distill": {"share": 0.5}}))
    subs, student = tmp_path / "subs", tmp_path / "runs" / "tinyst" / "student"
    for n in range(2):
        run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(tmp_path / "runs"), workers=1,
                   progress=False, submissions=subs)
        if n == 0:
            first = {p.name: p.read_bytes() for p in subs.iterdir()}, (student / "test_probs.npy").read_bytes()
    assert ({p.name: p.read_bytes() for p in subs.iterdir()}, (student / "test_probs.npy").read_bytes()) == first
    assert json.loads((student / "ids.json").read_text())["which"] == "last"
    # probe 15: a moved runs folder kept its fine-tunes but taught the student again (teachers by path)
    import shutil

    moved = Path(shutil.move(tmp_path / "runs", tmp_path / "moved"))
    run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(moved), workers=1, progress=False,
               submissions=subs)
    assert not list((moved / "tinyst").glob("student.old-*"))
    assert (moved / "tinyst" / "student" / "test_probs.npy").read_bytes() == first[1]


def test_to_fine_tune_skips_members_the_vote_ignores():
    from kit.rounds import to_fine_tune

    names = ["transformer", "ecapa", "resnet", "resnet-b"]
    assert to_fine_tune(names, [0.3, 0.04, 0.66, 0.0], "weighted") == ["transformer", "resnet"]
    assert to_fine_tune(names, [0.3, 0.04, 0.66, 0.0], "all") == names
    assert to_fine_tune(names, [0.0, 0.0, 0.0, 0.0], "weighted") == ["transformer"]      # at least the heaviest
    assert to_fine_tune(names, [0.01, 0.02, 0.0, 0.03], "weighted") == ["resnet-b"]


@pytest.mark.slow
def test_recipe_round_fine_tunes_only_the_weighted_members(tiny_data, tmp_path):
    from kit.fsio import read_json
    from kit.rounds import MIN_WEIGHT
    from kit.zoo import run_recipe

    recipe = tmp_path / "tinypl.toml"
    # a third member trained 1 step: the vote gives it (almost) nothing
    recipe.write_text(recipe_toml(["a", {"name": "b", "train.seed": 1}, {"name": "c", "train.max_steps": 1}],
                                  name="tinypl", base={"train": {"max_steps": 30, "eval_every": 15}},
                                  after={"predict": True, "which": "last", "ensemble": "auto",
                                         "pseudo": {"top_fraction": 0.5, "share": 0.3}}))
    runs = tmp_path / "runs"
    result = run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(runs), workers=1, progress=False,
                        submissions=tmp_path / "subs")
    (r1,) = result.rounds
    weights = read_json(runs / "tinypl" / "pseudo-1" / "pseudo.json", "pseudo")["weights"]
    heaviest = max(range(3), key=lambda k: weights[k])
    want = [n for k, n in enumerate("abc") if weights[k] >= MIN_WEIGHT or k == heaviest]
    assert len(want) < 3                    # what this test is about: a member the vote ignores is kept
    assert [Path(d).name for d in r1.fine_tuned] == [f"{n}-pl1" for n in want]
    # the re-vote: fine-tuned members in place of their sources, the others as they were
    assert [Path(d).name for d in r1.members] == [f"{n}-pl1" if n in want else n for n in "abc"]
    assert [Path(d).name for d in result.ensemble.members] == [Path(d).name for d in r1.members]
    for n in "abc":
        assert (runs / "tinypl" / f"{n}-pl1").exists() == (n in want)


def test_kit_pseudo_bad_answer_key_or_out_is_one_line_before_the_work(members, tiny_answers, tmp_path, capsys):
    from kit.cli import main

    in_the_way = tmp_path / "afile"
    in_the_way.write_text("mine")
    for args, needle in [(["--answers", str(tmp_path / "nope.csv")], "nope.csv: answer key not found"),
                         (["--out", str(in_the_way)], "afile: exists and is not a directory")]:
        argv = ["pseudo", *map(str, members), "--out", str(tmp_path / "pl"), *args]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "pl").exists() and in_the_way.read_text() == "mine"
    # the labels' true precision, from a good key, is the share of chosen labels the key agrees with
    assert main(["pseudo", *map(str, members), "--out", str(tmp_path / "pl"), "--top-fraction", "0.5",
                 "--answers", str(tiny_answers)]) == 0
    chosen = pd.read_csv(tmp_path / "pl" / "pseudo.csv", dtype=str)
    key = pd.read_csv(tiny_answers, dtype=str).set_index("Id")["Category"]
    want = (chosen["Category"].to_numpy() == key.reindex(chosen["Id"]).to_numpy()).mean()
    assert f"true precision (answer key): {want:.4f}" in capsys.readouterr().out


def test_kit_pseudo_refuses_an_answer_key_for_another_test_set(members, tiny_answers, tmp_path, capsys):
    from kit.cli import main

    other = tmp_path / "other_key.csv"             # a well-formed key whose Ids are another data's test set
    rows = tiny_answers.read_text().splitlines()
    other.write_text("\n".join([rows[0], *(f"other/{r}" for r in rows[1:])]) + "\n")
    assert main(["pseudo", *map(str, members), "--out", str(tmp_path / "pl"), "--top-fraction", "0.5",
                 "--answers", str(other)]) == 2
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()
    assert "does not match" in line and "20 Id(s) missing, 20 unknown" in line, line
    assert "true precision" not in out
    assert not (tmp_path / "pl").exists()           # probe 41: refused before the work, not after it
    make_pseudo_labels(members, tmp_path / "pl", top_fraction=0.5)
    assert main(["pseudo", *map(str, members), "--out", str(tmp_path / "pl"), "--top-fraction", "0.5",
                 "--answers", str(other)]) == 2      # an earlier round stays where it is
    assert (tmp_path / "pl" / "pseudo.json").is_file() and not list(tmp_path.glob("pl.old-*"))
    capsys.readouterr()
    with pytest.raises(KitError, match=f"does not match {other}"):      # the same refusal as `kit score`
        true_precision(tmp_path / "pl" / "pseudo.csv", other)


def test_pseudo_labels_kit_did_not_make_are_refused_unless_allowed(members, tiny_answers, tmp_path):
    from kit.distill import distill

    # an answer key passed as pseudo-labels would train on the test set's answers
    with pytest.raises(KitError, match="no pseudo.json beside it.*--allow-external-labels"):
        check_pseudo_labels(tiny_answers)
    check_pseudo_labels(tiny_answers, allow_external=True)
    with pytest.raises(KitError, match="no pseudo.json beside it"):
        distill(members, tmp_path / "student", pseudo_labels=str(tiny_answers), progress=False)
    assert not (tmp_path / "student").exists()                 # refused before any work
    allowed = distill(members, tmp_path / "student", pseudo_labels=str(tiny_answers), allow_external_labels=True,
                      progress=False)                          # the student's own training accepts it too
    assert allowed["summary"]["n_pseudo"] == len(pd.read_csv(tiny_answers))
    make_pseudo_labels(members, tmp_path / "pl", top_fraction=0.5)
    pl = tmp_path / "pl" / "pseudo.csv"
    check_pseudo_labels(pl)                                    # kit's own: fine
    pl.write_text(tiny_answers.read_text())                    # replaced beside kit's record
    with pytest.raises(KitError, match="not the file its pseudo.json records"):
        check_pseudo_labels(pl)


def test_kit_train_refuses_an_answer_key_as_pseudo_labels_unless_allowed(tiny_data, tiny_answers, tmp_path, capsys):
    from kit.cli import main

    args = ["train", "--data", str(tiny_data), "--no-progress", "--set", f"data.pseudo_labels={tiny_answers}",
            *[f"--set={s}" for s in ("data.segment_len=64", "data.store_dtype=float32", "model.d_model=32",
                                     "model.ffn_dim=64", "train.batch_size=16", "train.cpu_threads=1", *SHORT)]]
    run = tmp_path / "run"
    capsys.readouterr()
    assert main([*args, "--out", str(run)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert str(tiny_answers) in line and "no pseudo.json beside it" in line and "--allow-external-labels" in line
    assert not (run / "last.pt").exists()
    assert main([*args, "--out", str(run), "--allow-external-labels"]) == 0      # the same command, allowed
    assert RunDir.of(run).summary()["n_pseudo"] == len(pd.read_csv(tiny_answers))      # every test utterance, labelled
    assert "allow_external_labels = true" in (run / "config.toml").read_text()   # --resume keeps it


@pytest.mark.slow
def test_distill_into_a_finished_student_keeps_it_and_fresh_moves_it_aside(members, tmp_path, capsys):
    from kit.cli import main
    from kit.fsio import sha256_file

    student = tmp_path / "student"
    teach = [str(d) for d in members]
    assert main(["distill", *teach, "--out", str(student), "--no-progress"]) == 0
    before = sha256_file(student / "teacher.npz")
    capsys.readouterr()
    # other teachers into the finished student: refused in one line, its teacher.npz untouched
    assert main(["distill", teach[1], "--out", str(student), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "holds a finished run" in err[-1] and "--fresh" in err[-1]
    assert sha256_file(student / "teacher.npz") == before
    assert main(["distill", teach[1], "--out", str(student), "--fresh", "--no-progress"]) == 0
    (old,) = tmp_path.glob("student.old-*")
    assert sha256_file(old / "teacher.npz") == before and RunDir.of(old).summary()["stopped_reason"]
    assert sha256_file(student / "teacher.npz") != before and RunDir.of(student).summary() is not None


def test_kit_pseudo_writes_over_nothing_but_an_earlier_kit_pseudo(members, tmp_path, capsys):
    from kit.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pseudo.csv").write_text("my notes\n")              # a pseudo.csv kit did not write
    assert main(["pseudo", *map(str, members), "--out", str(mine), "--top-fraction", "0.5"]) == 2
    assert "holds files `kit pseudo` did not write (pseudo.csv)" in capsys.readouterr().err
    assert (mine / "pseudo.csv").read_text() == "my notes\n"
    assert main(["pseudo", *map(str, members), "--out", str(members[0]), "--top-fraction", "0.5"]) == 2
    assert "holds files `kit pseudo` did not write" in capsys.readouterr().err      # a run dir
    ours = tmp_path / "pl"
    assert main(["pseudo", *map(str, members), "--out", str(ours), "--top-fraction", "0.5"]) == 0
    first = (ours / "pseudo.csv").read_bytes()
    capsys.readouterr()
    # probe 41: an earlier round is moved aside, not written over (a run may have been made from it)
    assert main(["pseudo", *map(str, members), "--out", str(ours), "--top-fraction", "0.8"]) == 0
    err = capsys.readouterr().err
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("pl.old-")]
    assert len(moved) == 1 and (moved[0] / "pseudo.csv").read_bytes() == first
    assert f"moved to {moved[0]}" in err and (ours / "pseudo.csv").read_bytes() != first


def test_a_fine_tune_refuses_to_resume_on_other_pseudo_labels(members, tiny_data, tmp_path):
    """probe 41: resumed on a replaced round, it trained on labels it did not start from, and its
    identity.json then named them as what the whole run was made from."""
    make_pseudo_labels(members, tmp_path / "pl", top_fraction=0.5)
    pl = tmp_path / "pl" / "pseudo.csv"
    settings = [*SHORT, f"data.pseudo_labels={pl}", f"train.init_from={members[0]}", "train.max_steps=16"]
    train(tiny_cfg(tiny_data, *settings), tmp_path / "ft", progress=False, stop_after=7)
    identity = (tmp_path / "ft" / "identity.json").read_bytes()
    make_pseudo_labels(members, tmp_path / "pl", top_fraction=0.8)        # another round in its place
    with pytest.raises(KitError, match=r"cannot resume: .*contents of data.pseudo_labels"):
        train(tiny_cfg(tiny_data, *settings), tmp_path / "ft", resume=True, progress=False)
    assert (tmp_path / "ft" / "identity.json").read_bytes() == identity


def test_pseudo_labels_of_other_data_are_refused_before_the_students_folder_is_made(members, tiny_answers,
                                                                                     tmp_path):
    """Probe 10: labels made on other data failed with 'unknown speaker' only after the student's folder
    (its .lock and teacher.npz) was made, and left it."""
    from kit.distill import distill

    other = tmp_path / "other.csv"
    other.write_text("Id,Category\nuttr-not-in-this-test-set.pt,id10458\n")
    with pytest.raises(KitError, match="not test utterances of the teachers' data"):
        distill(members, tmp_path / "student", pseudo_labels=str(other), allow_external_labels=True, progress=False)
    assert not (tmp_path / "student").exists()


def test_distill_says_when_its_pseudo_labels_came_from_predictions_a_teacher_no_longer_holds(members, tiny_data,
                                                                                                tmp_path):
    """Probe 12: pseudo.json named its teachers by path only, so labels voted by a model since retrained
    (or predicted again) were trained on as if the run there now had made them."""
    import shutil

    from kit.distill import distill

    teachers = [Path(shutil.copytree(m, tmp_path / m.name)) for m in members]
    make_pseudo_labels(teachers, tmp_path / "ps", top_fraction=0.5)
    said: list[str] = []
    student = dict(progress=False, log=said.append, overrides=["train.max_steps=2", "train.eval_every=2"])
    distill(teachers, tmp_path / "s1", pseudo_labels=str(tmp_path / "ps" / "pseudo.csv"), **student)
    assert not [line for line in said if "warning" in line]
    shutil.move(teachers[0], tmp_path / "m0.old")                                # retrained since (--fresh)
    train(tiny_cfg(tiny_data, *SHORT, "train.seed=5"), teachers[0], progress=False)
    predict_run(teachers[0], which="last", progress=False)
    distill(teachers, tmp_path / "s2", pseudo_labels=str(tmp_path / "ps" / "pseudo.csv"), **student)
    assert [line for line in said if "warning" in line] == [
        f"warning: {tmp_path / 'ps' / 'pseudo.csv'} was voted from predictions {teachers[0].resolve()} no longer "
        "holds (retrained or predicted again since `kit pseudo`): these labels are the older model's; make them "
        "again with `kit pseudo`"]


def test_a_killed_rounds_temp_files_are_removed_by_the_next(members, tmp_path):
    """Probe 23: a round killed while writing teacher.npz left .teacher.npz.XXXX.tmp for good."""
    out = tmp_path / "pl"
    out.mkdir()
    left = [out / ".teacher.npz.k1ll3d00.tmp", out / ".pseudo.csv.k1ll3d00.tmp"]
    for path in left:
        path.write_bytes(b"half")
    make_pseudo_labels(members, out, top_fraction=0.5)
    assert not any(path.exists() for path in left) and (out / "teacher.npz").is_file()
