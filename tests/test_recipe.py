"""Recipes: the shipped tiers parse; a tiny two-member recipe trains, skips finished members on a
re-run and prints its table; typos are refused naming the file."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from kit.cli import main
from kit.errors import KitError
from kit.recipe import load_recipe, member_config
from kit.zoo import run_recipe

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

# Two members, the second with its own quick budget; full and quick budgets (conftest: tiny_recipe).
MEMBERS = ("mean", {"name": "sap-am", "model.pooling": "sap", "model.head": "amsoftmax",
                    "budget.quick.train.max_steps": 12})
BUDGETS = {"full": {"train.max_steps": 500}, "quick": {"train.max_steps": 10, "train.eval_every": 5}}


@pytest.fixture
def tiny(tiny_recipe):
    """The two-member recipe, as a path."""
    return tiny_recipe(*MEMBERS, base={"train": {"max_steps": 1000}}, budget=BUDGETS)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_shipped_recipes_parse_and_boss_is_a_diverse_zoo():
    for tier in ("simple", "medium", "strong", "boss"):
        recipe = load_recipe(RECIPES / f"{tier}.toml")
        assert recipe.name == tier and recipe.after["submit"]
    boss = load_recipe(RECIPES / "boss.toml")
    for budget in ("full", "quick"):
        zoo = [member_config(boss, name, budget) for name in boss.members_for(budget)]
        assert len(zoo) >= 4
        assert {"transformer", "ecapa", "resnet"} <= {c.model.encoder for c in zoo}    # different families
        assert len({c.model.pooling for c in zoo}) >= 3
    full = [member_config(boss, name, "full") for name in boss.members_for("full")]
    assert "aamsoftmax" in {c.model.head for c in full}                # margin heads where there is time
    quick = [member_config(boss, name, "quick") for name in boss.members_for("quick")]
    assert all(c.train.minutes == 0 for c in quick) and boss.minutes["quick"] <= 10   # the recipe's wall time
    assert boss.after["ensemble"] == "auto" and boss.after["which"] == "last"
    simple = member_config(load_recipe(RECIPES / "simple.toml"), "sample", "full")
    assert (simple.model.d_model, simple.model.n_layers, simple.model.n_heads, simple.model.ffn_dim,
            simple.model.pooling, simple.model.head, simple.data.segment_len, simple.train.max_steps) == \
        (80, 1, 2, 256, "mean", "mlp", 128, 70000)


def test_budgets_layer_in_order(tiny):
    recipe = load_recipe(tiny)
    assert member_config(recipe, "mean", "full").train.max_steps == 500
    assert member_config(recipe, "mean", "quick").train.max_steps == 10
    assert member_config(recipe, "sap-am", "quick").train.max_steps == 12      # the member's own budget wins
    assert member_config(recipe, "sap-am", "quick").model.pooling == "sap"


@pytest.mark.parametrize("snippet,message", [
    ('epochs = 3\n', "unknown key(s) epochs"),
    ('[[members]]\nname = "x"\nmodel.d_modle = 3\n', "member x.model: unknown key(s) d_modle"),
    ('[after]\nvote = "hard"\n', "[after] unknown key(s) vote"),
    ('[budget.fast]\ntrain.max_steps = 3\n', "unknown budget(s) fast"),
    ('[after]\nweights = "best"\n', "[after] weights 'best': choose equal or auto"),
    ('[budget.quick]\nminutes = -1\n', "[budget.quick] minutes -1: expected a positive number"),
    ('[[members]]\nname = "b"\nbudgets = ["slow"]\n', "member b: budgets ['slow']"),
    # a member's own keys are in the known list too (probe 46: only the config's sections were)
    ('[[members]]\nname = "c"\nauditon = ["full"]\n', "member c: unknown key(s) auditon; known: name, candidate, "
                                                       "audition, budgets, budget, twin_of, data, model"),
])
def test_typos_are_refused_naming_the_file(tmp_path, snippet, message):
    path = write(tmp_path, 'name = "t"\n[[members]]\nname = "a"\n' + snippet)
    with pytest.raises(KitError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_tiny_recipe_trains_its_members_and_skips_them_when_rerun(tiny_data, tiny, tmp_path, capsys):
    path = tiny
    runs = tmp_path / "runs"
    logs: list[str] = []
    result = run_recipe(path, data=str(tiny_data), runs=str(runs), progress=False, log=logs.append, workers=1)
    assert result.budget == "quick"                     # tiny_data is synthetic
    assert any("the quick budget: " in line and "is synthetic data" in line for line in logs)     # and said so
    assert [m.name for m in result.members] == ["mean", "sap-am"]
    assert [m.step for m in result.members] == [10, 12]
    for name in ("mean", "sap-am"):
        assert (runs / "tiny" / name / "best.pt").is_file()

    code = main(["recipe", "run", str(path), "--data", str(tiny_data), "--runs", str(runs), "--no-progress",
                 "--workers", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "already finished" in err and "finished earlier" in out     # nothing retrained
    assert "sap-am" in out and "val acc" in out


@pytest.mark.slow
def test_members_train_side_by_side_in_worker_processes(tiny_data, tiny, tmp_path):
    # two CPU workers, one member each, as `make recipe-boss` does on a 2-core machine
    runs = tmp_path / "runs"
    logs: list[str] = []
    result = run_recipe(tiny, data=str(tiny_data), runs=str(runs), progress=False, log=logs.append, workers=2)
    assert [m.step for m in result.members] == [10, 12]
    assert sum("CPU worker" in line for line in logs) == 2
    for name in ("mean", "sap-am"):
        assert (runs / "tiny" / name / "summary.json").is_file()
        assert "cpu_threads = 1" in (runs / "tiny" / name / "config.toml").read_text()


def test_members_can_train_in_some_budgets_only(tiny_recipe):
    recipe = load_recipe(tiny_recipe("mean", {**MEMBERS[1], "budgets": ["full"]}, budget=BUDGETS))
    assert recipe.members_for("full") == ["mean", "sap-am"]
    assert recipe.members_for("quick") == ["mean"]


def test_a_recipe_wall_time_is_shared_among_members(tiny_data, tiny, tmp_path):
    """`--minutes`: each member left to train gets its share as train.minutes and fits its steps to it."""
    from kit.timeplan import member_minutes

    each = member_minutes(10.0, spent_seconds=30.0, predicts=[0.0] * 4, n_slots=2)
    assert 3.0 < each < 4.5                        # two rounds of two members in about 9 minutes
    assert member_minutes(10.0, 30.0, [0.0] * 2, n_slots=2) > 2 * each - 0.5      # one round: twice as long
    with pytest.raises(KitError, match="too little time"):
        member_minutes(0.5, 20.0, [0.0] * 4, n_slots=1)
    runs = tmp_path / "runs"
    result = run_recipe(tiny, data=str(tiny_data), runs=str(runs), progress=False, workers=1,
                        per_member_minutes=0.02, after=False)
    for m in result.members:
        assert "minutes = 0.02" in (runs / "tiny" / m.name / "config.toml").read_text()


def test_shipped_recipes_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    from kit.recipe import resolve_recipe

    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("boss").name == "boss.toml" and resolve_recipe("boss").is_file()
    assert resolve_recipe("recipes/strong.toml").is_file()
    with pytest.raises(KitError, match="recipes shipped with kit: boss, medium, simple, strong"):
        resolve_recipe("elsewhere/boss.toml")


@pytest.mark.slow
def test_members_get_their_time_share_as_they_start(tmp_path):
    """With a recipe wall time, each member's trainer is told its minutes when it starts, from how
    many members are left then (so a late round gets what an overrunning first round left), the
    starting member named first (its own prediction is reserved)."""
    import sys

    from kit.workers import run_parallel as _run_parallel

    tasks = []
    for name in ("a", "b", "c"):
        run_dir = tmp_path / name
        run_dir.mkdir()
        tasks.append((name, run_dir, [[sys.executable, "-c", "import sys; print(sys.argv[1:])"]]))
    asked = []

    def share(starting):
        asked.append(starting)
        return 1.5 * len(starting)

    _run_parallel(tasks, [{"label": "CPU worker 0"}, {"label": "CPU worker 1"}], lambda m: None, share)
    assert asked == [["a", "b", "c"], ["b", "c"], ["c"]]
    assert "'--minutes', '4.5000'" in (tmp_path / "a" / "train.log").read_text()
    assert "'--minutes', '1.5000'" in (tmp_path / "c" / "train.log").read_text()


def test_boss_submission_message_names_the_members_it_voted():
    from kit.recipe_result import submission_message as message_of

    boss = load_recipe(RECIPES / "boss.toml")
    quick = boss.members_for("quick")
    voted = {"method": "weighted", "weights": [1 / len(quick)] * len(quick)}
    message = message_of(boss.after["message"], "boss", "quick", [f"runs/boss/{m}" for m in quick], voted)
    assert "conformer" not in quick and "conformer" not in message.lower()      # the quick budget has none
    assert message == f"kit recipe boss (quick budget): {' + '.join(quick)}, calibrated cross-fitted vote"
    full = boss.members_for("full")
    assert "conformer" in message_of(boss.after["message"], "boss", "full", full, {"weights": [1.0] * len(full)})
    assert message_of("{x} {recipe}/{budget}", "r", "full", ["a"], {}) == "{x} r/full"     # other braces kept
    # the vote chose one member alone: Kaggle's list says which, not both as if voted (probe 46)
    chose = message_of("{members}, voted", "r", "quick", ["runs/r/a", "runs/r/b"], {"method": "single",
                                                                                  "weights": [0.0, 1.0]})
    assert chose == "b alone (the vote chose it over a), voted"


def test_a_changed_infer_table_predicts_the_kept_member_again_that_way(tiny_data, tiny_recipe, tmp_path):
    """[infer] is not part of a member's identity (the weights stay), but the vote must not take
    predictions made the old way: the re-run keeps the member, brings its config.toml the new
    [infer] and predicts it again (probe 17: the old sliding-window predictions were voted)."""
    import json

    after = {"predict": True, "ensemble": "hard", "submit": False}
    members = ("mean", {"name": "b", "train.seed": 2})
    runs, logs = tmp_path / "runs", []
    short = {"train": {"max_steps": 6, "eval_every": 3}}

    def run(mode: str, **infer) -> None:
        logs.clear()
        path = tiny_recipe(*members, after=after, base={**short, "infer": {"mode": mode, **infer}})
        run_recipe(path, data=str(tiny_data), runs=str(runs), progress=False, workers=1, log=logs.append,
                   submissions=tmp_path / "submissions")

    run("sliding")
    ids = runs / "tiny" / "mean" / "ids.json"
    assert json.loads(ids.read_text())["mode"] == "sliding"
    weights = (runs / "tiny" / "mean" / "last.pt").read_bytes()
    run("full")
    assert (runs / "tiny" / "mean" / "last.pt").read_bytes() == weights              # kept, not retrained
    assert json.loads(ids.read_text())["mode"] == "full"                            # predicted again
    assert any("mean: infer.mode = 'sliding' -> 'full'" in line for line in logs)
    assert 'mode = "full"' in (runs / "tiny" / "mean" / "config.toml").read_text()
    vote = json.loads((tmp_path / "submissions" / "tiny.json").read_text())
    assert vote["member_settings"][0]["mode"] == "full"                             # and the vote took them
    run("full")
    assert not any("predicting" in line or "infer." in line for line in logs)       # now current: no third time
    run("full", batch_size=7)                       # changes no prediction: they stand, and the log says so
    assert not any("predicting" in line for line in logs)
    assert any("infer.batch_size" in line and "its predictions stand" in line for line in logs), logs


def _missing_tracker() -> str:
    from accelerate.tracking import get_available_trackers

    have = {t.value for t in get_available_trackers()}
    return next(name for name in ("mlflow", "wandb", "comet_ml", "aim", "clearml") if name not in have)


@pytest.mark.parametrize("member,after,message", [
    ({"model.n_heads": 3}, {}, "model.d_model 16 must be divisible by model.n_heads 3"),
    ({"model.encoder": "ecapa", "model.channels": 60}, {}, "model.channels 60: ecapa splits"),
    ({"model.encoder": "conformer", "model.conv_kernel": 16}, {}, "the conformer needs an odd kernel"),
    ({"train.log_with": "TRACKER"}, {}, "package is not installed"),
    ({}, {"which": "avg"}, 'which = "avg" predicts from the average'),
    ({"train.init_from": "no-such.pt"}, {}, "train.init_from no-such.pt: not found"),       # probe 18
    ({"data.pseudo_labels": "no-such.csv"}, {}, "data.pseudo_labels no-such.csv: not found"),
])
def test_a_mistake_in_the_last_member_stops_the_recipe_before_the_first_trains(tiny_data, tiny_recipe, tmp_path,
                                                                               member, after, message):
    """Probe 17: these were found only when the bad member started, after the others had trained
    (or, for which = "avg", after every member had)."""
    member = {k: (_missing_tracker() if v == "TRACKER" else v) for k, v in member.items()}
    path = tiny_recipe("a", {"name": "b", **member}, base={"train": {"max_steps": 4, "eval_every": 2}},
                       after={"predict": True, "ensemble": "hard", "submit": False, **after})
    runs = tmp_path / "runs"
    with pytest.raises(KitError) as err:
        run_recipe(path, data=str(tiny_data), runs=str(runs), progress=False, workers=1,
                   submissions=tmp_path / "submissions")
    assert str(path) in str(err.value) and "member " in str(err.value) and message in str(err.value)
    assert not (runs / "tiny").exists()                                     # nothing trained, no run dir


def test_kit_train_refuses_a_model_that_cannot_be_built_before_making_its_run_dir(tiny_data, tmp_path, capsys):
    out = tmp_path / "x"
    code = main(["train", "--data", str(tiny_data), "--out", str(out), "--set", "model.n_heads=3",
                 "--set", "model.d_model=16", "--no-progress"])
    assert code == 2 and "must be divisible by model.n_heads 3" in capsys.readouterr().err
    assert not out.exists()


def test_a_tracker_missing_here_does_not_stop_members_a_launcher_trains_elsewhere(tiny_recipe):
    """Probe 18: the check before training refused `log_with = "wandb"` for Kaggle kernels, whose image has it."""
    from kit.members import check_configs

    recipe = load_recipe(tiny_recipe("a", {"name": "b", "train.log_with": _missing_tracker()}))
    with pytest.raises(KitError, match="package is not installed"):
        check_configs(recipe, ["a", "b"], "quick")
    check_configs(recipe, ["a", "b"], "quick", here=False)


def test_an_older_ids_json_without_the_mode_asked_is_compared_by_the_mode_it_made():
    from kit.records import PredictionIds, settings_changes

    old = PredictionIds(val=[], val_labels=[], test=[], window=256, hop=128, average="probs")     # no mode: sliding
    infer = {"window": 256, "hop": 128, "average": "probs"}
    assert settings_changes(old, {**infer, "mode": "full"}) == ["mode sliding -> full"]
    assert settings_changes(old, {**infer, "full": True}) == ["mode sliding -> full"]
    assert settings_changes(old, {**infer, "mode": "sliding"}) == []
    assert settings_changes(old, {**infer, "mode": "auto"}) == []          # what auto chose is not known


def test_fresh_moves_nothing_while_another_run_of_the_recipe_votes(tiny_data, tiny_recipe, tmp_path):
    """Probe 21: a `--fresh` run moved the members aside while another run of the recipe was voting
    them; that run then wrote and submitted its old vote, credited to the new members' paths."""
    from kit.runs import recipe_lock

    path = tiny_recipe("a", base={"train": {"max_steps": 4, "eval_every": 2}}, after={"predict": False})
    runs = tmp_path / "runs"
    run_recipe(path, data=str(tiny_data), runs=str(runs), progress=False, workers=1)
    weights = (runs / "tiny" / "a" / "last.pt").read_bytes()
    with recipe_lock(runs / "tiny", alone=False):                  # another run, between its training and its vote
        with pytest.raises(KitError, match="another `kit recipe run` of this recipe is running .* moved nothing"):
            run_recipe(path, data=str(tiny_data), runs=str(runs), progress=False, workers=1, fresh=True)
        assert (runs / "tiny" / "a" / "last.pt").read_bytes() == weights and not list(runs.glob("tiny.old-*"))
        run_recipe(path, data=str(tiny_data), runs=str(runs), progress=False, workers=1)    # a plain re-run shares
    run_recipe(path, data=str(tiny_data), runs=str(runs), progress=False, workers=1, fresh=True)
    assert len(list(runs.glob("tiny.old-*"))) == 1                   # alone now: moved aside


def test_the_recipe_lock_on_a_runs_folder_that_cannot_be_written(tmp_path):
    """Probe 22: a recipe whose RUNS/<recipe>/ cannot be written stopped on its lock file, where it
    could still vote finished members; --fresh, which must move them, says why it cannot."""
    from kit.runs import recipe_lock

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with recipe_lock(blocked / "tiny", alone=False) as share:
        share()
    with pytest.raises(KitError, match="cannot be written .* so --fresh cannot move its members aside"):
        with recipe_lock(blocked / "tiny", alone=True):
            pass


def test_member_names_that_differ_only_in_case_are_one_name(tiny_recipe):
    """Probe 51 F5: members `a` and `A` were two run dirs on Linux and one folder on macOS and Windows."""
    with pytest.raises(KitError, match=r"member name 'A' is used twice \(names that differ only in case"):
        load_recipe(tiny_recipe("a", "A"))
    with pytest.raises(KitError, match="is used twice"):                  # probe 52: é written two ways
        load_recipe(tiny_recipe("caf\u00e9", "cafe\u0301"))
    assert [m[0] for m in load_recipe(tiny_recipe("a", "b")).members] == ["a", "b"]
