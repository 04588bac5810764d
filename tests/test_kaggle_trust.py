"""What `kit submit` and `kit scores` refuse rather than record wrongly: a CSV its manifest was not
written for, a ledger or pending file with a renamed column or malformed rows, a kaggle.json the
client cannot use. Each is one line naming the file, exit 2, and nothing sent, lost or deleted.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kit import DEFAULT_COMPETITION
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.kaggle import append_ledger, call, read_ledger, update_ledger
from kit.kaggle.pending import merge_pending
from kit.kaggle.server import StandIn

from conftest import COMP, one_error, submit_args, write_submission
from conftest import kit_cli as kit

HEADER = "time,competition,file,sha256,message,members,vote,ref,status,public,private,target,error\n"
ROW = "2026-11-21T10:00:00Z,c,a.csv,abc,first,m1,hard,101,COMPLETE,0.9,0.8,kaggle,\n"
SECRET = "kitjsonkey-NEVER-SHOWN-5150"


def never_sent(monkeypatch) -> None:
    monkeypatch.setattr("kit.kaggle.submissions.call", lambda *a, **k: pytest.fail("sent despite a refusal"))


# ---------------------------------------------------------------- the manifest beside the CSV
def test_a_csv_its_manifest_was_not_written_for_is_refused_before_sending(kaggle_env, standin, sub, tiny_data,
                                                                         capsys):
    manifest = sub.with_suffix(".json")
    written_for = sha256_file(sub)
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "csv_sha256": written_for}))
    sub.write_bytes(sub.read_bytes().replace(b"\r\n", b"\n"))     # another CSV copied over it: still valid
    for extra in ([], ["--data", tiny_data]):
        line = one_error(*kit(capsys, *submit_args(sub, standin, *extra))[::2], f"{sub}: its manifest {manifest}",
                         "written for another CSV", written_for[:12], sha256_file(sub)[:12], "kit ensemble")
        assert "Traceback" not in line
    assert standin.calls == [] and not (sub.parent / "ledger.csv").exists()


def test_a_manifest_written_for_this_csv_credits_its_members(kaggle_env, standin, sub, capsys):
    manifest = sub.with_suffix(".json")
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "csv_sha256": sha256_file(sub)}))
    code, _, err = kit(capsys, *submit_args(sub, standin))
    assert code == 0, err
    [row] = read_ledger(sub.parent / "ledger.csv").to_dict("records")
    assert row["members"] == "runs/simple/m0;runs/simple/m1" and row["vote"] == "soft"



def test_a_manifest_naming_a_data_dir_that_is_gone_is_named(kaggle_env, sub, monkeypatch, capsys):
    manifest = sub.with_suffix(".json")
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "data_dir": str(sub.parent / "gone")}))
    never_sent(monkeypatch)
    one_error(*kit(capsys, "submit", sub, "-m", "x")[::2], f"{manifest}: names the data dir", "gone", "--data DIR")



@pytest.mark.parametrize("field, value", [("csv_sha256", 5), ("data_dir", 5), ("members", "abc"), ("members", [1]),
                                          ("competition", 5)])     # probe 58 F5: a TypeError and a FAILED row
def test_a_manifest_field_of_the_wrong_type_is_one_line(kaggle_env, sub, monkeypatch, capsys, field, value):
    manifest = sub.with_suffix(".json")
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), field: value}))
    never_sent(monkeypatch)
    one_error(*kit(capsys, "submit", sub, "-m", "x")[::2], f"{manifest}: not a submission manifest kit wrote",
              f"{field}: wrong type")


def test_a_manifest_naming_no_kaggle_competition_sends_nothing(kaggle_env, sub, monkeypatch, capsys):
    """Probe 58 F5: a manifest's competition "Bad Name" was sent (HTTP 404) and recorded as a FAILED submission,
    where --competition "Bad Name" is refused before anything runs."""
    manifest = sub.with_suffix(".json")
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "competition": "Bad Name"}))
    never_sent(monkeypatch)
    one_error(*kit(capsys, "submit", sub, "-m", "x", "--endpoint", "http://127.0.0.1:9")[::2],
              f"{sub}: voted for competition 'Bad Name'",
              "no Kaggle competition's name", "nothing was sent", "--competition")
    assert not (sub.parent / "ledger.csv").exists() and not list(sub.parent.glob("*ledger*"))


@pytest.mark.parametrize("ref", ["abc", "1001.0"])
def test_a_ledger_ref_that_is_not_a_number_is_one_line(tmp_path, capsys, ref):
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(HEADER + ROW.replace(",101,COMPLETE,", f",{ref},PENDING,"))
    one_error(*kit(capsys, "scores", "--ledger", ledger, "--endpoint", "http://127.0.0.1:9")[::2], str(ledger),
              f"row 1 has ref '{ref}'")


# ---------------------------------------------------------------- the ledger's header
def test_a_renamed_ledger_column_stops_scores_and_submit(kaggle_env, sub, monkeypatch, capsys):
    ledger = sub.parent / "ledger.csv"
    ledger.write_text(HEADER.replace("public", "publik") + ROW)
    before = ledger.read_bytes()
    one_error(*kit(capsys, "scores", "--ledger", ledger, "--no-refresh")[::2], str(ledger), "'publik'",
              "public missing", "known columns: time, competition", "bak-")
    never_sent(monkeypatch)
    one_error(*kit(capsys, "submit", sub, "-m", "x", "--ledger", ledger, "--endpoint", "http://127.0.0.1:9")[::2],
              str(ledger), "'publik'")                                  # a stand-in: the data is synthetic
    assert ledger.read_bytes() == before


def test_a_repeated_ledger_column_is_refused(tmp_path, capsys):
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(HEADER.rstrip("\n") + ",public\n" + ROW.rstrip("\n") + ",0.7\n")
    one_error(*kit(capsys, "scores", "--ledger", ledger, "--no-refresh")[::2], "names public twice")


def test_an_older_ledger_gains_the_new_columns_and_a_users_own_column_is_kept(tmp_path):
    older = tmp_path / "older.csv"
    older.write_text(HEADER.replace(",target,error", "") + ROW.replace(",kaggle,", ""))
    [row] = read_ledger(older).to_dict("records")
    assert row["public"] == "0.9" and row["target"] == "" and row["error"] == ""
    noted = tmp_path / "noted.csv"
    noted.write_text(HEADER.rstrip("\n") + ",note\n" + ROW.rstrip("\n") + ",mine\n")
    assert read_ledger(noted).to_dict("records")[0]["note"] == "mine"


# ---------------------------------------------------------------- pending files
PENDING_ROW = f"2026-11-21T10:00:00Z,{COMP},a.csv,abc,first,m1,hard,1001,PENDING,,,kaggle,\n"


@pytest.mark.parametrize("text,needle", [
    (HEADER.replace("file", "fiel") + PENDING_ROW, "'fiel'"),
    ('{"ref": 5}\n', "unknown column(s) '{\"ref\": 5}'"),
    (HEADER.replace(",file", "") + PENDING_ROW.replace(",a.csv", ""), "row 1 has no file"),
    (HEADER + PENDING_ROW.replace(",1001,", ",abc,"), "row 1 has ref 'abc'"),
    (HEADER + PENDING_ROW.replace(",1001,", ",,"), "row 1 has ref ''"),
    (HEADER.rstrip("\n") + ",note\n" + PENDING_ROW.rstrip("\n") + ",mine\n", "'note'"),
])
def test_a_pending_file_kit_did_not_write_is_refused_and_kept(tmp_path, capsys, text, needle):
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(HEADER + ROW)
    pending = tmp_path / "ledger.csv.pending"
    pending.write_text(text)
    with pytest.raises(KitError, match="ledger.csv.pending: ") as refused:
        merge_pending(ledger)
    assert needle in str(refused.value) and "it is kept" in str(refused.value)
    code, _, err = kit(capsys, "scores", "--ledger", ledger, "--no-refresh")     # the ledger is still shown
    assert code == 0 and f"could not add pending submissions: {pending}: " in err and needle in err
    assert pending.read_text() == text and ledger.read_text() == HEADER + ROW


def test_a_well_formed_pending_file_is_merged_then_removed(tmp_path):
    ledger = tmp_path / "ledger.csv"
    pending = tmp_path / "ledger.csv.pending"
    pending.write_text(HEADER + PENDING_ROW + PENDING_ROW.replace(",1001,PENDING,", ",,FAILED,"))
    assert merge_pending(ledger) == [(pending, 2)]
    assert not pending.exists() and list(read_ledger(ledger)["status"]) == ["PENDING", "FAILED"]


# ---------------------------------------------------------------- kaggle.json
def kaggle_json(home: Path, text: str) -> Path:
    path = home / "kaggle-config" / "kaggle.json"       # KAGGLE_CONFIG_DIR of kaggle_env
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


BAD_JSON = [
    ('{"username": "u", "key": "' + SECRET + '"', True, "not valid JSON"),
    (json.dumps([SECRET]), False, "not a JSON object with username and key"),
]


@pytest.mark.parametrize("text,no_env,needle", BAD_JSON)
def test_a_kaggle_json_the_client_cannot_use_is_named_before_sending(kaggle_env, standin, sub, monkeypatch,
                                                                     capsys, text, no_env, needle):
    path = kaggle_json(kaggle_env, text)
    if no_env:
        monkeypatch.delenv("KAGGLE_USERNAME")
        monkeypatch.delenv("KAGGLE_KEY")
    code, out, err = kit(capsys, *submit_args(sub, standin))
    one_error(code, err, f"{path}: {needle}", "nothing was sent")
    assert SECRET not in out + err
    assert standin.calls == [] and not (sub.parent / "ledger.csv").exists()


@pytest.mark.parametrize("text,no_env,needle", [
    *BAD_JSON, (json.dumps({"username": "u"}), True, "not a JSON object with username and key")])
def test_the_worker_names_a_kaggle_json_it_cannot_use(kaggle_env, standin, monkeypatch, text, no_env, needle):
    path = kaggle_json(kaggle_env, text)
    if no_env:
        monkeypatch.delenv("KAGGLE_USERNAME")
        monkeypatch.delenv("KAGGLE_KEY")
    with pytest.raises(KitError) as refused:
        call("list", {"competition": COMP, "refs": []}, standin.url)
    assert str(refused.value).startswith(f"{path}: {needle}") and SECRET not in str(refused.value)


# ---------------------------------------------------------------- the worker dies with kit
@pytest.mark.slow
def test_a_kaggle_worker_dies_with_the_kit_that_started_it(tmp_path):
    """A `kit submit` killed while its worker waits on Kaggle must not leave the worker to submit
    later: the submission would be made with no ledger row (the parent that records it is gone)."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import uuid

    from conftest import kit_env

    silent = socket.socket()                    # accepts, never answers: the worker waits on it
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    marker = f"KIT_TEST_MARKER={uuid.uuid4().hex}"
    script = ("from kit.kaggle import call; "
              f"call('list', {{'competition': 'c', 'refs': []}}, 'http://127.0.0.1:{silent.getsockname()[1]}')")
    env = {**kit_env(), marker.split("=")[0]: marker.split("=")[1], "KAGGLE_USERNAME": "x", "KAGGLE_KEY": "y",
           "KIT_KAGGLE_RETRIES": "0"}

    def workers() -> list[int]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes() and \
                        b"kit.kaggle.worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(int(pid))
            except OSError:
                continue
        return found

    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 60
        while not workers() and time.time() < deadline:
            time.sleep(0.2)
        assert workers(), "the worker never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.time() + 10
        while workers() and time.time() < deadline:
            time.sleep(0.2)
        assert workers() == []
    finally:
        for pid in workers():
            os.kill(pid, signal.SIGKILL)
        silent.close()


@pytest.mark.parametrize("url", ["notaurl", "ftp://127.0.0.1:8765", "http://"])
def test_an_endpoint_that_is_not_a_url_is_one_line_at_once(kaggle_env, sub, tmp_path, monkeypatch, capsys, url):
    never_sent(monkeypatch)
    one_error(*kit(capsys, "submit", sub, "-m", "x", "--endpoint", url)[::2], f"--endpoint {url!r}: not a stand-in URL")
    assert not (sub.parent / "ledger.csv").exists()
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(HEADER + ROW.replace(",COMPLETE,", ",PENDING,"))
    monkeypatch.setenv("KIT_KAGGLE_ENDPOINT", url)
    code, _, err = kit(capsys, "scores", "--ledger", ledger)     # scores still shows the ledger: a warning
    assert code == 0 and f"could not refresh the ledger's submissions: KIT_KAGGLE_ENDPOINT {url!r}: not a" in err


# ---------------------------------------------------------------- refs are only unique per server
@pytest.mark.slow
def test_scores_never_takes_a_score_from_another_stand_in(kaggle_env, tmp_path, tiny_data, tiny_answers, capsys):
    """A row left PENDING by one stand-in (a killed rehearsal, a stopped `kit kaggle serve`) keeps its
    status when `kit scores` asks another stand-in, even one that handed out the same ref: each server
    numbers its own submissions, so the row's target records which server it went to."""
    folder = tmp_path / "submissions"
    first = write_submission(folder, tiny_answers, tiny_data, "first", wrong_every=2)
    second = write_submission(folder, tiny_answers, tiny_data, "second", wrong_every=10)
    ledger = folder / "ledger.csv"
    with StandIn(tiny_data, tiny_answers, competition=DEFAULT_COMPETITION, pending_polls=99) as gone:
        assert kit(capsys, "submit", first, "-m", "first", "--ledger", ledger, "--endpoint", gone.url)[0] == 0
    [old] = read_ledger(ledger).to_dict("records")
    assert old["status"] == "PENDING" and old["target"] == f"local stand-in at {gone.url}"
    with StandIn(tiny_data, tiny_answers, competition=DEFAULT_COMPETITION) as server:
        assert server.first_ref != gone.first_ref          # a stand-in started again does not reuse refs
        server.first_ref = int(old["ref"]) - 1              # the worst case: it hands out the very same ref
        assert kit(capsys, "submit", second, "-m", "second", "--ledger", ledger, "--endpoint", server.url)[0] == 0
        code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", server.url)
    assert code == 0, err
    assert (f"1 PENDING submission(s) were sent to local stand-in at {gone.url}, not here; refreshed by "
            f"`kit scores --endpoint {gone.url}`") in err
    rows = read_ledger(ledger).set_index("message")
    assert rows.loc["second", "ref"] == old["ref"] and rows.loc["second", "status"] == "COMPLETE"
    assert rows.loc["first", "status"] == "PENDING" and rows.loc["first", "public"] == ""


def test_update_ledger_touches_only_the_row_of_its_target(tmp_path):
    ledger = tmp_path / "ledger.csv"
    for where in ("kaggle", "local stand-in at http://127.0.0.1:9"):
        append_ledger(ledger, {"time": "t", "competition": "c", "file": "a.csv", "ref": "1001", "status": "PENDING",
                               "target": where})
    update_ledger(ledger, "c", "1001", {"status": "COMPLETE", "public": "0.5"}, target="kaggle")
    rows = read_ledger(ledger)[["target", "status", "public"]].values.tolist()
    assert rows == [["kaggle", "COMPLETE", "0.5"], ["local stand-in at http://127.0.0.1:9", "PENDING", ""]]


def test_stopping_the_stand_in_with_sigterm_removes_its_folder(tiny_data, tiny_answers, tmp_path):
    """`kit kaggle serve` stopped by SIGTERM (a notebook cell interrupted, `kill`) cleans up as on
    Ctrl-C: its temp folder (the zip, the kernels' folders) is removed and it exits 143."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "kit", "kaggle", "serve", "--data", str(tiny_data),
                             "--answers", str(tiny_answers), "--port", "0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert "local Kaggle stand-in" in proc.stdout.readline()
        [folder] = list(tmp_path.glob("kit-standin-*"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        proc.kill()
    assert not folder.exists()


# ---------------------------------------------------------------- a ledger behind a symlink, a full disk
def test_a_ledger_that_is_a_symlink_is_written_through_to_its_target(tmp_path):
    """A shared ledger reached by a link (`--ledger L28/ledger.csv` -> shared/ledger.csv) gets every
    row, its backups, its lock and its pending file beside the target: a rename over the link would
    fork it, and a lock beside the link would not exclude writers using the real path."""
    from kit.kaggle import append_ledger, update_ledger
    from kit.kaggle.pending import keep_pending, pending_files

    shared = tmp_path / "shared" / "ledger.csv"
    shared.parent.mkdir()
    shared.write_text(HEADER + ROW)
    link = tmp_path / "L28" / "ledger.csv"
    link.parent.mkdir()
    link.symlink_to(Path("..") / "shared" / "ledger.csv")
    row = {"time": "t", "competition": "c", "file": "b.csv", "sha256": "d", "ref": "102", "status": "PENDING",
           "target": "kaggle"}
    append_ledger(link, row)
    update_ledger(link, "c", "102", {"status": "COMPLETE"}, target="kaggle")
    assert pending_files(link)[0] == shared.with_name("ledger.csv.pending")
    keep_pending(link, {**row, "ref": "103"})
    assert merge_pending(link) == [(shared.with_name("ledger.csv.pending"), 1)]
    assert link.is_symlink() and sorted(p.name for p in link.parent.iterdir()) == ["ledger.csv"]
    rows = read_ledger(shared)
    assert list(rows["ref"]) == ["101", "102", "103"] and list(rows["status"]) == ["COMPLETE", "COMPLETE", "PENDING"]
    assert (shared.parent / ".ledger.csv.lock").is_file() and len(list(shared.parent.glob("ledger.csv.bak-*"))) == 3


def test_submit_through_a_symlinked_ledger_records_the_row_in_the_shared_one(kaggle_env, standin, sub, tmp_path,
                                                                            capsys):
    shared = tmp_path / "shared" / "ledger.csv"
    shared.parent.mkdir()
    shared.write_text(HEADER + ROW)
    link = tmp_path / "L28" / "ledger.csv"
    link.parent.mkdir()
    link.symlink_to(shared)
    code, _, err = kit(capsys, "submit", sub, "-m", "via link", "--ledger", link, "--endpoint", standin.url)
    assert code == 0, err
    assert link.is_symlink() and list(read_ledger(shared)["message"]) == ["first", "via link"]


def full_disk_copy(src, dst, *args, **kwargs):
    """shutil.copy2 on a full disk: part of the file written, then ENOSPC."""
    import errno

    Path(dst).write_bytes(Path(src).read_bytes()[:7])
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_leaves_no_empty_backup_and_never_prunes_the_good_one(tmp_path, monkeypatch):
    """Each rewrite failing on a full disk once left a partial ledger.csv.bak-*; with space freed, the
    next rewrite kept the newest ten backups: the partial ones, and the one good backup deleted."""
    import shutil

    from kit.kaggle import LEDGER_BACKUPS, append_ledger

    ledger = tmp_path / "ledger.csv"
    ledger.write_text(HEADER + ROW)
    row = {"time": "t", "competition": "c", "file": "b.csv", "sha256": "d", "status": "FAILED", "target": "kaggle"}
    append_ledger(ledger, row)
    [good] = tmp_path.glob("ledger.csv.bak-*")
    before = ledger.read_bytes()
    copy2 = shutil.copy2
    monkeypatch.setattr(shutil, "copy2", full_disk_copy)
    for _ in range(LEDGER_BACKUPS + 2):
        with pytest.raises(KitError, match=r"ledger.csv.bak-\d+.*could not write"):
            append_ledger(ledger, row)
    assert ledger.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ledger.csv.lock", "ledger.csv", good.name]
    monkeypatch.setattr(shutil, "copy2", copy2)
    for n in range(LEDGER_BACKUPS):         # an older kit's empty backups, each newer than the good one
        (tmp_path / f"ledger.csv.bak-29991231T00000000000{n}").touch()
    append_ledger(ledger, row)
    backups = list(tmp_path.glob("ledger.csv.bak-*"))
    assert good in backups and len(backups) == 2 and all(b.read_bytes().startswith(b"time,") for b in backups)


def full_disk_savefig(self, fname, *args, **kwargs):
    """matplotlib's savefig on a full disk: a partial PNG, then PIL's OSError 28."""
    import errno

    Path(fname).write_bytes(b"\x89PNG\r\n")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_drawing_is_a_warning_for_scores_and_one_line_for_report(tmp_path, predicted,
                                                                                   monkeypatch, capsys):
    import matplotlib.figure

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full_disk_savefig)
    folder = tmp_path / "ledger"
    folder.mkdir()
    ledger = folder / "ledger.csv"
    ledger.write_text(HEADER + ROW)
    code, out, err = kit(capsys, "scores", "--ledger", ledger, "--no-refresh")
    assert code == 0 and "a.csv" in out and "wrote" not in out
    [line] = err.strip().splitlines()
    assert line.startswith("kit: ") and "could not write" in line and f"{folder / 'scores.png'}" in line
    assert sorted(p.name for p in folder.iterdir()) == ["ledger.csv"]       # no partial png, no temp file
    runs = [predicted.run("r1", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2]),
            predicted.run("r2", [1, 1, 2, 0, 2, 2], [1, 1, 2, 0])]
    png = tmp_path / "pictures" / "report.png"
    one_error(*kit(capsys, "report", *runs, "--png", png)[::2], f"{png}: could not write")
    assert list(png.parent.iterdir()) == []


# ---------------------------------------------------------------- arguments and settings refused before sending
@pytest.mark.parametrize("timeout", ["-5", "0", "nan"])
def test_a_timeout_that_is_not_positive_is_refused_before_sending(kaggle_env, sub, monkeypatch, capsys, timeout):
    never_sent(monkeypatch)
    ledger = sub.parent / "ledger.csv"
    one_error(*kit(capsys, "submit", sub, "-m", "x", "--wait", "--timeout", timeout, "--ledger", ledger)[::2],
              f"--timeout {timeout}", "nothing was sent")
    assert not ledger.exists()


def test_a_kaggle_config_dir_that_is_a_file_is_named(kaggle_env, standin, monkeypatch):
    """KAGGLE_CONFIG_DIR set to kaggle.json itself: the client looks for kaggle.json inside it, finds
    none, and would say only that there are no credentials."""
    path = kaggle_json(kaggle_env, json.dumps({"username": "u", "key": SECRET}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(path))
    assert call("list", {"competition": COMP, "refs": []}, standin.url)["submissions"] == []    # env credentials
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    with pytest.raises(KitError) as refused:
        call("list", {"competition": COMP, "refs": []}, standin.url)
    message = str(refused.value)
    assert f"KAGGLE_CONFIG_DIR={path}" in message and "not a folder" in message and SECRET not in message


@pytest.mark.slow
def test_scores_says_which_pending_rows_a_restarted_stand_in_does_not_know(kaggle_env, tmp_path, tiny_data,
                                                                           tiny_answers, capsys):
    """A stand-in started again on the same URL forgot the submissions of the one before: their rows
    stay PENDING, and `kit scores` says so (the URL spelled with a trailing slash is the same server)."""
    folder = tmp_path / "submissions"
    first = write_submission(folder, tiny_answers, tiny_data, "first")
    ledger = folder / "ledger.csv"
    with StandIn(tiny_data, tiny_answers, competition=DEFAULT_COMPETITION, pending_polls=99) as gone:
        assert kit(capsys, "submit", first, "-m", "first", "--ledger", ledger, "--endpoint", gone.url)[0] == 0
        port = gone.port
    [row] = read_ledger(ledger).to_dict("records")
    with StandIn(tiny_data, tiny_answers, competition=DEFAULT_COMPETITION, port=port) as again:
        code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", again.url + "/")
    assert code == 0, err
    assert f"local stand-in at {again.url} does not list submission(s) {row['ref']}; they stay PENDING" in err
    assert "not here" not in err                    # the same server, whatever the spelling
    assert read_ledger(ledger)["status"].tolist() == ["PENDING"]


def test_scores_name_the_file_that_holds_each_rows_bytes_now(tmp_path, capsys):
    """Two votes sent as t2.csv: the first's bytes now live only in the copy `kit ensemble` kept, so
    its row names that copy; a row whose bytes are nowhere says the name was replaced."""
    sub = tmp_path / "submissions"
    sub.mkdir()
    kept = sub / "t2.csv.old-20261206-023647"
    kept.write_text("Id,Category\na.pt,id1\n")
    (sub / "t2.csv").write_text("Id,Category\na.pt,id2\n")
    ledger = sub / "ledger.csv"
    for ref, sha, when in (("1", sha256_file(kept), "2026-12-06T02:30:00Z"),
                           ("2", sha256_file(sub / "t2.csv"), "2026-12-06T02:40:00Z"),
                           ("3", "0" * 64, "2026-12-06T02:50:00Z")):
        append_ledger(ledger, {"time": when, "competition": COMP, "file": str(sub / "t2.csv"), "sha256": sha,
                               "message": f"vote {ref}", "ref": ref, "status": "COMPLETE", "public": "0.5",
                               "private": "0.5", "target": "local stand-in"})
    other = tmp_path / "other" / "t2.csv"               # another folder's t2.csv, sent with the same ledger
    other.parent.mkdir()
    other.write_text("Id,Category\na.pt,id3\n")
    append_ledger(ledger, {"time": "2026-12-06T03:00:00Z", "competition": COMP, "file": str(other),
                           "sha256": sha256_file(other), "message": "vote 4", "ref": "4", "status": "COMPLETE",
                           "public": "0.5", "private": "0.5", "target": "local stand-in"})
    code, out, _ = kit(capsys, "scores", "--ledger", ledger, "--no-refresh")
    rows = {line.split()[-1]: line for line in out.splitlines() if "vote " in line}
    assert code == 0
    assert kept.name in rows["1"] and "t2.csv (replaced)" in rows["3"], out
    assert " t2.csv " in rows["2"] and "old-" not in rows["2"] and "replaced" not in rows["2"], out
    assert " ../other/t2.csv " in rows["4"], out            # probe 12: both read "t2.csv"


def test_scores_of_a_file_named_in_cjk_draw_without_a_font_warning(tmp_path, capsys, recwarn):
    sub = tmp_path / "submissions"
    append_ledger(sub / "ledger.csv", {"time": "2026-12-06T02:30:00Z", "competition": COMP,
                                       "file": str(sub / "投票.csv"), "sha256": "", "message": "m", "ref": "1",
                                       "status": "COMPLETE", "public": "0.5", "private": "0.5",
                                       "target": "local stand-in"})
    code, out, err = kit(capsys, "scores", "--ledger", sub / "ledger.csv", "--no-refresh")
    assert code == 0 and "投票.csv" in out and (sub / "scores.png").is_file()
    assert "Glyph" not in err and not [w for w in recwarn if "Glyph" in str(w.message)]


def test_scores_names_rows_owed_by_other_servers_when_this_one_cannot_be_asked(kaggle_env, standin, sub, capsys):
    """Probe 47 L3: the hint for PENDING rows sent to another server was said only when the server asked
    answered; asked one that cannot be reached, `kit scores` said nothing of them."""
    import socket

    ledger = sub.parent / "ledger.csv"
    assert kit(capsys, "submit", sub, "-m", "one", "--ledger", ledger, "--endpoint", standin.url)[0] == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}"          # closed again: nothing listens there
    [row] = read_ledger(ledger).to_dict("records")
    append_ledger(ledger, {**row, "ref": "77", "target": f"local stand-in at {down}"})
    code, _, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", down)
    assert code == 0 and f"could not refresh the ledger's submissions: nothing answers at {down}" in err, err
    assert "retry" not in err, err                              # probe 50 F5: said at once, not after a minute
    assert f"were sent to local stand-in at {standin.url}, not here; refreshed by `kit scores --endpoint" in err


def test_scores_lists_a_row_copied_by_hand_once_and_says_so(kaggle_env, standin, sub, capsys):
    """Probe 47 L4: a ledger row duplicated by hand was listed as two submissions, without a word."""
    ledger = sub.parent / "ledger.csv"
    assert kit(capsys, "submit", sub, "-m", "one", "--ledger", ledger, "--endpoint", standin.url, "--wait")[0] == 0
    lines = ledger.read_text().splitlines()
    ledger.write_text("\n".join([*lines, lines[-1]]) + "\n")
    ref = read_ledger(ledger).iloc[0]["ref"]
    code, out, err = kit(capsys, "scores", "--ledger", ledger, "--endpoint", standin.url)
    assert code == 0 and f"submission {ref} (local stand-in at {standin.url}) is in {ledger} 2 times" in err, err
    assert sum(" one" in line for line in out.splitlines()) == 1 and len(read_ledger(ledger)) == 2, out


def test_scores_find_a_file_sent_by_a_relative_or_odd_name_from_another_folder(kaggle_env, standin, sub, tmp_path,
                                                                                tiny_data, tiny_answers,
                                                                                monkeypatch, capsys):
    """Probe 50 F3: the ledger keeps a CSV's name as typed (relative to the folder it was sent from) and a
    name that is not UTF-8 with U+FFFD, so `kit scores` from elsewhere called both files gone while they
    were there. The ledger's index of sent CSVs holds where each was."""
    import shutil

    work, odd = tmp_path / "w1", tmp_path / os.fsdecode(b"r\xe9")
    for folder in (work, odd):
        folder.mkdir()
        shutil.copy(sub, folder / "a.csv")
        shutil.copy(sub.with_suffix(".json"), folder / "a.json")
    write_submission(odd, tiny_answers, tiny_data, "a", wrong_every=3)     # other bytes, the same name
    monkeypatch.chdir(work)
    ledger = tmp_path / "ledger.csv"
    for csv, message in (("a.csv", "relative"), (odd / "a.csv", "odd")):
        code, _, err = kit(capsys, "submit", csv, "-m", message, "--ledger", ledger, "--endpoint", standin.url)
        assert code in (0, 1), err
    monkeypatch.chdir(tmp_path / "submissions")
    code, out, _ = kit(capsys, "scores", "--ledger", ledger, "--no-refresh")
    rows = {line.split()[-1]: line for line in out.splitlines() if line.split() and line.split()[-1] in
            ("relative", "odd")}
    assert code == 0 and set(rows) == {"relative", "odd"}, out
    assert "w1/a.csv" in rows["relative"] and "gone" not in rows["relative"], out
    assert "gone" not in rows["odd"] and "a.csv" in rows["odd"], out


def test_scores_shows_a_long_message_cut_and_keeps_it_whole_in_the_ledger(tmp_path, capsys):
    """Probe 51 F8: a 3,000-character message filled the score table."""
    ledger = tmp_path / "ledger.csv"
    append_ledger(ledger, {"time": "2026-12-06T02:30:00Z", "competition": COMP, "file": "a.csv", "sha256": "0" * 64,
                           "message": "long " * 600, "ref": "1", "status": "COMPLETE", "public": "0.5",
                           "private": "0.5", "target": "local stand-in"})
    code, out, _ = kit(capsys, "scores", "--ledger", ledger, "--no-refresh")
    [row] = [line for line in out.splitlines() if "long long" in line]
    assert code == 0 and row.endswith("...") and len(row) < 250, row
    assert read_ledger(ledger)["message"].iloc[0] == "long " * 600
