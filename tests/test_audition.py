"""The audition (kit.audition): candidates train to a cut, the best by their own validation score go
on from their checkpoints and are the only ones voted; the decision and Optuna's record are kept in
the run dir; a re-run continues from them; --no-audition trains the fixed members."""
from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from kit.audition import AuditionResult
from kit.errors import KitError
from kit.recipe import load_recipe
from kit.report import format_report, report_runs
from kit.timeplan import AFTER_SECONDS, CUT_SECONDS, START_SECONDS, TimePlan, audition_minutes
from kit.train.results import read_metrics
from kit.zoo import run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

# Three candidates, one of them audition-only; the third learns far more slowly (tiny lr).
CANDIDATES = ("mean", {"name": "sap", "model.pooling": "sap"},
              {"name": "slow", "candidate": True, "train.lr": 1e-6})
# keep and rung set for the quick budget (the tests' budget) over the table's own, which would keep one
# candidate and cut at 90%: the runs below check that the quick budget's are the ones used.
AUDITION = "[audition]\nenabled = true\nkeep = 1\nrung = 0.9\nwithin = 0.0\n[audition.quick]\nkeep = 2\nrung = 0.5\n"


def _recipe(tiny_recipe, after: dict | None = None):
    path = tiny_recipe(*CANDIDATES, budget={"quick": {"train.max_steps": 100000, "train.eval_every": 5}},
                       after=after or {"predict": True, "ensemble": "hard", "submit": False})
    path.write_text(path.read_text() + AUDITION)
    return path


def test_the_best_candidates_at_the_cut_go_on_and_are_the_only_ones_voted(tiny_data, tiny_recipe, tmp_path):
    import optuna

    runs = tmp_path / "runs"
    result = run_recipe(_recipe(tiny_recipe), data=str(tiny_data), runs=str(runs), progress=False, workers=1,
                        per_member_minutes=0.12, submissions=tmp_path / "subs")
    cut = result.audition
    assert cut is not None and sorted(cut.candidates) == ["mean", "sap", "slow"] and len(cut.survivors) == 2
    root = runs / "tiny"
    # each candidate's score is its own last evaluation at the cut; the survivors are the best two of them
    decision = json.loads((root / "audition.json").read_text())
    assert decision["kinds"] == dict.fromkeys(cut.candidates, "attention")     # all Transformers: by rank
    n_val = json.loads((root / cut.candidates[0] / "summary.json").read_text())["n_val"]
    assert decision["n_val"] == n_val > 0 and decision["spec"]["tie"] == 0.0       # the tie's standard error's n
    for name in cut.pruned:
        rows = read_metrics(root / name / "metrics.csv")
        assert json.loads((root / name / "summary.json").read_text())["stopped_reason"] == "time"
        assert decision["scores"][name] == pytest.approx(float(rows[-1]["val_acc"]))
        had = json.loads((root / name / "summary.json").read_text())["session_cpu_cores"]   # its set-up included
        assert decision["cores"][name] == pytest.approx(had) and 0 < had < 2.5
    assert sorted(decision["cores"]) == sorted(cut.candidates)       # on a CPU each one's, probed or not
    worst_kept = min(decision["scores"][n] for n in cut.survivors)
    assert all(decision["scores"][n] <= worst_kept for n in cut.pruned)
    for name in cut.survivors:          # resumed past the cut to the end of its schedule, not restarted
        steps = [int(r["step"]) for r in read_metrics(root / name / "metrics.csv")]
        assert steps == sorted(steps) and steps[-1] > decision["steps"][name]
        assert json.loads((root / name / "summary.json").read_text())["stopped_reason"] == "budget"
    assert sorted(m.name for m in result.members) == sorted(cut.survivors)
    shown = report_runs([root / n for n in cut.survivors], png=False)     # `kit report` of them shows the cut
    assert shown["audition"] == cut.lines() and "\n".join(cut.lines()) in format_report(shown)
    assert result.report and cut.lines()[0] not in result.report     # the recipe's table prints the cut, once
    assert result.ensemble is not None and sorted(
        p.rsplit("/", 1)[-1] for p in result.ensemble.members) == sorted(cut.survivors)
    # Optuna's record: one trial per candidate, kept ones complete with their score, the other pruned
    study = optuna.load_study(study_name="tiny-audition", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "audition.optuna.journal"))))
    states = {t.user_attrs["member"]: t.state.name for t in study.trials}
    assert states == {n: "COMPLETE" if n in cut.survivors else "PRUNED" for n in cut.candidates}

    before = {n: (root / n / "summary.json").stat().st_mtime_ns for n in cut.candidates}
    again = run_recipe(_recipe(tiny_recipe), data=str(tiny_data), runs=str(runs), progress=False, workers=1,
                       per_member_minutes=0.12, submissions=tmp_path / "subs")
    assert again.audition is not None and again.audition.survivors == cut.survivors       # read, not redone
    assert {n: (root / n / "summary.json").stat().st_mtime_ns for n in cut.candidates} == before

    # a decision kit did not write (an older kit's, or damaged) is refused in one line naming it, not half
    # read; deleted, the cut is decided again from the run dirs as they are, and nothing trains again
    (root / "audition.json").write_text(json.dumps({**decision, "survivors": ["gone"]}))
    with pytest.raises(KitError, match=r"audition\.json: not an audition decision .*survivors that are not"):
        run_recipe(_recipe(tiny_recipe), data=str(tiny_data), runs=str(runs), progress=False, workers=1,
                   per_member_minutes=0.12, submissions=tmp_path / "subs")
    # deleted, the cut is not taken again from the survivors' later scores (probe 42: it was, and the
    # rung scores in audition.json and the journal became end-of-training ones): refused, nothing trains
    (root / "audition.json").unlink()
    with pytest.raises(KitError, match=r"no audition\.json, but .* trained past the audition's cut"):
        run_recipe(_recipe(tiny_recipe), data=str(tiny_data), runs=str(runs), progress=False, workers=1,
                   per_member_minutes=0.12, submissions=tmp_path / "subs")
    (root / "audition.json").write_text(json.dumps(decision))
    # a survivor's summary.json damaged: it resumes from its checkpoint under the same decision (probe 45:
    # refused, with --fresh, which trains everything again, the only way on); the others are left alone
    survivor, pruned = root / cut.survivors[0], root / cut.pruned[0]
    (survivor / "summary.json").write_text('{"step": 3')
    (pruned / "summary.json").write_text("{bad")       # not trained again, so not said to resume (probe 45 #4)
    logs: list[str] = []
    again = run_recipe(_recipe(tiny_recipe), data=str(tiny_data), runs=str(runs), progress=False, workers=1,
                       per_member_minutes=0.12, submissions=tmp_path / "subs", log=logs.append)
    assert again.audition is not None and again.audition.survivors == cut.survivors
    said = [line for line in logs if "summary.json cannot be read" in line]
    assert len(said) == 1 and said[0].startswith(f"{cut.survivors[0]}: ") and "from its checkpoint" in said[0]
    assert json.loads((survivor / "summary.json").read_text())["stopped_reason"] == "budget"
    assert (pruned / "summary.json").read_text() == "{bad"
    assert {n: (root / n / "summary.json").stat().st_mtime_ns for n in cut.survivors[1:]} == {
        n: before[n] for n in cut.survivors[1:]}
    # a pruned candidate left without last.pt and summary.json (disk cleaned up): never trained or voted
    # again, so not checked (probe 46: "cannot resume", and the vote of the survivors refused)
    for f in ("last.pt", "summary.json"):
        (pruned / f).unlink()
    again = run_recipe(_recipe(tiny_recipe), data=str(tiny_data), runs=str(runs), progress=False, workers=1,
                       per_member_minutes=0.12, submissions=tmp_path / "subs")
    assert again.audition is not None and again.audition.survivors == cut.survivors
    assert not (pruned / "summary.json").exists()
    # a survivor without last.pt: the remedy keeps to the audition (--only would train it as a fixed member)
    kept = (survivor / "last.pt").read_bytes()
    (survivor / "last.pt").unlink()
    (survivor / "summary.json").unlink()
    with pytest.raises(KitError, match=r"last\.pt: missing, .*put its last\.pt back, or re-run with --fresh to "
                                       r"audition again"):
        run_recipe(_recipe(tiny_recipe), data=str(tiny_data), runs=str(runs), progress=False, workers=1,
                   per_member_minutes=0.12, submissions=tmp_path / "subs")
    (survivor / "last.pt").write_bytes(kept)
    # with neither a summary nor a checkpoint (probe 42: the folder made again), where it stands is unknown
    survivor.rename(tmp_path / "aside")
    survivor.mkdir()
    with pytest.raises(KitError, match=rf"survivor\(s\) {cut.survivors[0]} have neither a readable summary\.json"):
        run_recipe(_recipe(tiny_recipe), data=str(tiny_data), runs=str(runs), progress=False, workers=1,
                   per_member_minutes=0.12, submissions=tmp_path / "subs")


def test_a_survivors_minutes_so_far_come_from_metrics_csv_when_its_summary_is_damaged(tmp_path):
    """Probe 45: a survivor whose summary.json is damaged resumes; the minutes it trained before the cut
    (its share adds to them) are its last evaluation's, the clock its last.pt was written with."""
    from kit.audition import trained_minutes

    run = tmp_path / "m"
    run.mkdir()
    assert trained_minutes(run) == 0.0
    (run / "metrics.csv").write_text("step,val_acc,seconds\n10,0.2,30.0\n20,0.4,90.0\n")
    assert trained_minutes(run) == pytest.approx(1.5)
    (run / "summary.json").write_text(json.dumps({"step": 20, "seconds": 120.0, "stopped_reason": "time"}))
    assert trained_minutes(run) == pytest.approx(2.0)             # the summary, where it reads
    (run / "summary.json").write_text('{"step": 2')
    assert trained_minutes(run) == pytest.approx(1.5)
    (run / "metrics.csv").write_bytes(b"\x00\xff step,,\n\"")          # damaged too: nothing to go on
    assert trained_minutes(run) == 0.0


def test_a_rung_begun_before_a_kill_is_finished_at_its_own_minutes(tiny_data, tiny_recipe, tmp_path):
    """probe 42: a re-run with other minutes gave the candidates not yet at the cut the new minutes and
    ranked them against those trained the old ones."""
    runs, root = tmp_path / "runs", tmp_path / "runs" / "tiny"
    run_recipe(_recipe(tiny_recipe, {"predict": False}), data=str(tiny_data), runs=str(runs), progress=False,
               workers=1, per_member_minutes=0.08)
    first = json.loads((root / "audition.json").read_text())
    assert first["minutes"] == pytest.approx(0.08)
    # as after a kill during the rung: the survivors (and the decision) are not there yet
    (root / "audition.json").unlink()
    for name in first["survivors"]:
        shutil.rmtree(root / name)
    logs: list[str] = []
    run_recipe(_recipe(tiny_recipe, {"predict": False}), data=str(tiny_data), runs=str(runs), progress=False,
               workers=1, per_member_minutes=0.2, log=logs.append)
    again = json.loads((root / "audition.json").read_text())
    assert again["minutes"] == pytest.approx(0.08)
    assert any("the rung was begun at 0.08 training minutes" in line and "not this run's 0.20" in line for line in logs)


def test_a_begun_rung_is_finished_even_when_the_re_runs_minutes_are_too_few_for_one(tiny_data, tiny_recipe,
                                                                                     tmp_path, monkeypatch):
    """Probe 44: a re-run after a kill in the rung, with --minutes that passed the audition's first check
    but, after the start-up, were too few for a rung, was refused ("too little time to audition"),
    before kit looked at the rung already begun; its finished rungs were left."""
    import kit.audition

    runs, root = tmp_path / "runs", tmp_path / "runs" / "tiny"
    run_recipe(_recipe(tiny_recipe, {"predict": False}), data=str(tiny_data), runs=str(runs), progress=False,
               workers=1, per_member_minutes=0.08)
    first = json.loads((root / "audition.json").read_text())
    (root / "audition.json").unlink()               # killed in the rung: no decision, no survivors yet
    for name in first["survivors"]:
        shutil.rmtree(root / name)
    monkeypatch.setattr(kit.audition, "_too_short", lambda *a: None)     # the first check passed (a slow start)
    logs: list[str] = []
    run_recipe(_recipe(tiny_recipe, {"predict": False}), data=str(tiny_data), runs=str(runs), progress=False,
               workers=1, minutes=0.05, log=logs.append)
    again = json.loads((root / "audition.json").read_text())
    assert again["minutes"] == pytest.approx(0.08) and again["survivors"]
    assert any("the rung was begun at 0.08 training minutes" in line and "not this run's" not in line
               for line in logs)


def test_no_audition_trains_the_fixed_members_only(tiny_data, tiny_recipe, tmp_path):
    runs = tmp_path / "runs"
    result = run_recipe(_recipe(tiny_recipe, {"predict": False}), data=str(tiny_data), runs=str(runs),
                        progress=False, workers=1, per_member_minutes=0.02, audition=False)
    assert result.audition is None and [m.name for m in result.members] == ["mean", "sap"]
    assert not (runs / "tiny" / "slow").exists()
    logs: list[str] = []
    only = run_recipe(_recipe(tiny_recipe, {"predict": False}), data=str(tiny_data), runs=str(tmp_path / "r2"),
                      progress=False, workers=1, per_member_minutes=0.02, only=["slow"], log=logs.append)
    assert only.audition is None and [m.name for m in only.members] == ["slow"]
    assert any("audition off: --only" in line for line in logs)


def test_audition_minutes_fill_the_recipe_time():
    """Every candidate's rung, the survivors' rest and their predictions, with a worker start each,
    fill the slots' time up to the recipe's end."""
    predicts, keep, rung, slots = [30.0, 10.0, 20.0, 40.0, 10.0, 10.0, 20.0, 20.0], 4, 0.3, 2
    minutes = audition_minutes(9.0, 20.0, predicts, keep, rung, slots)
    t = minutes * 60
    work = len(predicts) * (START_SECONDS + rung * t + CUT_SECONDS) + keep * (START_SECONDS + (1 - rung) * t) \
        + keep * sum(predicts) / len(predicts)
    assert work / slots == pytest.approx(9 * 60 - 20 - AFTER_SECONDS)
    with pytest.raises(KitError, match="too little time to audition"):
        audition_minutes(1.0, 20.0, predicts, keep, rung, slots)


@pytest.mark.parametrize("table,message", [
    ("keep = 0", "keep 0"), ("rung = 1.5", "rung 1.5"), ("budgets = ['slow']", "budgets"),
    ("enabled = 'yes'", "enabled 'yes'"), ("cut = 2", "must be a table of"), ("within = 2", "within 2"),
    ("kinds = 1", "kinds 1"), ("per_slot = 'no'", "per_slot 'no'"),
    ("tie = -1", "tie -1"), ("tie = 'nan'", "tie 'nan'"),
    ("quick = { tie = nan }", r"\[audition.quick\] tie nan"),
    ("quick = { keep = 0 }", r"\[audition.quick\] keep 0"), ("full = { rung = 0 }", r"\[audition.full\] rung 0"),
    ("quick = { enabled = false }", "must be a table of keep, rung"), ("quick = 3", r"\[audition.quick\] must be"),
    ("budgets = [['quick']]", "budgets"),
    ("kepp = 2", r"\[audition\] unknown key\(s\) kepp; must be"),        # probe 17: the typo is named
    ("quick = { kepp = 1 }", r"\[audition.quick\] unknown key\(s\) kepp; must be"),
])
def test_a_bad_audition_table_is_refused_naming_the_file(tmp_path, table, message):
    path = tmp_path / "r.toml"
    path.write_text(textwrap.dedent(f"""\
        name = "r"
        [[members]]
        name = "a"
        [audition]
        {table}
        """))
    with pytest.raises(KitError, match=message) as err:
        load_recipe(path)
    assert str(path) in str(err.value)


GOOD = {"candidates": ["a", "b"], "keep": 1, "rung": 0.1, "minutes": 6.0, "survivors": ["a"],
        "scores": {"a": 0.5, "b": None}, "steps": {"a": 10, "b": 9}, "kinds": {"a": "attention", "b": ""}}


@pytest.mark.parametrize("change,message", [
    ({"keep": None}, "missing keep"), ({"survivors": None, "rung": None}, "missing rung, survivors"),
    ({"pruned": ["b"]}, "unknown pruned"), ({"keep": "1"}, "wrong type"), ({"rung": True}, "wrong type"),
    ({"candidates": "ab"}, "wrong type"), ({"scores": [0.5]}, "wrong type"),
    ({"survivors": ["c"]}, "survivors that are not"), ({"survivors": []}, "survivors that are not"),
])
def test_an_audition_decision_kit_did_not_write_is_refused_naming_the_file(tmp_path, change, message):
    path = tmp_path / "audition.json"
    path.write_text(json.dumps(GOOD))
    assert AuditionResult.read(path).survivors == ["a"]
    path.write_text(json.dumps({k: v for k, v in {**GOOD, **change}.items() if v is not None}))
    with pytest.raises(KitError, match=message) as err:
        AuditionResult.read(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_boss_auditions_four_small_quick_candidates_and_keeps_its_fixed_zoo_without():
    boss = load_recipe("boss")
    quick, full = boss.audition_for("quick"), boss.audition_for("full")
    assert quick["enabled"] and (quick["keep"], quick["rung"]) == (2, 0.1) and (full["keep"], full["rung"]) == (4, 0.3)
    fixed, candidates = boss.members_for("quick"), boss.members_for("quick", audition=True)
    assert len(fixed) == 4 and len(candidates) == 4 and not set(fixed) & set(candidates)
    assert all(n.endswith("-s") for n in candidates)
    assert boss.members_for("full", audition=True) == boss.members_for("full")     # the five full members
    assert "quick" in quick["budgets"] and "full" not in quick["budgets"]


def test_a_member_audition_key_says_in_which_budgets_it_is_a_candidate(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(textwrap.dedent("""\
        name = "r"
        [[members]]
        name = "a"
        [[members]]
        name = "never"
        audition = false
        [[members]]
        name = "in-full"
        audition = ["full"]
        [[members]]
        name = "only"
        candidate = true
        """))
    recipe = load_recipe(path)
    assert recipe.members_for("quick") == recipe.members_for("full") == ["a", "never", "in-full"]
    assert recipe.members_for("quick", audition=True) == ["a", "only"]
    assert recipe.members_for("full", audition=True) == ["a", "in-full", "only"]
    for bad, message in (('audition = "yes"', "audition 'yes': true, false or a list"),
                         ('audition = ["slow"]', "audition \\['slow'\\]"),
                         ('audition = [["full"]]', "audition \\[\\['full'\\]\\]: true, false or a list"),
                         ('budgets = [["full"]]', "budgets \\[\\['full'\\]\\]: a list of"),
                         ("candidate = true\naudition = false", "would keep it out of one")):
        path.write_text(f'name = "r"\n[[members]]\nname = "a"\n{bad}\n')
        with pytest.raises(KitError, match=f"{re.escape(str(path))}: member a: .*{message}"):
            load_recipe(path)


def test_a_survivor_resumes_with_its_time_before_the_cut_plus_its_share_of_what_is_left(tmp_path):
    """After the cut the survivors' minutes are re-shared from the time left with their own prediction
    estimates (the audition's first plan used the candidates' average)."""
    import time
    from types import SimpleNamespace

    from kit.audition import AuditionResult, _survivor_share
    from kit.timeplan import TimePlan

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(json.dumps({"step": 5, "seconds": 42.0, "stopped_reason": "time"}))
    plan = TimePlan(minutes=9.0, slots=2, predict={"a": 120.0, "b": 10.0}, began=time.time() - 240)
    run = SimpleNamespace(plan=plan, root=tmp_path)
    share = _survivor_share(run, AuditionResult(["a", "b", "c"], 2, 0.3, 2.0))
    expected = 42.0 / 60 + plan.member_share(["a", "b"])
    assert share(["a", "b"]) == pytest.approx(expected, abs=0.02)
    assert plan.member_share(["a", "b"]) < plan.member_share(["b", "a"])     # its own prediction is reserved
    fixed = _survivor_share(SimpleNamespace(plan=TimePlan(per_member_minutes=0.5), root=tmp_path),
                            AuditionResult(["a", "b", "c"], 2, 0.3, 0.5))
    assert fixed(["a"]) == 0.5


def test_survivors_are_the_best_few_close_to_the_leader_and_never_fewer_than_the_cores():
    from kit.audition import survivors_of

    scores = {"a": 0.14, "b": 0.051, "c": 0.044, "d": 0.040, "e": 0.035}
    ranked = sorted(scores, key=lambda n: -scores[n])
    assert survivors_of(ranked, scores, keep=4, within=0.0, slots=2) == ["a", "b", "c", "d"]
    assert survivors_of(ranked, scores, keep=4, within=0.3, slots=2) == ["a", "b", "c"]
    assert survivors_of(ranked, scores, keep=4, within=0.5, slots=2) == ["a", "b"]     # one per core
    assert survivors_of(ranked, scores, keep=4, within=0.5, slots=1) == ["a"]
    assert survivors_of(ranked, scores, keep=1, within=0.0, slots=2) == ["a"]          # keep is the most


def test_survivors_are_the_best_of_each_kind_first_then_the_rest_by_rank():
    from kit.audition import survivors_of
    from kit.config import ENCODER_KINDS
    from kit.models import ENCODERS

    assert set(ENCODER_KINDS) == set(ENCODERS)          # every encoder has a kind
    # hard, 2026-12-04: the big Transformer was close enough to go on beside transformer-s
    scores = {"transformer-s": 0.049, "transformer": 0.025, "ecapa-s": 0.021, "resnet-s": 0.015, "conformer-s": 0.01}
    kinds = {"transformer-s": "attention", "transformer": "attention", "conformer-s": "attention",
             "ecapa-s": "convolution", "resnet-s": "convolution"}
    ranked = sorted(scores, key=lambda n: -scores[n])
    assert survivors_of(ranked, scores, keep=4, within=0.5, slots=2) == ["transformer-s", "transformer"]
    assert survivors_of(ranked, scores, keep=4, within=0.5, slots=2, kinds=kinds) == ["transformer-s", "ecapa-s"]
    # as many as before; the kinds' leaders first, then by rank
    assert survivors_of(ranked, scores, keep=4, within=0.4, slots=2, kinds=kinds) == [
        "transformer-s", "transformer", "ecapa-s"]
    assert survivors_of(ranked, scores, keep=4, within=0.0, slots=2, kinds=kinds) == ranked[:4]
    assert survivors_of(ranked, scores, keep=4, within=0.9, slots=1, kinds=kinds) == ["transformer-s"]
    one_kind = dict.fromkeys(scores, "attention")
    assert survivors_of(ranked, scores, keep=4, within=0.5, slots=2, kinds=one_kind) == ranked[:2]


def test_a_tie_at_the_cut_goes_to_the_candidate_listed_first_in_the_recipe():
    """tts-close, 2026-12-06 (800 validation utterances): ecapa-s went on over resnet-s, 0.010 apart,
    a standard error of their difference being 0.023; resnet-s, listed first, was the better member at
    the end everywhere. Scores further apart than `tie` standard errors are still ranked by score."""
    from kit.audition import survivors_of, tie_ranked

    order = ["resnet-s", "transformer-s", "ecapa-s", "conformer-s"]
    scores = {"transformer-s": 0.3475, "ecapa-s": 0.3287, "conformer-s": 0.3237, "resnet-s": 0.3187}
    by_score = ["transformer-s", "ecapa-s", "conformer-s", "resnet-s"]
    assert tie_ranked(order, scores, 800, 0.0) == by_score                 # tie = 0: by score alone
    assert tie_ranked(order, scores, 0, 1.0) == by_score                   # n unknown: by score alone
    # resnet-s is 0.029 (1.2 standard errors) behind transformer-s: not a tie; 0.010 behind ecapa-s: a tie
    assert tie_ranked(order, scores, 800, 1.0) == ["transformer-s", "resnet-s", "ecapa-s", "conformer-s"]
    assert tie_ranked(order, scores, 800, 2.0) == order                    # all within two: the recipe's order
    assert tie_ranked(order, scores, 80000, 1.0) == by_score               # many utterances: no ties
    kinds = {"resnet-s": "convolution", "ecapa-s": "convolution", "transformer-s": "attention",
             "conformer-s": "attention"}
    ranked = tie_ranked(order, scores, 800, 1.0)
    assert survivors_of(ranked, scores, keep=2, within=0.5, slots=2, kinds=kinds) == ["transformer-s", "resnet-s"]
    # `within` is measured against the best score, whichever candidate ranks first
    assert survivors_of(tie_ranked(["b", "a"], {"a": 0.50, "b": 0.48}, 800, 1.0), {"a": 0.50, "b": 0.48},
                        keep=2, within=0.97, slots=1) == ["b"]
    assert tie_ranked(order, {**scores, "ecapa-s": None}, 800, 1.0) == ["transformer-s", "resnet-s", "conformer-s"]


def test_the_cut_says_which_candidates_lost_steps_in_the_rung_to_another_process(tmp_path):
    """Session 36: a test at nice 19 beside the rung cost its candidates 10-16% of their steps and changed
    hard's cut, and the table said nothing; a candidate with well under a core of its own is named now."""
    from kit.audition_record import RUNG_CORES

    spec = {"keep": 2, "rung": 0.1, "within": 0.5, "kinds": True, "per_slot": True, "tie": 0.0, "twins": {}}
    shared = AuditionResult(["a", "b", "c"], 2, 0.1, 6.0, {"a": 0.5, "b": 0.4, "c": 0.3}, survivors=["a", "b"],
                            spec=spec, cores={"a": 0.97, "b": RUNG_CORES - 0.01, "c": 0.68})
    last = shared.lines()[-1]
    assert last.startswith("  lost steps in the rung: c 0.68, b 0.84 of a CPU core") and "--fresh" in last
    assert " a 0.97" not in last
    (tmp_path / "audition.json").write_text(json.dumps(shared.__dict__))
    assert AuditionResult.read(tmp_path / "audition.json").lines() == shared.lines()   # kept with the decision
    quiet = AuditionResult(["a", "b"], 2, 0.1, 6.0, {"a": 0.5, "b": 0.4}, survivors=["a", "b"], spec=spec,
                           cores={"a": 0.97, "b": RUNG_CORES})
    assert not any("lost steps" in line for line in quiet.lines())
    older = AuditionResult(["a", "b"], 2, 0.1, 6.0, {"a": 0.5, "b": 0.4}, survivors=["a", "b"], spec=spec)
    assert not any("lost steps" in line for line in older.lines())         # a GPU's, or an older kit's decision
    # probe 56: "cores" is only shown, so a damaged one is read as what of it makes sense, never refused
    for damaged, kept in (("abc", {}), ([0.5], {}), (-1, {}), ({"a": -1, "zz": 0.1, "b": False, "c": 0.5}, {"c": 0.5}),
                          ({"a": float("inf"), "b": "0.3", "c": 70}, {})):
        (tmp_path / "audition.json").write_text(json.dumps({**shared.__dict__, "cores": damaged}))
        assert AuditionResult.read(tmp_path / "audition.json").cores == kept


def test_survivors_sharing_the_recipe_minutes_are_at_most_one_per_slot():
    from kit.audition import most_kept

    spec = {"keep": 4, "per_slot": True}
    assert most_kept(spec, TimePlan(minutes=9.0), 2) == 2                  # they share the recipe's minutes
    assert most_kept(spec, TimePlan(minutes=9.0), 8) == 4                  # keep is still the most
    assert most_kept(spec, TimePlan(per_member_minutes=2.0), 2) == 4       # each has its own minutes
    assert most_kept(spec, TimePlan(), 2) == 4                             # steps: no time to share
    assert most_kept({**spec, "per_slot": False}, TimePlan(minutes=9.0), 2) == 4


def test_the_audition_turns_itself_off_with_a_line_when_it_cannot_run(tiny_recipe):
    from kit.audition import wants_audition

    recipe = load_recipe(_recipe(tiny_recipe))
    lines: list[str] = []

    def asks(timed, workers=2, override=None, only=None, blocker=None):
        return wants_audition(recipe, "quick", override, only, blocker, timed, lines.append, workers)

    assert asks((30.0, None)) and asks((None, 0.02)) and not lines           # a recipe's or a member's minutes
    assert not asks((1.0, None)) and "1 minutes are too few for 3 candidates 2 at a time" in lines[-1]
    assert asks((None, None)) and len(lines) == 1                            # untimed: a step-based cut
    assert not asks((30.0, None), blocker="--max-hours") and "--max-hours" in lines[-1]
    assert not asks((30.0, None), override=False) and len(lines) == 2        # asked off: nothing to say


def test_a_step_based_budget_cuts_at_its_share_of_the_steps_and_the_survivors_finish_them(
        tiny_data, tiny_recipe, tmp_path):
    from kit.audition import cut_step

    path = tiny_recipe(*CANDIDATES, budget={"quick": {"train.max_steps": 16, "train.eval_every": 4}},
                       after={"predict": False})
    path.write_text(path.read_text() + AUDITION)
    runs = tmp_path / "runs"
    logs: list[str] = []
    result = run_recipe(path, data=str(tiny_data), runs=str(runs), progress=False, workers=1, log=logs.append)
    cut, root = result.audition, runs / "tiny"
    assert cut is not None and cut.minutes == 0.0 and len(cut.survivors) == 2 and cut_step(16, 0.5) == 8
    assert "50% of its train.max_steps" in "\n".join(logs) and "50% of their steps" in cut.lines()[0]
    for name in cut.candidates:
        summary = json.loads((root / name / "summary.json").read_text())
        assert cut.steps[name] == 8
        if name in cut.survivors:     # on from the cut to the end of the same schedule
            assert (summary["step"], summary["stopped_reason"], summary["total_steps"]) == (16, "budget", 16)
        else:
            assert (summary["step"], summary["stopped_reason"], summary["total_steps"]) == (8, "time", 16)


def test_a_candidate_timed_by_its_own_minutes_is_cut_at_its_share_of_them(tiny_data, tiny_recipe, tmp_path):
    path = tiny_recipe(*CANDIDATES, budget={"quick": {"train.max_steps": 100000, "train.eval_every": 5,
                                                      "train.minutes": 0.1}}, after={"predict": False})
    path.write_text(path.read_text() + AUDITION)
    runs = tmp_path / "runs"
    result = run_recipe(path, data=str(tiny_data), runs=str(runs), progress=False, workers=1)
    cut = result.audition
    assert cut is not None and cut.minutes == 0.0
    for name in cut.pruned:         # stopped at the cut, 0.5 of its own 0.1 minutes, far short of max_steps
        summary = json.loads((runs / "tiny" / name / "summary.json").read_text())
        assert summary["stopped_reason"] == "time" and summary["seconds"] < 0.1 * 60
    for name in cut.survivors:      # on to the end of its own minutes
        assert json.loads((runs / "tiny" / name / "summary.json").read_text())["stopped_reason"] == "budget"


def _stepped(tiny_recipe, audition: str, *extra):
    path = tiny_recipe(*CANDIDATES, *extra, budget={"quick": {"train.max_steps": 16, "train.eval_every": 4}},
                       after={"predict": False})
    path.write_text(path.read_text() + audition)
    return path


def test_a_decided_audition_refuses_a_recipe_whose_candidates_or_audition_changed(tiny_data, tiny_recipe, tmp_path):
    """Probe 17: a changed keep or rung was ignored (the old survivors voted, "at most 2" printed), and an
    added candidate was cut against the old survivors' scores at the end of their training."""
    runs = tmp_path / "runs"

    def run(path):
        return run_recipe(path, data=str(tiny_data), runs=str(runs), progress=False, workers=1)

    first = run(_stepped(tiny_recipe, AUDITION)).audition
    assert first is not None and first.spec["keep"] == 2 and first.spec["rung"] == 0.5
    for audition, extra, change in [
            (AUDITION.replace("keep = 2", "keep = 1"), (), "[audition] keep 2 -> 1"),
            (AUDITION.replace("rung = 0.5", "rung = 0.25"), (), "[audition] rung 0.5 -> 0.25"),
            (AUDITION, ({"name": "extra", "candidate": True, "train.seed": 3},), "candidate(s) added: extra"),
            (AUDITION.replace("keep = 2", "keep = 5"), (), "[audition] keep 2 -> 5")]:
        with pytest.raises(KitError) as err:
            run(_stepped(tiny_recipe, audition, *extra))
        assert change in str(err.value) and "--fresh" in str(err.value) and "audition.json" in str(err.value)
    again = run(_stepped(tiny_recipe, AUDITION)).audition              # unchanged: the same decision, kept
    assert again is not None and again.survivors == first.survivors


def test_an_audition_that_keeps_every_candidate_trains_them_all_without_a_cut(tiny_data, tiny_recipe, tmp_path):
    """Probe 17: with no more candidates than `keep` the audition turned off and trained the fixed members
    alone, dropping every candidate; with none fixed the error blamed `budgets` lists the recipe lacks."""
    logs: list[str] = []
    fixed = {"name": "fixed", "audition": False}
    path = _stepped(tiny_recipe, AUDITION.replace("keep = 2", "keep = 3"), fixed)
    result = run_recipe(path, data=str(tiny_data), runs=str(tmp_path / "runs"), progress=False, workers=1,
                        log=logs.append)
    assert result.audition is None and any("no cut, every candidate trains to the end" in line for line in logs)
    assert sorted(m.name for m in result.members) == ["mean", "sap", "slow"]
    assert all(m.step == 16 for m in result.members)
    only = tiny_recipe({"name": "c", "candidate": True}, file="only.toml", after={"predict": False})
    only.write_text(only.read_text() + "[audition]\nenabled = true\nkeep = 2\n")
    with pytest.raises(KitError, match=r"every member is an audition candidate .* and the audition is off"):
        run_recipe(only, data=str(tiny_data), runs=str(tmp_path / "r2"), progress=False, workers=1,
                   audition=False)


def test_fresh_clears_a_decided_audition_even_when_every_candidate_is_now_kept(tiny_data, tiny_recipe, tmp_path):
    """Probe 18: after a cut, keep raised to all the candidates was refused with "re-run with --fresh",
    and --fresh was refused the same way (the decision was read before --fresh moved it)."""
    runs = tmp_path / "runs"
    run_recipe(_stepped(tiny_recipe, AUDITION), data=str(tiny_data), runs=str(runs), progress=False, workers=1)
    every = _stepped(tiny_recipe, AUDITION.replace("keep = 2", "keep = 5"))
    result = run_recipe(every, data=str(tiny_data), runs=str(runs), progress=False, workers=1, fresh=True)
    assert result.audition is None and sorted(m.name for m in result.members) == ["mean", "sap", "slow"]
    assert not (runs / "tiny" / "audition.json").exists()
    [old] = (runs).glob("tiny.old-*")
    assert (old / "audition.json").is_file() and (old / "audition.optuna.journal").is_file()


def test_only_may_name_a_fixed_member_that_is_no_candidate_in_that_budget(tiny_data, tmp_path):
    """Probe 19: boss's quick kernels and Slurm jobs run `--only transformer resnet`, and `--only`
    accepted candidates only (`transformer: no such member`), so `make recipe-boss LAUNCHER=kaggle` failed."""
    from kit.zoo import RecipeRun

    overrides = {"submit": None, "ensemble": None, "pseudo": None, "distill": None, "refit": None, "lmft": None,
                 "audition": None, "timed": (None, None), "blocker": None, "fresh": False, "elsewhere": False}
    boss = Path(__file__).resolve().parent.parent / "recipes" / "boss.toml"

    def chosen(only):
        return RecipeRun.open(boss, str(tiny_data), "quick", str(tmp_path / "runs"), only, False, None, 1,
                              tmp_path / "subs", overrides).chosen

    assert chosen(["transformer", "resnet"]) == ["transformer", "resnet"]
    assert chosen(["resnet-s"]) == ["resnet-s"]                           # a candidate, as before
    with pytest.raises(KitError, match="--only conformer: no such member"):      # full budget only
        chosen(["conformer"])


def test_only_in_an_auditioned_recipe_says_the_vote_is_the_survivors(tiny_data, tiny_recipe):
    """Probe 46: `--only` of a survivor said "audition off ... training the recipe's fixed members" and that
    the vote would be of the fixed members, where the next plain run votes the audition's survivors."""
    from kit.audition import wants_audition

    recipe, logs = load_recipe(_recipe(tiny_recipe)), []
    assert wants_audition(recipe, "quick", None, ["sap"], None, (None, 0.2), logs.append) == ""
    assert logs == ["audition off: --only names the members"]
    recipe.only_trains("quick", ["sap"], ["sap"], logs.append)
    assert "the vote and its submission are of the audition's survivors (of mean, sap, slow; with --no-audition, " \
           "mean, sap)" in logs[-1], logs


def test_a_first_run_whose_start_up_left_too_few_minutes_trains_the_shortest_rung(tmp_path):
    """Probe 44 F2: the audition's first check passed, then a slow start-up (packing, a loaded machine)
    left too few of --minutes for a rung, and the first run stopped with exit 2 ("too little time to
    audition") after its start-up was spent. Each candidate now trains the shortest rung, said."""
    import time
    from types import SimpleNamespace

    from kit.audition import _rung_minutes
    from kit.timeplan import LEAST_RUNG_SECONDS

    logs: list[str] = []
    plan = TimePlan(minutes=3.2, predict={"a": 5.0, "b": 5.0, "c": 5.0}, began=time.time() - 150)
    run = SimpleNamespace(plan=plan, chosen=["a", "b", "c"], root=tmp_path, log=logs.append)
    assert _rung_minutes(run, 2, 0.5, 2) == pytest.approx(LEAST_RUNG_SECONDS / 0.5 / 60)
    assert len(logs) == 1 and "each trains the shortest one (0.33 training minutes)" in logs[0], logs
    plan.began = time.time()                                   # a quick start: the plan's own minutes
    assert _rung_minutes(run, 2, 0.5, 2) > LEAST_RUNG_SECONDS / 0.5 / 60 and len(logs) == 1
