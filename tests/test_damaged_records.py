"""Records damaged or edited by hand, a data dir moved away, odd command lines: one line, exit 2,
never a traceback, and never a check turned off by a record of the wrong shape."""
from __future__ import annotations

import json
import re

import pytest

from kit.budget import step_rate_note
from kit.config import parse_overrides
from kit.errors import KitError
from kit.written import written_by_run

from conftest import kit_cli, one_error


def test_a_moved_data_dir_is_one_line_for_every_reader_of_members(tmp_path, capsys, predicted):
    runs = [predicted.run(n, [0, 1, 2, 0, 1, 0], [0, 1, 2, 2]) for n in ("r1", "r2")]
    identity = {"version": 1, "config": {}, "data": {"layout": "0123456789abcdef"}}
    for run in runs:
        (run / "identity.json").write_text(json.dumps(identity))
    predicted.data_dir.rename(tmp_path / "moved")
    for args in (("ensemble", *runs, "--out", tmp_path / "subs"), ("report", *runs),
                 ("pseudo", *runs, "--out", tmp_path / "pseudo")):
        one_error(*kit_cli(capsys, *args)[::2], str(predicted.data_dir), "moved or deleted")


@pytest.mark.parametrize("rates", [
    "x", [1, 2], {"probed": "1", "achieved": 1}, {"probed": 1, "achieved": 0.1, "cpu_cores": "a"},
    {"probed": True, "achieved": 0.1}, {"probed": 10.0, "achieved": float("nan")},
])
def test_a_damaged_step_rate_record_gives_no_note_and_no_traceback(rates):
    assert step_rate_note(rates) == ""


def test_a_step_rate_record_without_its_step_still_says_the_lost_rate():
    assert "0.1 steps/s against 1.0" in step_rate_note({"probed": 1, "achieved": 0.1, "step": None, "planned_steps": 5})


def test_a_sound_step_rate_record_still_gives_its_note():
    note = step_rate_note({"probed": 10.0, "achieved": 4.0, "step": 500, "planned_steps": 1200})
    assert "4.0 steps/s against 10.0" in note and "1,200 steps planned" in note


@pytest.mark.parametrize("record", [{"best.pt": 5}, {"best.pt": True}, {"best.pt": [1, 2]}, [1, 2], "x"])
def test_a_checkpoint_record_of_the_wrong_shape_is_one_line(tmp_path, record):
    (tmp_path / "best.pt").write_bytes(b"weights")
    (tmp_path / "checkpoints.json").write_text(json.dumps(record))
    # the safe way on first (probe 45 #6: only "delete it", which turns off the check of a foreign checkpoint)
    with pytest.raises(KitError, match=rf"checkpoints.json: .*; start over with --fresh .*; a recipe's member alone: "
                                       rf"--fresh --only {re.escape(tmp_path.name)}; or, only if you know its "
                                       r"checkpoints are the run's own, delete the record and the \"run\" entry of its "
                                       r"identity.json to skip their check"):
        written_by_run(tmp_path / "best.pt")


@pytest.mark.parametrize("items,needle", [
    (["train.lr=1", "train.lr.x=2"], "train.lr is a value, not a table"),
    (["train.lr.x=2", "train.lr=1"], "train.lr is a table, not a value"),
])
def test_an_override_that_makes_a_value_a_table_is_one_line(items, needle):
    with pytest.raises(KitError, match=needle):
        parse_overrides(items)


def test_a_train_command_with_such_overrides_exits_2(tmp_path, capsys):
    one_error(*kit_cli(capsys, "train", "--data", tmp_path, "--out", tmp_path / "run",
                       "--set", "train.lr=1", "--set", "train.lr.x=2")[::2], "train.lr is a value")


def test_a_score_without_a_public_half_is_valid_json(tmp_path, capsys, predicted):
    csv = tmp_path / "sub.csv"
    csv.write_text("Id,Category\n" + "".join(f"{u},{predicted.SPEAKERS[0]}\n" for u in predicted.TEST_IDS))
    key = tmp_path / "key.csv"
    key.write_text("Id,Category,Usage\n" + "".join(f"{u},{predicted.SPEAKERS[0]},Private\n"
                                                  for u in predicted.TEST_IDS))
    code, out, _ = kit_cli(capsys, "score", csv, "--answers", key, "--json")
    assert code == 0
    r = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert r["public"]["acc"] is None and r["gap"] is None and r["private"]["acc"] == 1.0
    code, out, _ = kit_cli(capsys, "score", csv, "--answers", key)
    assert code == 0 and "nan" not in out.lower() and "gap public - private: -" in out


def test_only_that_names_no_member_is_refused(tmp_path, capsys, tiny_recipe):
    one_error(*kit_cli(capsys, "recipe", "run", tiny_recipe(), "--data", tmp_path, "--only", ",")[::2],
              "names no member")


def test_a_run_far_past_its_minutes_says_so():
    from kit.budget import lost_time_note

    assert "took 2.0 minutes against its 0.3" in lost_time_note({"seconds": 120.3}, 0.3)
    assert lost_time_note({"seconds": 20.0}, 0.3) == ""                 # within its time
    assert lost_time_note({"seconds": 600.0}, 0.0) == ""                # no time budget: nothing to say
    both = lost_time_note({"seconds": 120.3, "steps_per_second": {"probed": 10.0, "achieved": 2.0, "step": 10,
                                                                 "planned_steps": 100}}, 0.3)
    assert "2.0 steps/s against 10.0" in both and "took 2.0 minutes" in both


def test_a_first_kit_scores_before_any_submission_is_no_error(tmp_path, capsys):
    code, out, err = kit_cli(capsys, "scores", "--ledger", tmp_path / "submissions" / "ledger.csv", "--no-refresh")
    assert code == 0 and "no submissions yet" in out and not err.strip()
    (tmp_path / "folder").mkdir()
    one_error(*kit_cli(capsys, "scores", "--ledger", tmp_path / "folder", "--no-refresh")[::2], "not a file")


def test_kit_scores_keeps_each_competition_and_place_sent_to_in_a_table_of_its_own(tmp_path, capsys):
    """Probe 57: a rehearsal's scores on the stand-in were ranked with another competition's in one table, with
    nothing to tell them apart (a stand-in's 0.9 above Kaggle's 0.7)."""
    import csv

    from kit.kaggle.ledger import LEDGER_COLUMNS

    rows = [("ml2022spring-hw4", "local stand-in", "rehearsal", "0.9", "0.8"),
            ("ml2022spring-hw4", "kaggle", "real", "0.7", "0.6"),
            ("ml2022spring-hw4", "local stand-in", "rehearsal2", "0.5", "0.5")]
    ledger = tmp_path / "ledger.csv"
    with ledger.open("w", newline="") as f:
        writer = csv.DictWriter(f, LEDGER_COLUMNS)
        writer.writeheader()
        for i, (competition, target, name, public, private) in enumerate(rows):
            writer.writerow({c: "" for c in LEDGER_COLUMNS} | {
                "time": f"2026-12-08T00:0{i}:00Z", "competition": competition, "target": target, "file": f"{name}.csv",
                "sha256": "0" * 64, "message": name, "status": "COMPLETE", "public": public, "private": private})
    code, out, err = kit_cli(capsys, "scores", "--ledger", ledger, "--no-refresh")
    assert code == 0, err
    lines = out.splitlines()
    stand_in = lines.index("ml2022spring-hw4 (local stand-in): 2 submission(s)")
    kaggle = lines.index("ml2022spring-hw4 (kaggle): 1 submission(s)")
    assert stand_in < kaggle                                     # the group of the best public score first
    assert [line.split()[-1] for line in lines[stand_in + 2:stand_in + 4]] == ["rehearsal", "rehearsal2"]
    assert lines[kaggle + 2].split()[-1] == "real"
    one = tmp_path / "one.csv"
    one.write_text("\n".join(ledger.read_text().splitlines()[:2]) + "\n")    # one competition: no heading
    code, out, _ = kit_cli(capsys, "scores", "--ledger", one, "--no-refresh")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["public", "private", "gap"]


@pytest.mark.parametrize("text", ["1_0,1", "\uff11,2"])
def test_weights_python_reads_but_nobody_writes_are_refused(text):
    from kit.ensemble import parse_weights

    with pytest.raises(KitError, match="comma-separated numbers"):
        parse_weights(text)
    assert parse_weights("1,0.5,2e-1") == [1.0, 0.5, 0.2]
