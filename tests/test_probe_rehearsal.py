"""What outside probe 16 found a newcomer could spend for nothing: a synthetic competition's vote sent
to Kaggle by a plain `kit submit`, Kaggle kernels pushed for synthetic data, a notebook's 2023 data
sent to ml2022spring-hw4, and hand edits or settings the Kaggle code did not read right."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kit.errors import KitError
from kit.kaggle import read_ledger
from kit.layout import data_competition

from conftest import kit_cli as kit
from conftest import one_error_line, write_submission


def test_kit_submit_refuses_to_send_a_synthetic_competitions_vote_to_kaggle(kaggle_env, sub, monkeypatch, capsys):
    """The README's `kit submit submissions/boss.csv` after `make recipe-boss` on data/demo went to
    Kaggle, which could only score it ERROR and count it against the day's five."""
    monkeypatch.delenv("KIT_KAGGLE_ENDPOINT", raising=False)
    code, out, err = kit(capsys, "submit", sub, "-m", "boss ensemble", "--ledger", sub.parent / "ledger.csv")
    line = one_error_line(err)
    assert code == 2 and out == "" and "a synthetic competition" in line and "nothing was sent" in line
    assert "--endpoint" in line and str(sub) in line
    assert not (sub.parent / "ledger.csv").exists()             # nothing tried, nothing recorded
    # probe 18: --data naming a copy without the synthetic marker does not hide what the manifest says
    copy = shutil.copytree(Path(json.loads(sub.with_suffix(".json").read_text())["data_dir"]), sub.parent / "copy",
                           ignore=shutil.ignore_patterns(".kit-synth.json", ".kit-cache"))
    code, _, err = kit(capsys, "submit", sub, "-m", "x", "--data", copy, "--ledger", sub.parent / "ledger.csv")
    assert code == 2 and "a synthetic competition" in one_error_line(err)
    assert not (sub.parent / "ledger.csv").exists()


def test_a_synthetic_competition_is_rehearsed_on_a_stand_in_even_with_credentials(kaggle_env, tiny_data,
                                                                                  monkeypatch):
    """With credentials set, `--launcher kaggle` on synthetic data pushed real kernels (which train on
    the real competition's data) and reserved their GPU hours."""
    from kit.launch.kaggle_kernels import kaggle_target

    monkeypatch.delenv("KIT_KAGGLE_ENDPOINT", raising=False)
    with kaggle_target(tiny_data, None, None) as target:
        assert target["name"] == "local stand-in" and target["endpoint"].startswith("http://127.0.0.1:")


@pytest.mark.parametrize("slug", ["ml2023spring-hw4", "ml2021springhw4"])
def test_data_in_a_folder_named_after_a_competition_is_that_competitions(tiny_data, tmp_path, slug):
    """A Kaggle notebook's /kaggle/input/<slug>/Dataset: the recipe sent its vote to ml2022spring-hw4."""
    data = Path(shutil.copytree(tiny_data, tmp_path / "input" / slug / "Dataset",
                                ignore=shutil.ignore_patterns(".kit-synth.json", ".kit-cache")))
    assert data_competition(data) == slug
    assert data_competition(tmp_path / "input" / slug) == slug
    plain = Path(shutil.copytree(data, tmp_path / "mine" / "Dataset"))
    assert data_competition(plain) is None                      # no name says: the default applies
    other = Path(shutil.copytree(data, tmp_path / "ml2021spring-hw2" / "Dataset"))
    assert data_competition(other) is None                      # another homework: not HW4's layout (probe 18)
    link = tmp_path / "input2" / slug / "Dataset"               # a link inside the competition's folder
    link.parent.mkdir(parents=True)
    link.symlink_to(plain)
    assert data_competition(link) == slug


@pytest.mark.parametrize("name,value", [("KIT_KAGGLE_BACKOFF", "-1"), ("KIT_KAGGLE_RETRIES", "-1"),
                                        ("KIT_KAGGLE_MAX_RETRY_AFTER", "nan"), ("KIT_KAGGLE_POLL", "inf"),
                                        ("KIT_KAGGLE_BACKOFF", "1e300"), ("KIT_KAGGLE_POLL", "0"),
                                        ("KIT_KAGGLE_RETRIES", "1000")])
def test_kaggle_timing_settings_out_of_range_are_one_line(monkeypatch, name, value):
    from kit.kaggle import client

    monkeypatch.setenv(name, value)
    getter = {"KIT_KAGGLE_BACKOFF": client.backoff, "KIT_KAGGLE_RETRIES": client.retries,
              "KIT_KAGGLE_MAX_RETRY_AFTER": client.max_retry_after, "KIT_KAGGLE_POLL": client.poll_interval}[name]
    with pytest.raises(KitError, match=f"{name}='{value}': must be a number from "):
        getter()


def _ledger(tmp_path, tiny_answers, tiny_data, **row) -> Path:
    """A ledger of one COMPLETE row, with `row`'s fields changed as a person might by hand."""
    from kit.kaggle import append_ledger

    csv = write_submission(tmp_path / "submissions", tiny_answers, tiny_data)
    ledger = tmp_path / "submissions" / "ledger.csv"
    append_ledger(ledger, {"time": "2026-12-06 08:00:00", "competition": "c", "file": str(csv), "sha256": "ab",
                           "message": "m", "members": "", "vote": "", "ref": "123", "status": "COMPLETE",
                           "public": "0.5", "private": "0.6", "target": "kaggle", "error": "", **row})
    return ledger


def test_a_ledger_saved_by_a_spreadsheet_with_a_byte_order_mark_is_read(tmp_path, tiny_answers, tiny_data):
    ledger = _ledger(tmp_path, tiny_answers, tiny_data)
    text = ledger.read_text()
    ledger.write_text(text.replace("\n", "\r\n"), encoding="utf-8-sig")
    [row] = read_ledger(ledger).to_dict("records")
    assert row["time"] == "2026-12-06 08:00:00" and row["public"] == "0.5"


def test_hand_edited_statuses_and_scores_in_the_ledger(tmp_path, tiny_answers, tiny_data):
    ledger = _ledger(tmp_path, tiny_answers, tiny_data, status=" pending", public="", private="")
    assert list(read_ledger(ledger)["status"]) == ["PENDING"]          # still refreshed by `kit scores`
    for bad in ("abc", "1.5", "\uff11"):                 # probe 58 F2: a full-width 1 passed float()
        ledger = _ledger(tmp_path / bad, tiny_answers, tiny_data, public=bad)
        with pytest.raises(KitError, match=f"row 1 has public score '{bad}', which is not a number from 0 to 1"):
            read_ledger(ledger)


def test_a_vote_is_never_written_over_a_ledger_kept_under_its_name(kaggle_env, standin, sub, predicted, capsys):
    """Probe 20: `kit submit --ledger submissions/hw4-2023.csv`, then `kit ensemble --name hw4-2023`
    replaced the ledger with the vote (its rows lost; with one row there was no backup)."""
    from conftest import submit_args

    ledger = sub.parent / "hw4-2023.csv"
    args = submit_args(sub, standin)
    args[args.index("--ledger") + 1] = ledger
    assert kit(capsys, *args)[0] == 0
    before = ledger.read_bytes()
    runs = [predicted.run(name, [0, 1, 2, 0, 1, 2], [0, 1, 2, 0]) for name in ("a", "b")]
    code, _, err = kit(capsys, "ensemble", *runs, "--name", "hw4-2023", "--out", sub.parent)
    assert code == 2 and "a submissions ledger, where its vote would go" in one_error_line(err)
    assert ledger.read_bytes() == before


def test_a_recipe_is_not_named_as_another_recipes_stage_writes():
    """Probe 20: a recipe named r-before-refit wrote over recipe r's vote before its refit."""
    from kit.names import check_recipe_name

    for name in ("r-before-refit", "r-student", "r-vote0"):
        with pytest.raises(KitError, match="for another recipe's stages"):
            check_recipe_name(name)
    assert check_recipe_name("r") == "r" and check_recipe_name("student-r") == "student-r"
