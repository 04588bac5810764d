"""What kit used to do without a word (probe 40's leftovers): score a CSV Kaggle would refuse, name a
hop nobody gave, ignore --no-compare, resume over an unreadable summary.json. Each is now said."""
import csv
import json

import pytest

from kit.cli import main
from kit.errors import KitError
from kit.windows import sliding_windows


def _answers_csv(answers, out, change=None):
    """A submission of the answer key's own categories, one row changed by `change` (row -> row)."""
    with open(answers, newline="") as f:
        rows = [[r["Id"], r["Category"]] for r in csv.DictReader(f)]
    if change:
        rows[1] = change(rows[1])
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([["Id", "Category"], *rows])
    return out


@pytest.mark.parametrize("change,named", [
    (lambda row: [row[0], "idZZZ"], "not a speaker"), (lambda row: [row[0], ""], "line 3"),
    (lambda row: [row[0], row[1] + " "], "line 3"),
])
def test_kit_score_says_when_the_csv_would_not_pass_kit_validate(tiny_data, tiny_answers, tmp_path, capsys,
                                                                  change, named):
    good = _answers_csv(tiny_answers, tmp_path / "good.csv")
    assert main(["score", str(good), "--answers", str(tiny_answers)]) == 0
    assert capsys.readouterr().err == ""
    bad = _answers_csv(tiny_answers, tmp_path / "bad.csv", change)
    assert main(["score", str(bad), "--answers", str(tiny_answers)]) == 0        # still scored
    out, err = capsys.readouterr()
    assert "overall" in out
    warning = [line for line in err.splitlines() if line.startswith("kit: warning:")]
    assert len(warning) == 1 and "would not pass `kit validate" in warning[0] and str(bad) in warning[0]
    assert f"`kit validate {bad} --data {tiny_data}`" in warning[0]       # probe 49 F3: a command line that parses


def test_kit_score_with_a_key_that_has_no_data_dir_beside_it_scores_without_a_remark(tiny_answers, tmp_path,
                                                                                      capsys):
    key = tmp_path / "key.csv"
    key.write_bytes(tiny_answers.read_bytes())
    bad = _answers_csv(tiny_answers, tmp_path / "bad.csv", lambda row: [row[0], "idZZZ"])
    assert main(["score", str(bad), "--answers", str(key)]) == 0
    assert capsys.readouterr().err == ""


def test_a_bad_window_is_named_without_a_hop_nobody_gave():
    with pytest.raises(KitError) as err:
        sliding_windows([100], -5, -5)          # the hop left to its default follows the window
    assert str(err.value) == "window -5 must be at least 1 frame"
    with pytest.raises(KitError, match="^hop 0 must be at least 1 frame$"):
        sliding_windows([100], 10, 0)


def test_an_unreadable_summary_is_said_before_the_member_resumes(tiny_data, tiny_recipe, tmp_path):
    from kit.zoo import run_recipe

    recipe = tiny_recipe("a")
    runs = tmp_path / "runs"
    run_recipe(recipe, data=str(tiny_data), runs=str(runs), progress=False, workers=1, per_member_minutes=0.02)
    summary = runs / "tiny" / "a" / "summary.json"
    assert json.loads(summary.read_text())["stopped_reason"] == "budget"
    summary.write_text('{"steps_per_second": ')
    logs: list[str] = []
    run_recipe(recipe, data=str(tiny_data), runs=str(runs), progress=False, workers=1, per_member_minutes=0.02,
               log=logs.append)
    said = [line for line in logs if "summary.json cannot be read" in line]
    assert len(said) == 1 and said[0].startswith("a: ") and str(summary) in said[0]
    assert json.loads(summary.read_text())["stopped_reason"]              # a new one written


@pytest.mark.parametrize("flag", ["--minutes", "--max-minutes"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_kit_train_refuses_minutes_that_are_no_time_budget(tmp_path, capsys, flag, value):
    """Probe 49 F4: `kit train --minutes 0` trained train.max_steps (70,000 steps: hours on a CPU) without a
    word, where `kit recipe run --minutes 0` is refused."""
    code = main(["train", "--out", str(tmp_path / "r"), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and f"kit: error: {flag} {float(value):g}: must be a positive number of minutes" in err, err
    assert not (tmp_path / "r").exists() and len(err.splitlines()) == 1


def test_folders_and_empty_keys_are_named_for_what_they_are(tiny_data, tiny_answers, tmp_path, capsys):
    """Probe 49 F6: a folder in place of a feature file was "missing", a folder given as a recipe "not
    found", and an empty answer key was said to need the header of a submission (Id,Category)."""
    import shutil

    from kit.layout import read_layout

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns(".kit-cache"))
    feature = data / read_layout(data).train[0].path
    feature.unlink()
    feature.mkdir()
    assert main(["data", "check", str(data)]) == 2
    assert f"{feature}: feature file is a folder, not a file" in capsys.readouterr().err
    assert main(["recipe", "run", str(tmp_path)]) == 2
    assert f"{tmp_path}: a folder, not a recipe file" in capsys.readouterr().err
    empty = tmp_path / "key.csv"
    empty.write_text("")
    assert main(["score", str(tiny_answers), "--answers", str(empty)]) == 2
    assert f"{empty}: empty file, expected a CSV with header Id,Category,Usage" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--temperature", "0"), ("--temperature", "nan"),
                                         ("--distill-weight", "1.5")])
def test_a_refused_distill_leaves_no_empty_out_folder(tmp_path, capsys, flag, value):
    """Probe 49 F6: `kit distill ... --temperature 0` was refused after its --out folder was made (left empty)."""
    code = main(["distill", str(tmp_path / "t1"), str(tmp_path / "t2"), "--out", str(tmp_path / "st0"), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and f"kit: error: {flag} {float(value):g}: must be" in err, err
    assert not (tmp_path / "st0").exists() and len(err.splitlines()) == 1


def test_kit_train_says_it_stopped_at_the_time_limit_and_where_it_resumes_from(tiny_data, tmp_path, capsys):
    """Probe 57 F4: `kit train --max-minutes` stopping at the session's limit printed nothing but its summary, and a
    run resumed said nothing of the step it went on from (a recipe's member looked started over in its train.log)."""
    run = tmp_path / "r"
    code = main(["train", "--data", str(tiny_data), "--out", str(run), "--max-minutes", "0.0001", "--set",
                 "train.max_steps=30", "--no-progress"])
    err = capsys.readouterr().err
    step = json.loads((run / "summary.json").read_text())["step"]
    assert code == 0 and f"kit: {run}: stopped at this session's time limit (--max-minutes 0.0001) at step {step} " \
                         f"of 30; `kit train --out {run} --resume` continues it" in err, err
    assert "resuming" not in err
    code = main(["train", "--out", str(run), "--resume", "--max-minutes", "30", "--no-progress"])   # a new session
    err = capsys.readouterr().err
    assert code == 0 and f"kit: {run}: resuming from step {step} of 30" in err, err
    assert "time limit" not in err and json.loads((run / "summary.json").read_text())["step"] == 30
