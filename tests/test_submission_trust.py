"""What Kaggle scored stays on disk (README, "What kit promises"): `kit submit` notes beside the CSV
what it sent, whatever ledger it used; `kit ensemble` moves a submitted NAME.csv and NAME.json aside
together, only when the file there is one that was submitted, and only once the new pair is written;
names and weights it refuses are refused in one plain line.
"""
from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

import kit.kaggle.submissions
from kit.fsio import sha256_file
from kit.kaggle import append_ledger, read_ledger
from kit.submission import keep_submitted

from conftest import kit_cli, one_error, one_error_line, write_submission

RUNS = {"r1": ([0, 1, 2, 0, 1, 0], [0, 1, 2, 2]), "r2": ([0] * 6, [0, 1, 1, 0])}


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def pair(predicted, tmp_path, capsys):
    """ensemble(*extra) runs `kit ensemble r1 r2 --name pair --out subs` and returns its exit code."""
    runs = [predicted.run(name, *preds) for name, preds in RUNS.items()]
    subs = tmp_path / "subs"

    def ensemble(*extra) -> tuple[int, str, str]:
        return kit_cli(capsys, "ensemble", *runs, "--name", "pair", "--out", subs, *extra)

    ensemble.subs, ensemble.runs = subs, runs
    return ensemble


# ---------------------------------------------------------------- 1. submitted with a ledger elsewhere
def test_a_csv_submitted_with_a_ledger_elsewhere_is_kept_by_kit_ensemble(kaggle_env, standin, sub, pair, tmp_path,
                                                                         capsys):
    ledger = tmp_path / "L1" / "ledger.csv"
    sent, manifest = sub.read_bytes(), sub.with_suffix(".json").read_bytes()
    code, _, err = kit_cli(capsys, "submit", sub, "-m", "first", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0, err
    [row] = read_ledger(ledger).to_dict("records")
    note = sub.with_name(f".{sub.name}.submitted").read_text()
    assert sha256_file(sub) in note and row["ref"] in note and str(ledger.resolve()) in note

    code, _, err = kit_cli(capsys, "ensemble", *pair.runs, "--name", sub.stem, "--out", sub.parent)
    assert code == 0, err
    assert "was submitted" in err
    [old_csv], [old_json] = sub.parent.glob("sub.csv.old-*"), sub.parent.glob("sub.json.old-*")
    assert old_csv.read_bytes() == sent and old_json.read_bytes() == manifest
    assert sub.read_bytes() != sent


def test_a_kept_csv_submits_with_the_manifest_kept_beside_it(kaggle_env, standin, sub, pair, tmp_path, capsys):
    """NAME.csv.old-<stamp> goes to Kaggle credited to its own members and vote (NAME.json.old-<stamp>),
    not refused for want of a NAME.csv.json."""
    ledger = tmp_path / "L1" / "ledger.csv"
    members = json.loads(sub.with_suffix(".json").read_text())["members"]
    assert kit_cli(capsys, "submit", sub, "-m", "first", "--ledger", ledger, "--endpoint", standin.url)[0] == 0
    assert kit_cli(capsys, "ensemble", *pair.runs, "--name", sub.stem, "--out", sub.parent)[0] == 0
    [kept] = sub.parent.glob("sub.csv.old-*")
    code, _, err = kit_cli(capsys, "submit", kept, "-m", "again", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0, err
    again = read_ledger(ledger).set_index("message").loc["again"]
    assert again["members"] == ";".join(members) and again["members"]


def test_a_note_that_cannot_be_written_stops_the_send_before_anything_is_sent(kaggle_env, standin, sub, tmp_path,
                                                                               capsys):
    """The note holds the send's id, by which a lost answer is found (session 26, probe 32): a send that
    cannot be noted is not made (it was made, with a line, before)."""
    sub.with_name(f".{sub.name}.submitted").mkdir()                # a folder where the note must go
    ledger = tmp_path / "L1" / "ledger.csv"
    code, out, err = kit_cli(capsys, "submit", sub, "-m", "first", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 2 and not standin.submissions and out == ""
    [line] = [ln for ln in err.splitlines() if ln.startswith("kit: error:")]
    assert f".{sub.name}.submitted" in line and "nothing was sent" in line


# ---------------------------------------------------------------- 2. only what was submitted moves aside
def test_a_re_ensemble_to_a_path_a_ledger_names_keeps_nothing_that_was_not_submitted(pair):
    subs = pair.subs
    append_ledger(subs / "ledger.csv", {"competition": "c", "file": str(subs / "pair.csv"), "sha256": "a" * 64,
                                        "status": "COMPLETE"})       # an earlier pair.csv, long since replaced
    for weights in ("3,1", "1,3", "3,1"):
        code, _, err = pair("--weights", weights)
        assert code == 0 and "was submitted" not in err and "error" not in err
    assert list(subs.glob("pair.*.old-*")) == []


def test_a_submitted_pair_keeps_its_manifest_when_another_vote_gives_the_same_csv(pair):
    """The same labels from another vote (weights 4,1 after 3,1) leave the CSV's bytes as they were, but
    the manifest of what Kaggle scored (its weights, its vote) moves aside with it; the same vote again
    writes nothing at all."""
    subs = pair.subs
    assert pair("--weights", "3,1")[0] == 0
    sent, manifest = (subs / "pair.csv").read_bytes(), (subs / "pair.json").read_bytes()
    assert pair("--weights", "3,1")[0] == 0                                   # the same vote again
    assert (subs / "pair.json").read_bytes() == manifest and list(subs.glob("pair.*.old-*")) == []
    append_ledger(subs / "ledger.csv", {"competition": "c", "file": str(subs / "pair.csv"),
                                        "sha256": sha256_file(subs / "pair.csv"), "status": "COMPLETE"})
    code, _, err = pair("--weights", "4,1")
    assert code == 0 and "was submitted" in err
    assert (subs / "pair.csv").read_bytes() == sent                            # the same labels
    assert json.loads((subs / "pair.json").read_text())["weights"] != json.loads(manifest)["weights"]
    [old_csv], [old_json] = subs.glob("pair.csv.old-*"), subs.glob("pair.json.old-*")
    assert old_csv.read_bytes() == sent and old_json.read_bytes() == manifest


# ---------------------------------------------------------------- 3. a full disk
def test_a_full_disk_leaves_the_submitted_pair_where_the_ledger_names_it(pair, monkeypatch):
    subs = pair.subs
    assert pair("--weights", "3,1")[0] == 0
    sent, manifest = (subs / "pair.csv").read_bytes(), (subs / "pair.json").read_bytes()
    append_ledger(subs / "ledger.csv", {"competition": "c", "file": str(subs / "pair.csv"),
                                        "sha256": sha256_file(subs / "pair.csv"), "status": "COMPLETE"})
    before = files_under(subs)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    one_error(*pair("--weights", "1,3")[::2], "pair.", "disk full")
    assert (subs / "pair.csv").read_bytes() == sent and (subs / "pair.json").read_bytes() == manifest
    assert files_under(subs) == before                                       # no .old, no temp file


# ---------------------------------------------------------------- 4. two kit ensembles at once
def submitted_pair(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    csv = folder / "a.csv"
    csv.write_text("Id,Category\nu,s\n")
    csv.with_suffix(".json").write_text("{}\n")
    append_ledger(folder / "ledger.csv", {"competition": "c", "file": str(csv), "sha256": sha256_file(csv)})
    return csv


def test_the_csv_and_its_manifest_are_kept_under_the_same_name(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20260101-000000")
    csv = submitted_pair(tmp_path / "subs")
    (csv.parent / "a.csv.old-20260101-000000").write_text("left by another kit ensemble\n")
    kept = keep_submitted(csv, "f" * 64)
    assert sorted(p.name for p in kept) == ["a.csv.old-20260101-000000-2", "a.json.old-20260101-000000-2"]


def test_a_csv_another_process_moved_aside_first_is_no_error(tmp_path, monkeypatch):
    csv = submitted_pair(tmp_path / "subs")
    real = os.rename

    def raced(src, dst):            # the other kit ensemble moves the pair aside just before this one
        if Path(src) == csv and csv.exists():
            real(csv, csv.parent / "a.csv.old-other")
            real(csv.with_suffix(".json"), csv.parent / "a.json.old-other")
        real(src, dst)

    monkeypatch.setattr(os, "rename", raced)
    assert keep_submitted(csv, "f" * 64) == []
    assert sorted(p.name for p in csv.parent.glob("a.*.old-*")) == ["a.csv.old-other", "a.json.old-other"]


# ---------------------------------------------------------------- 5. names; 6. weights
@pytest.mark.parametrize("name, why", [(" ", "blank"), ("", "empty"), (" v4", "blank"),
                                       ("x.csv", "without .csv"), ("x.JSON", "without .JSON")])
def test_a_name_kit_would_mangle_is_refused_before_anything_is_written(pair, tmp_path, name, why):
    before = files_under(tmp_path)
    line = one_error(*pair("--name", name)[::2], f"name {name!r}", why)
    assert "\n" not in line
    assert files_under(tmp_path) == before


def test_bad_weights_are_shown_as_numbers(pair, tmp_path):
    line = one_error(*pair("--weights", "1,nan")[::2], "weights 1, nan:", "finite")
    assert "np." not in line and not (tmp_path / "subs").exists()


def _replaced_by_a_perfect_csv(sub, tiny_answers, tiny_data):
    """What another `kit ensemble` to the same name does: new bytes (here every answer right) in place."""
    write_submission(sub.parent, tiny_answers, tiny_data, name=sub.stem, wrong_every=0)


def test_the_bytes_sent_are_the_bytes_hashed_when_the_csv_is_replaced_during_the_send(kaggle_env, standin, sub,
                                                                                       tiny_answers, tiny_data,
                                                                                       tmp_path, capsys, monkeypatch):
    """A vote written to the same name while the worker starts must not be uploaded under the first's
    digest and members; and the file that was sent is noted, so the next vote moves it aside."""
    digest = sha256_file(sub)
    real_call = kit.kaggle.submissions.call

    def replaced_first(*args, **kw):
        _replaced_by_a_perfect_csv(sub, tiny_answers, tiny_data)
        return real_call(*args, **kw)

    monkeypatch.setattr(kit.kaggle.submissions, "call", replaced_first)
    ledger = tmp_path / "L1" / "ledger.csv"
    code, _, err = kit_cli(capsys, "submit", sub, "-m", "first", "--wait", "--ledger", ledger, "--endpoint",
                           standin.url)
    assert code == 0, err
    [row] = read_ledger(ledger).to_dict("records")
    assert row["sha256"] == digest and float(row["public"]) < 1.0      # the first CSV's bytes and score
    assert digest in sub.with_name(f".{sub.name}.submitted").read_text()


def test_a_csv_replaced_while_it_is_checked_is_not_sent(kaggle_env, standin, sub, tiny_answers, tiny_data, tmp_path,
                                                        capsys, monkeypatch):
    real_merge = kit.kaggle.submissions.merge_pending

    def replaced_meanwhile(ledger):
        _replaced_by_a_perfect_csv(sub, tiny_answers, tiny_data)
        return real_merge(ledger)

    monkeypatch.setattr(kit.kaggle.submissions, "merge_pending", replaced_meanwhile)
    code, _, err = kit_cli(capsys, "submit", sub, "-m", "first", "--ledger", tmp_path / "ledger.csv", "--endpoint",
                           standin.url)
    assert code == 2 and "replaced while it was being checked" in one_error_line(err)
    assert standin.submissions == []


def test_a_killed_votes_temp_files_are_removed_by_the_next(pair):
    """Probe 23: a vote killed while writing its CSV and manifest left .NAME.csv.XXXX.tmp and
    .NAME.json.XXXX.tmp in submissions/ for good; the next vote of that name removes them."""
    pair.subs.mkdir()
    left = [pair.subs / ".pair.csv.k1ll3d00.tmp", pair.subs / ".pair.json.k1ll3d00.tmp"]
    other = pair.subs / ".other.csv.k1ll3d00.tmp"          # another name's: its own vote's to remove
    for path in [*left, other]:
        path.write_bytes(b"half")
    assert pair()[0] == 0
    assert not any(path.exists() for path in left) and other.exists()
