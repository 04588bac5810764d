"""What a vote or a picture is written over: never a file of another kind (the ledger, a submitted CSV,
a checkpoint, a run's or the competition's own files), and a replaced vote leaves no picture of the
old one behind. Hand-made predicted runs (conftest: predicted)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kit.ensemble import ensemble_runs
from kit.errors import KitError
from kit.report import report_runs

from conftest import kit_cli, one_error


@pytest.fixture
def runs(predicted):
    return [predicted.run("r1", [0, 1, 2, 0, 1, 0], [0, 1, 2, 2]),
            predicted.run("r2", [0, 1, 2, 1, 1, 2], [0, 1, 1, 2])]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name,content", [
    ("ledger.csv", b"time,competition,file,sha256\n2026-01-01,c,a.csv,00\n"),
    ("best.pt", b"PK\x03\x04 not a picture"),
    ("picture.png", b"Id,Category\nu,s\n"),          # a .png name that holds no PNG
])
def test_report_never_draws_over_a_file_that_is_not_a_picture(tmp_path, capsys, runs, name, content):
    target = tmp_path / name
    target.write_bytes(content)
    err = one_error(*kit_cli(capsys, "report", *runs, "--png", target)[::2], str(target))
    assert "png" in err.lower() or "picture" in err
    assert target.read_bytes() == content


def test_report_draws_over_its_own_picture(tmp_path, runs):
    png = tmp_path / "r.png"
    report_runs(runs, png=png)
    first = png.read_bytes()
    assert first.startswith(b"\x89PNG")
    report_runs(runs, png=png)                      # the same picture again: allowed
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("mark", ["summary.json", "metadata.json", "config.toml", ".recipe.lock", ".kit-cache"])
def test_a_vote_is_never_written_into_a_run_dir_or_a_data_dir(tmp_path, runs, mark):
    """Probe 58 F6: a recipe's folder (its .recipe.lock) and the packed store's cache were taken as --out."""
    folder = tmp_path / "somewhere"
    if mark == ".kit-cache":
        folder = tmp_path / ".kit-cache" / "store-x"
    folder.mkdir(parents=True)
    if mark != ".kit-cache":
        (folder / mark).write_text("{}")
    (folder / "metrics.csv").write_text("step,loss\n1,2.0\n")
    with pytest.raises(KitError, match=f"a run dir, a recipe's folder, a data dir or its cache \\(it holds {mark}"):
        ensemble_runs(runs, vote="hard", name="metrics", out_dir=folder)
    assert (folder / "metrics.csv").read_text() == "step,loss\n1,2.0\n"
    assert not (folder / "metrics.json").exists()


def test_a_vote_never_replaces_a_csv_or_json_of_another_kind(tmp_path, runs):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(KitError, match="not a submission"):
        ensemble_runs(runs, vote="hard", name="notes", out_dir=subs)
    (subs / "keep.json").write_text('{"mine": true}')
    with pytest.raises(KitError, match="not a vote's manifest"):
        ensemble_runs(runs, vote="hard", name="keep", out_dir=subs)
    assert (subs / "notes.csv").read_text() == "a,b\n1,2\n" and (subs / "keep.json").read_text() == '{"mine": true}'
    ensemble_runs(runs, vote="hard", name="vote", out_dir=subs)       # its own pair is replaced, as always
    before = _digest(subs / "vote.json")
    ensemble_runs(runs[:1], vote="hard", name="vote", out_dir=subs)
    assert _digest(subs / "vote.json") != before


def test_a_replaced_vote_takes_its_old_picture_with_it(tmp_path, runs):
    subs = tmp_path / "subs"
    ens = ensemble_runs(runs, vote="hard", name="e1", out_dir=subs)
    report_runs(runs, ensemble_result=ens)
    png = subs / "e1_report.png"
    assert png.is_file()
    ensemble_runs(runs[:1], vote="hard", name="e1", out_dir=subs)     # another vote, never submitted
    assert not png.exists()
    ensemble_runs(runs[:1], vote="hard", name="e1", out_dir=subs)     # the same vote again: nothing changes
    assert (subs / "e1.csv").is_file()


def test_a_submitted_vote_keeps_its_picture_beside_the_kept_pair(tmp_path, runs):
    from kit.submission import note_submitted

    subs = tmp_path / "subs"
    ens = ensemble_runs(runs, vote="hard", name="e1", out_dir=subs)
    report_runs(runs, ensemble_result=ens)
    picture = (subs / "e1_report.png").read_bytes()
    note_submitted(subs / "e1.csv", _digest(subs / "e1.csv"), "1", subs / "ledger.csv", "2026-12-06T20:00:00")
    kept = ensemble_runs(runs[:1], vote="hard", name="e1", out_dir=subs)["kept"]
    old_csv = next(p for p in map(Path, kept) if p.name.startswith("e1.csv.old-"))
    assert (subs / f"{old_csv.name}_report.png").read_bytes() == picture
    assert not (subs / "e1_report.png").exists()
