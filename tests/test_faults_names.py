"""Names are names (README, "What kit promises"): recipe, member and submission names are plain file
names refused in one line before anything is written; a submitted CSV is never overwritten; a run
dir given twice is refused; a budget asked for by name must exist."""
from __future__ import annotations

from pathlib import Path

import pytest

from kit.errors import KitError
from kit.fsio import sha256_file
from kit.kaggle import append_ledger
from kit.names import check_member_name, check_name, check_submission_name, distinct_runs
from kit.recipe import load_recipe, require_budget
from kit.submission import keep_submitted

from conftest import kit_cli, one_error


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---------------------------------------------------------------- plain file names
@pytest.mark.parametrize("name, why", [
    ("../../x", "no '/'"), ("a/b", "no '/'"), ("a\\b", "no '/' or '\\'"), ("..", "'.' and '..'"),
    (".", "'.' and '..'"), (".hidden", "no leading '.'"), ("", "empty"), ("a\x00b", "control"),
    ("a\nb", "control"), ("x" * 201, "at most 200 bytes"), (3, "not text"), ("-", "no leading '-'"),
    ("-v", "no leading '-'")])
def test_a_name_with_a_folder_in_it_is_refused(name, why):
    with pytest.raises(KitError, match="recipe name .* is not a plain file name") as e:
        check_name(name, "recipe")
    assert why in str(e.value) and "\n" not in str(e.value)


def test_plain_names_pass_unchanged():
    for name in ("boss", "conformer-sap-am", "v2.1 with spaces", "ledgers", "my_reports"):
        assert check_submission_name(name) == check_member_name(name) == name


@pytest.mark.parametrize("name", ["ledger", "Ledger", "ledger.pending", "ledger.csv.bak-20260101T000000",
                                  "scores", "boss_report"])
def test_names_kit_uses_in_submissions_are_refused(name):
    with pytest.raises(KitError, match="one kit uses in submissions/"):
        check_submission_name(name)


@pytest.mark.parametrize("name", ["student", "pseudo-1", "transformer-pl2", "kaggle-logs",
                                  "a-refit", "resnet-s-lm", "a-pl1-refit"])      # the refit's and lmft's folders
def test_member_names_kit_uses_beside_the_members_are_refused(name):
    with pytest.raises(KitError, match="one kit uses beside the members"):
        check_member_name(name)


# ---------------------------------------------------------------- recipes: refused at load
def test_a_recipe_named_outside_runs_is_refused_before_anything_is_written(tiny_recipe, tiny_data, tmp_path,
                                                                            capsys):
    recipe = tiny_recipe("mean", name="../../x")
    before = files_under(tmp_path)
    result = kit_cli(capsys, "recipe", "run", recipe, "--data", tiny_data, "--runs", tmp_path / "a" / "b" / "runs",
                     "--no-progress")
    one_error(*result[::2], str(recipe), "recipe name '../../x' is not a plain file name")
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("member, why", [("..", "not a plain file name"), ("../mean", "not a plain file name"),
                                         ("student", "one kit uses beside the members"),
                                         ("mean-refit", "one kit uses beside the members")])
def test_a_member_named_outside_its_recipe_folder_is_refused(tiny_recipe, member, why):
    with pytest.raises(KitError, match=f"members\\[1\\]: member name .* {why}"):
        load_recipe(tiny_recipe("mean", member))


def test_a_recipe_named_like_the_ledger_is_refused(tiny_recipe):
    with pytest.raises(KitError, match="recipe name 'ledger' is one kit uses in submissions/"):
        load_recipe(tiny_recipe("mean", name="ledger"))


# ---------------------------------------------------------------- submissions: the ledger and what it names
def test_kit_ensemble_named_ledger_leaves_the_ledger_alone(predicted, tmp_path, capsys):
    runs = [predicted.run("r1", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2]), predicted.run("r2", [0] * 6, [0, 1, 1, 2])]
    subs = tmp_path / "subs"
    append_ledger(subs / "ledger.csv", {"competition": "c", "file": "subs/one.csv", "sha256": "0" * 64})
    ledger = (subs / "ledger.csv").read_bytes()
    before = files_under(subs)
    for name in ("ledger", "ledger.pending", "scores", "../x", ".."):
        one_error(*kit_cli(capsys, "ensemble", *runs, "--name", name, "--out", subs)[::2], f"name {name!r}")
    assert (subs / "ledger.csv").read_bytes() == ledger and files_under(subs) == before


def test_a_submitted_csv_is_kept_aside_not_overwritten(predicted, tmp_path, capsys):
    runs = [predicted.run("r1", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2]), predicted.run("r2", [0] * 6, [0, 1, 1, 0])]
    subs = tmp_path / "subs"
    ensemble = ["ensemble", *runs, "--name", "pair", "--out", subs]
    assert kit_cli(capsys, *ensemble, "--weights", "3,1")[0] == 0
    sent, manifest = (subs / "pair.csv").read_bytes(), (subs / "pair.json").read_bytes()
    append_ledger(subs / "ledger.csv", {"competition": "c", "file": str(subs / "pair.csv"),
                                        "sha256": sha256_file(subs / "pair.csv"), "status": "COMPLETE"})

    code, out, err = kit_cli(capsys, *ensemble, "--weights", "1,3")          # another vote, same name
    [line] = [ln for ln in err.strip().splitlines() if "warning" not in ln]    # r2 alone would be a weak vote
    assert code == 0 and "pair.csv: was submitted" in line and "kept as pair.csv.old-" in line
    [old_csv], [old_json] = subs.glob("pair.csv.old-*"), subs.glob("pair.json.old-*")
    assert old_csv.read_bytes() == sent and old_json.read_bytes() == manifest
    assert (subs / "pair.csv").read_bytes() != sent

    assert kit_cli(capsys, *ensemble, "--weights", "1,3")[0] == 0          # the same bytes again: nothing to keep
    assert len(list(subs.glob("pair.*.old-*"))) == 2


def test_keep_submitted_finds_the_row_by_path_from_the_submit_folder_or_by_digest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    subs = Path("submissions")
    subs.mkdir()
    csv = subs / "a.csv"
    csv.write_text("Id,Category\nu,s\n")
    assert keep_submitted(csv, "f" * 64) == []                              # not submitted: overwrite it
    append_ledger(subs / "ledger.csv", {"competition": "c", "file": "submissions/a.csv", "sha256": "x"})
    assert keep_submitted(csv, sha256_file(csv)) == []                      # the same bytes: nothing to keep
    [kept] = keep_submitted(csv, "f" * 64)
    assert kept.name.startswith("a.csv.old-") and not csv.exists()

    csv.write_text("Id,Category\nu,t\n")                                    # a copy elsewhere was submitted
    append_ledger(subs / "ledger.csv", {"competition": "c", "file": "/elsewhere/b.csv",
                                        "sha256": sha256_file(csv)})
    assert len(keep_submitted(csv, "f" * 64)) == 1


# ---------------------------------------------------------------- the same run dir twice
def test_the_same_run_dir_twice_is_refused(predicted, tmp_path, capsys, monkeypatch):
    a = predicted.run("a", [0] * 6, [0] * 4)
    predicted.run("b", [1] * 6, [1] * 4)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to(a)
    subs = tmp_path / "subs"
    for runs in (["a", "a", "b"], ["a", "./a/", "b"], [str(a), "link"]):
        one_error(*kit_cli(capsys, "ensemble", *runs, "--out", subs)[::2], "given twice")
        one_error(*kit_cli(capsys, "report", *runs)[::2], "given twice")
        one_error(*kit_cli(capsys, "pseudo", *runs, "--out", "pl")[::2], "given twice")
        one_error(*kit_cli(capsys, "distill", *runs, "--out", "student")[::2], "given twice")
    one_error(*kit_cli(capsys, "distill", "a", "b", "--out", "./b", "--fresh")[::2],
              "--out ./b: is one of the teachers")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "data", "link"]       # nothing written
    assert distinct_runs(["a", "b"]) == ["a", "b"]


# ---------------------------------------------------------------- a budget asked for by name
def test_budget_full_on_a_recipe_without_it_is_refused(tiny_recipe, tiny_data, tmp_path, capsys):
    recipe = tiny_recipe("mean", budget={"quick": {"train.max_steps": 3}})
    runs = tmp_path / "runs"
    result = kit_cli(capsys, "recipe", "run", recipe, "--data", tiny_data, "--runs", runs, "--budget", "full")
    one_error(*result[::2], "--budget full: the recipe has no [budget.full] (it has [budget.quick])")
    assert not runs.exists()
    assert require_budget(load_recipe(recipe), "quick") == "quick"
    member_own = tiny_recipe("mean", {"name": "b", "budget.full.train.max_steps": 5})
    assert require_budget(load_recipe(member_own), "full") == "full"     # a member's own [budget.full] counts
    short = tiny_recipe("mean", base={"train": {"max_steps": 3, "eval_every": 3}}, budget={"quick": {}},
                        file="short.toml")
    launched = kit_cli(capsys, "recipe", "run", short, "--data", tiny_data, "--runs", runs, "--budget", "full",
                       "--only", "mean", "--no-ensemble", "--no-progress")    # what a launcher's job runs
    assert launched[0] == 0, launched[2]
    assert (runs / "tiny" / "mean" / "summary.json").is_file()
    only_quick = tiny_recipe({"name": "a", "budgets": ["quick"]}, budget={"full": {}, "quick": {}})
    with pytest.raises(KitError, match="no member trains in it"):
        require_budget(load_recipe(only_quick), "full")
