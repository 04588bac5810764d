"""Bad input is one line naming the file and the problem, before any work is done: a typo in a text
setting, a file that is not UTF-8, a recipe table that is not a table, an answer key with an Id
twice, a folder where kit writes a file."""
from __future__ import annotations

import os

import pytest

from kit.cnn import RESNET_BLOCKS
from kit.config import CHOICES, dump_toml, layered, load_toml, to_dict
from kit.config import RunConfig as Defaults
from kit.data import STORE_DTYPES
from kit.errors import KitError, path_problem
from kit.fsio import write_text
from kit.infer import AVERAGES, MODES
from kit.models import ENCODERS, HEADS, POOLINGS
from kit.recipe import load_recipe
from kit.submission import read_answer_key
from kit.train.devices import resolve_precision

from conftest import REPO, kit_cli, one_error, recipe_toml


def files_under(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------- 1. text settings: refused at load
def test_the_choices_checked_at_load_are_the_ones_kit_builds():
    assert CHOICES["model"]["encoder"] == tuple(ENCODERS)
    assert CHOICES["model"]["pooling"] == tuple(POOLINGS)
    assert CHOICES["model"]["head"] == tuple(HEADS)
    assert CHOICES["model"]["resnet_depth"] == tuple(RESNET_BLOCKS)
    assert set(CHOICES["infer"]["mode"]) == set(MODES) and set(CHOICES["infer"]["average"]) == set(AVERAGES)
    assert CHOICES["data"]["store_dtype"] == STORE_DTYPES
    for precision in CHOICES["train"]["mixed_precision"]:
        resolve_precision(precision)                     # each one kit can train in
    with pytest.raises(KitError):
        resolve_precision("fp8")


@pytest.mark.parametrize("section, key, value", [(section, key, "bogus" if key != "resnet_depth" else 50)
                                                 for section, keys in CHOICES.items() for key in keys])
def test_an_unknown_name_is_refused_naming_the_layer_and_the_choices(section, key, value):
    with pytest.raises(KitError) as err:
        layered(("base", {}), ("member m", {section: {key: value}}))
    assert str(err.value).startswith(f"member m: {section}.{key} {value!r}: choose one of ")
    assert all(str(choice) in str(err.value) for choice in CHOICES[section][key])


def test_the_shipped_defaults_are_among_the_choices():
    defaults = to_dict(Defaults())
    for section, keys in CHOICES.items():
        for key, allowed in keys.items():
            assert defaults[section][key] in allowed


def test_a_typo_in_a_later_member_is_refused_before_the_first_trains(tiny_recipe, tiny_data, tmp_path, capsys):
    recipe = tiny_recipe("good", {"name": "typo", "model.encoder": "transfromer"},
                         budget={"quick": {"train.max_steps": 4}})
    runs = tmp_path / "runs"
    code, _, err = kit_cli(capsys, "recipe", "run", recipe, "--data", tiny_data, "--runs", runs, "--no-progress")
    one_error(code, err, f"{recipe}: member typo: model.encoder 'transfromer': choose one of transformer")
    assert not runs.exists()                             # neither member trained, no empty run dir


@pytest.mark.parametrize("setting", ["infer.mode=bogus", "infer.average=mean", "train.mixed_precision=fp8",
                                     "data.store_dtype=float64", "model.pooling=max"])
def test_kit_train_refuses_a_bad_name_before_training(tiny_data, tmp_path, capsys, setting):
    key, value = setting.split("=")
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "run", "--set", setting)[::2],
              f"--set: {key} {value!r}: choose one of")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 2. files that are not UTF-8, tables that are not
def test_a_toml_file_that_is_not_utf8_is_one_line(tiny_data, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[train]\n")
    with pytest.raises(KitError, match="bad.toml: malformed TOML \\(not UTF-8 text: byte 0xff at offset 0\\)"):
        load_toml(bad)
    one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "r", "--config", bad)[::2],
              f"{bad}: malformed TOML", "not UTF-8")
    one_error(*kit_cli(capsys, "recipe", "run", bad, "--data", tiny_data, "--runs", tmp_path / "runs")[::2],
              f"{bad}: malformed TOML", "not UTF-8")
    assert files_under(tmp_path) == ["bad.toml"]


def test_kit_predict_on_a_run_whose_config_is_not_utf8_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_bytes(dump_toml(to_dict(Defaults())).encode() + b"# \xff\n")
    one_error(*kit_cli(capsys, "predict", run)[::2], f"{run / 'config.toml'}: malformed TOML", "not UTF-8")


@pytest.mark.parametrize("extra, needle", [
    ("[budget]\nquick = 3\n", "budget.quick = 3: expected a table, [budget.quick]"),
    ('after = 3\n', "after = 3: expected a table"),
    ('description = 3\n', "description 3: expected a string"),
])
def test_a_recipe_value_where_a_table_goes_is_one_line(tmp_path, extra, needle):
    recipe = tmp_path / "r.toml"
    text = recipe_toml(["m"]).replace("[after]\npredict = false\n", "")
    recipe.write_text(extra + text if not extra.startswith("[") else text.replace("[[members]]", extra + "[[members]]"))
    with pytest.raises(KitError) as err:
        load_recipe(recipe)
    assert str(err.value).startswith(f"{recipe}: ") and needle in str(err.value)


@pytest.mark.parametrize("members, needle", [
    ("members = [1]\n", "members[0] = 1: expected a table"),
    ('members = ["m"]\n', "members[0] = 'm': expected a table"),
    ('[[members]]\nname = "m"\nbudget = 3\n', "member m: budget = 3: expected a table"),
    ('[[members]]\nname = "m"\nbudget.quick = 3\n', "member m: budget.quick = 3: expected a table"),
])
def test_a_member_that_is_not_a_table_is_one_line(tmp_path, members, needle):
    recipe = tmp_path / "r.toml"
    text = recipe_toml([])
    recipe.write_text(members + text if members.startswith("members") else text + members)
    with pytest.raises(KitError) as err:
        load_recipe(recipe)
    assert str(err.value).startswith(f"{recipe}: ") and needle in str(err.value)


def test_kit_recipe_run_with_a_bad_budget_table_is_one_line(tmp_path, tiny_data, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_toml(["m"]).replace("[[members]]", "[budget]\nquick = 3\n[[members]]"))
    one_error(*kit_cli(capsys, "recipe", "run", recipe, "--data", tiny_data, "--runs", tmp_path / "runs")[::2],
              f"{recipe}: budget.quick = 3: expected a table")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- 3. an answer key with an Id twice
def test_an_answer_key_with_a_duplicate_id_is_refused(tiny_answers, sub, tmp_path, capsys):
    rows = tiny_answers.read_text().splitlines()
    first, second = rows[1].split(","), rows[2].split(",")
    twice = tmp_path / "key.csv"
    twice.write_text("\n".join([*rows, f"{first[0]},{second[1]},{first[2]}", rows[2]]) + "\n")
    with pytest.raises(KitError, match=f"key.csv:{len(rows) + 1}: duplicate Id '{first[0]}' in the answer key "
                                       r"\(2 duplicate row\(s\) in all\)"):
        read_answer_key(twice)
    one_error(*kit_cli(capsys, "score", sub, "--answers", twice)[::2], str(twice), f"duplicate Id '{first[0]}'")
    assert len(read_answer_key(tiny_answers)) == len(rows) - 1         # the real key still reads


# ---------------------------------------------------------------- 4. errors name the user's path
def test_a_folder_where_a_file_goes_names_the_file_not_the_temp_file(tmp_path):
    dest = tmp_path / "zz.csv"
    dest.mkdir()
    with pytest.raises(OSError) as err:
        write_text(dest, "Id,Category\n")
    assert path_problem(err.value) == f"{dest}: is a folder (kit needs a file there)"
    assert files_under(tmp_path) == ["zz.csv"]                         # the temp file is gone


def test_path_problem_names_the_destination_of_a_rename_from_a_kit_temp_file(tmp_path):
    e = IsADirectoryError(21, "Is a directory", str(tmp_path / ".zz.csv.abc123.tmp"), None, str(tmp_path / "zz.csv"))
    assert path_problem(e) == f"{tmp_path / 'zz.csv'}: is a folder (kit needs a file there)"
    other = IsADirectoryError(21, "Is a directory", "a.csv", None, "b.csv")          # not a kit temp file
    assert path_problem(other) == "a.csv: is a folder (kit needs a file there)"


def test_kit_ensemble_onto_a_folder_names_the_csv(predicted, tmp_path, capsys, monkeypatch):
    runs = [predicted.run("r1", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2]), predicted.run("r2", [0] * 6, [0, 1, 1, 2])]
    monkeypatch.chdir(tmp_path)
    os.makedirs("subs/zz.csv")
    line = one_error(*kit_cli(capsys, "ensemble", *runs, "--name", "zz", "--out", "subs")[::2])
    assert line == f"kit: error: {os.path.join('subs', 'zz.csv')}: is a folder (kit needs a file there)"
    assert not [p for p in os.listdir("subs") if p.endswith(".tmp")]


@pytest.mark.parametrize("after, needle", [
    ({"submit": "false"}, "[after] submit = 'false': expected true or false"),
    ({"predict": "no"}, "[after] predict = 'no': expected true or false"),
    ({"submit": 1}, "[after] submit = 1: expected true or false"),
    ({"message": 5}, "[after] message = 5: expected a string"),
    ({"which": "bset"}, "[after] which 'bset': choose best, last, avg"),
])
def test_after_values_of_the_wrong_kind_are_refused_at_load(tmp_path, after, needle):
    """`submit = "false"` read as yes would spend a Kaggle submission; `which` would fail after training."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_toml(["m"], after={"predict": True, **after}))
    with pytest.raises(KitError) as err:
        load_recipe(recipe)
    assert str(err.value).startswith(f"{recipe}: ") and needle in str(err.value)


@pytest.mark.parametrize("after, needle", [
    ({"predict": False, "ensemble": "none", "submit": True}, "[after] submit = true with predict = false"),
    ({"ensemble": "none", "submit": True}, '[after] submit = true with ensemble = "none"'),
])
def test_after_tables_that_contradict_themselves_are_refused_at_load(tmp_path, after, needle):
    """Probe 17 left these: a submission asked for in so many words, which the table's other settings
    skip without a word (found after the training)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_toml(["m"], after=after))
    with pytest.raises(KitError) as err:
        load_recipe(recipe)
    assert str(err.value).startswith(f"{recipe}: ") and needle in str(err.value)
    recipe.write_text(recipe_toml(["m"], after={"predict": False, "ensemble": "soft"}))   # only trains: taken
    assert load_recipe(recipe).after["ensemble"] == "soft"


@pytest.mark.parametrize("flag, unit", [("--max-hours", "hours"), ("--minutes", "minutes")])
def test_a_time_limit_that_is_not_positive_is_one_line_in_its_own_unit(tmp_path, tiny_data, capsys, flag, unit):
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_toml(["m"]))
    one_error(*kit_cli(capsys, "recipe", "run", recipe, "--data", tiny_data, "--runs", tmp_path / "runs",
                       flag, "0")[::2], f"{flag} 0.0: must be a positive number of {unit}")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, needle", [
    (["--train-steps", "-3"], "--train-steps -3: must be a positive number"),
    (["--train-steps", "0"], "--train-steps 0: must be a positive number"),
    (["--workers", "-2"], "--workers -2: must be 0 or more"),
    (["--long", "-1"], "--long -1: must be 0 or more"),
    (["--accuracy", "--stage-minutes", "-1"], "--stage-minutes -1.0: must be a positive number"),
])
def test_kit_bench_refuses_bad_numbers_before_measuring(tmp_path, capsys, args, needle):
    one_error(*kit_cli(capsys, "bench", "--quick", "--preset", "tiny", "--cache", tmp_path / "c", *args)[::2], needle)
    assert not (tmp_path / "c").exists()                # nothing generated, nothing measured


def test_kit_bench_refuses_a_file_as_out_before_measuring(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    one_error(*kit_cli(capsys, "bench", "--quick", "--preset", "tiny", "--cache", tmp_path / "c", "--out",
                       tmp_path / "f")[::2], "--out is a file")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("args, needle", [
    (["recipe", "run", "R", "--workers", "0"], "--workers 0: members trained at once, at least 1"),
    (["recipe", "run", "R", "--workers", "-1"], "--workers -1: members trained at once, at least 1"),
    (["recipe", "cost", "boss", "--measure", "0"], "--measure 0: a number of steps, at least 1"),
])
def test_counts_below_one_are_refused(tmp_path, tiny_data, capsys, args, needle):
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_toml(["m"]))
    args = [str(recipe) if a == "R" else a for a in args]
    runs = ["--runs", tmp_path / "runs"] if "run" in args else []
    one_error(*kit_cli(capsys, *args, "--data", tiny_data, *runs)[::2], needle)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- arguments named as typed
def test_a_bad_data_dir_for_recipe_cost_prints_nothing_on_stdout(tmp_path, capsys):
    """stdout is for results: a `kit recipe cost ... > cost.md` that fails leaves it empty."""
    code, out, err = kit_cli(capsys, "recipe", "cost", REPO / "recipes" / "boss.toml", "--data", tmp_path / "nope")
    one_error(code, err, str(tmp_path / "nope"), "data dir not found")
    assert out == ""


@pytest.mark.parametrize("minutes", ["-1", "0"])
def test_distill_names_its_own_minutes_flag(minutes, tmp_path, capsys):
    code, _, err = kit_cli(capsys, "distill", tmp_path / "teacher", "--out", tmp_path / "student", "--minutes", minutes)
    one_error(code, err, f"--minutes {minutes}", "above 0")
    assert not (tmp_path / "student").exists()


# ---------------------------------------------------------------- a run's ids.json, a manifest, a seed
IDS_DAMAGES = {
    "digest a number": {"val_probs_sha256": 123},
    "test null": {"test": None},
    "val not strings": {"val": [1, 2, 3, 4, 5, 6]},
    "labels not integers": {"val_labels": ["a", "b", "c", "a", "b", "c"]},
    "which a number": {"which": 3},
}


@pytest.mark.parametrize("damage", list(IDS_DAMAGES))
def test_an_ids_json_field_of_the_wrong_type_is_one_line(predicted, tmp_path, capsys, damage):
    import json

    run = predicted.run("r", [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    ids = json.loads((run / "ids.json").read_text())
    (run / "ids.json").write_text(json.dumps({**ids, **IDS_DAMAGES[damage]}))
    code, _, err = kit_cli(capsys, "ensemble", run, "--name", "x", "--out", tmp_path / "subs")
    one_error(code, err, str(run / "ids.json"), next(iter(IDS_DAMAGES[damage])), f"`kit predict {run}` again")
    assert not (tmp_path / "subs").exists()


@pytest.mark.parametrize("kept", ["val_probs_sha256", "test_probs_sha256"])
def test_an_ids_json_with_one_digest_of_two_is_refused(predicted, tmp_path, capsys, kept):
    import numpy as np

    from kit.fsio import sha256_file

    run = predicted.run("r", [0, 1, 2, 0, 1, 2], [0, 1, 2, 0])
    digest = sha256_file(run / kept.replace("_sha256", ".npy"))
    predicted_ids = (run / "ids.json").read_text()
    (run / "ids.json").write_text(predicted_ids[:-1] + f', "{kept}": "{digest}"}}')
    other = "test_probs.npy" if kept.startswith("val") else "val_probs.npy"
    np.save(run / other, np.roll(np.load(run / other), 1, axis=0))      # the file with no digest, swapped
    code, _, err = kit_cli(capsys, "ensemble", run, "--name", "x", "--out", tmp_path / "subs")
    one_error(code, err, str(run / "ids.json"), "only one", f"`kit predict {run}` again")


@pytest.mark.parametrize("content", ['{"speaker2id": {"id10001": 0}}', "{}"])
def test_report_refuses_an_ensemble_file_that_is_not_a_manifest(predicted, tmp_path, capsys, content):
    runs = [predicted.run(n, [0, 1, 2, 0, 1, 2], [0, 1, 2, 0]) for n in ("a", "b")]
    fake = tmp_path / "metadata.json"
    fake.write_text(content)
    code, out, err = kit_cli(capsys, "report", *runs, "--ensemble", fake)
    one_error(code, err, str(fake), "not a submission manifest", "kit ensemble")
    assert out == ""


def test_synth_refuses_a_negative_seed_before_writing(tmp_path, capsys):
    one_error(*kit_cli(capsys, "data", "synth", "--preset", "tiny", "--out", tmp_path / "d", "--seed", "-1")[::2],
              "--seed -1", "0 or more")
    assert not list(tmp_path.iterdir())


def test_synth_never_suggests_a_force_it_would_refuse(tmp_path, capsys):
    """A folder of the user's files is named as not competition data, with --force or without; only a
    competition data dir is told to pass --force."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("do not lose\n")
    for force in ([], ["--force"]):
        line = one_error(*kit_cli(capsys, "data", "synth", "--preset", "tiny", "--out", mine, *force)[::2],
                         str(mine), "'notes.txt'", "not competition data", "another --out")
        assert "pass --force" not in line
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    data = tmp_path / "data"
    assert kit_cli(capsys, "data", "synth", "--preset", "tiny", "--out", data)[0] == 0
    one_error(*kit_cli(capsys, "data", "synth", "--preset", "tiny", "--out", data)[::2], "pass --force")
