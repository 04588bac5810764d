"""Submission CSV checks and local scoring: every problem found, numbers that add up."""
import json
import math

import pytest

from kit.cli import main
from kit.errors import KitError
from kit.submission import score_submission, validate_submission, wilson_interval

SPEAKERS = ["id10001", "id10002", "id10003"]
TEST_IDS = [f"uttr-t{i}.pt" for i in range(6)]


@pytest.fixture
def layout_dir(tmp_path, json_layout):
    """A competition layout with json only: validation never opens the feature files."""
    return json_layout(tmp_path / "data", SPEAKERS, {s: [f"uttr-{s}.pt"] for s in SPEAKERS}, TEST_IDS, mel_len=100)


def write(path, text):
    path.write_text(text)
    return path


def good_csv(tmp_path, categories=None):
    categories = categories or [SPEAKERS[i % 3] for i in range(len(TEST_IDS))]
    rows = "".join(f"{i},{c}\n" for i, c in zip(TEST_IDS, categories, strict=True))
    return write(tmp_path / "sub.csv", "Id,Category\n" + rows)


def test_round_trip_write_validate_score(tmp_path, layout_dir):
    sub = good_csv(tmp_path)                         # predicts id10001, id10002, id10003, ...
    assert validate_submission(sub, layout_dir) == []
    # key: first 3 public, last 3 private; the submission gets 3/3 public, 1/3 private
    truth = ["id10001", "id10002", "id10003", "id10001", "id10001", "id10001"]
    usage = ["Public"] * 3 + ["Private"] * 3
    key = write(tmp_path / "key.csv", "Id,Category,Usage\n" +
                "".join(f"{i},{c},{u}\n" for i, c, u in zip(TEST_IDS, truth, usage, strict=True)))
    r = score_submission(sub, key)
    assert (r["public"]["correct"], r["public"]["n"], r["public"]["acc"]) == (3, 3, 1.0)
    assert (r["private"]["correct"], r["private"]["n"]) == (1, 3)
    assert r["private"]["acc"] == pytest.approx(1 / 3)
    assert r["overall"]["acc"] == pytest.approx(4 / 6)
    assert r["gap"] == pytest.approx(1 - 1 / 3)
    assert r["public"]["ci_low"] < 1.0 and r["public"]["ci_high"] == 1.0
    assert r["private"]["ci_low"] < 1 / 3 < r["private"]["ci_high"]


def test_wilson_interval_known_values():
    low, high = wilson_interval(50, 100)                # textbook: 0.4038 .. 0.5962
    assert (low, high) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t.replace("Id,Category", "id,category"), "header is 'id,category'"),
    (lambda t: t.replace("Id,Category\n", ",Id,Category\n"), "an index column?"),
    (lambda t: "\n".join(t.splitlines()[:-1]) + "\n", "5 rows, expected 6"),
    (lambda t: t + f"{TEST_IDS[0]},id10001\n", "1 duplicate Id(s): uttr-t0.pt"),
    (lambda t: t.replace("uttr-t5.pt", "uttr-nope.pt"), "Id 'uttr-nope.pt' is not a test utterance"),
    (lambda t: t.replace("uttr-t5.pt", "uttr-nope.pt"), "1 test utterance(s) missing: uttr-t5.pt"),
    (lambda t: t.replace("uttr-t2.pt,id10003", "uttr-t2.pt,id99999"), "Category 'id99999' is not a speaker"),
    (lambda t: t.replace("uttr-t2.pt,id10003", "uttr-t2.pt,id10003,extra"), "row(s) without exactly 2 fields"),
])
def test_each_problem_is_detected(tmp_path, layout_dir, mutate, expected):
    sub = good_csv(tmp_path)
    write(sub, mutate(sub.read_text()))
    problems = validate_submission(sub, layout_dir)
    assert any(expected in p for p in problems), problems


def test_unreadable_files_give_one_line(tmp_path, layout_dir):
    missing = tmp_path / "missing.csv"
    assert validate_submission(missing, layout_dir) == [f"{missing}: submission not found"]
    [line] = validate_submission(write(tmp_path / "empty.csv", ""), layout_dir)
    assert "empty file" in line
    binary = tmp_path / "probs.npy"
    binary.write_bytes(b"\x93NUMPY\x01\x00\x00\x00")
    [line] = validate_submission(binary, layout_dir)
    assert "not a CSV" in line
    [line] = validate_submission(write(tmp_path / "notes.txt", "hello\nworld\n"), layout_dir)
    assert "not a CSV" in line


def test_problem_list_is_capped(tmp_path, layout_dir):
    rows = "".join(f"{i},nobody\n" for i in TEST_IDS) * 3        # 18 rows of bad categories + dups
    problems = validate_submission(write(tmp_path / "sub.csv", "Id,Category\n" + rows), layout_dir)
    assert len(problems) == 11 and problems[-1].startswith("... and ")
    assert "18 rows, expected 6" in problems[0]                  # whole-file problems come first


def test_cli_validate_and_score(tmp_path, layout_dir, capsys):
    sub = good_csv(tmp_path)
    assert main(["validate", str(sub), "--data", str(layout_dir)]) == 0
    assert "ok:" in capsys.readouterr().out
    write(sub, sub.read_text().replace("id10003", "id0"))
    assert main(["validate", str(sub), "--data", str(layout_dir)]) == 2
    err = capsys.readouterr().err
    assert err.count("kit: error:") == 2 and "Category 'id0'" in err

    key = write(tmp_path / "key.csv", "Id,Category,Usage\n" +
                "".join(f"{i},id10001,{'Public' if n % 2 else 'Private'}\n" for n, i in enumerate(TEST_IDS)))
    good_csv(tmp_path)
    assert main(["score", str(sub), "--answers", str(key), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["overall"]["correct"] == 2 and r["overall"]["n"] == 6


def test_score_refuses_a_submission_for_other_ids(tmp_path):
    sub = write(tmp_path / "sub.csv", "Id,Category\na,x\nb,y\n")
    key = write(tmp_path / "key.csv", "Id,Category,Usage\na,x,Public\nc,y,Private\n")
    with pytest.raises(KitError, match="1 Id\\(s\\) missing, 1 unknown"):
        score_submission(sub, key)
