"""Atomic folders: a folder appears whole or not at all; one another process finished first is kept.
A file that cannot be written for want of space is one line, and the old file stays as it was."""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from kit.errors import KitError
from kit.fsio import atomic_dir, read_json, save_numpy, save_torch, write_bytes, write_json


def test_a_folder_appears_whole_and_replaces_an_older_one(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as folder:
        (folder / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()                   # nothing visible until the block ends
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["store"]        # no temp folder left


def test_a_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "store") as folder:
            (folder / "half.txt").write_text("half")
            raise RuntimeError("killed midway")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_another_process_finished_first_is_kept(tmp_path):
    target = tmp_path / "store"
    with atomic_dir(target, done="done.json") as folder:
        write_json(folder / "done.json", {"by": "us"})
        target.mkdir()                                               # meanwhile, another packer's store
        write_json(target / "done.json", {"by": "them"})
    assert read_json(target / "done.json") == {"by": "them"}
    assert [p.name for p in tmp_path.iterdir()] == ["store"]


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(KitError, match="cannot write the packed store here"):
        with atomic_dir(tmp_path / "file" / "store", "packed store"):
            pass


# ---------------------------------------------------------------- a full disk
def torch_cannot_write(obj, f, *args, **kwargs):
    """What torch.save does when the disk fills: part of the file, then RuntimeError."""
    with open(f, "wb") as out:
        out.write(b"PK\x03\x04 half a zip")
    raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4096 vs 4030")


def torch_cannot_close(obj, f, *args, **kwargs):
    raise RuntimeError("basic_ios::clear: iostream error")      # the disk filled as the file closed (probe 21)


@pytest.mark.parametrize("failing", [torch_cannot_write, torch_cannot_close])
def test_a_checkpoint_save_on_a_full_disk_is_one_line_and_keeps_the_old_one(tmp_path, monkeypatch, failing):
    path = tmp_path / "last.pt"
    save_torch({"step": 10}, path)
    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(KitError, match=rf"^{path}: could not write the checkpoint \(disk full\?: \d+ bytes free\)$"):
        save_torch({"step": 20}, path)
    assert torch.load(path, weights_only=True) == {"step": 10}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]              # no half-written temp


def test_a_torch_error_that_is_not_a_write_stays_itself(tmp_path, monkeypatch):
    def broken(obj, f, *args, **kwargs):
        raise RuntimeError("cannot pickle this tensor subclass")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_torch({"step": 20}, tmp_path / "last.pt")


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_file_or_array_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    text, probs = tmp_path / "summary.json", tmp_path / "test_probs.npy"
    write_bytes(text, b"old")
    save_numpy(probs, np.zeros(3))
    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(KitError, match=rf"^{text}: could not write the file \(disk full\?: \d+ bytes free\)$"):
        write_bytes(text, b"new")
    monkeypatch.setattr(np, "save", no_space)
    with pytest.raises(KitError, match=rf"^{probs}: could not write the array \(disk full"):
        save_numpy(probs, np.ones(3))
    assert text.read_bytes() == b"old" and np.load(probs).tolist() == [0, 0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json", "test_probs.npy"]


def test_a_hidden_folder_a_killed_writer_left_is_swept_and_no_other(tmp_path):
    """The writer's pid and host are in the hidden folder's name: the next atomic_dir for that path
    removes the folders of a dead process on this machine, and keeps those of a live one, of another
    machine, and of names it did not make."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    dead = tmp_path / f".store.{gone.pid}@{host}.abc123"
    live = tmp_path / f".store.{os.getpid()}@{host}.def456"
    other_host = tmp_path / f".store.{gone.pid}@elsewhere-{host}.ghi789"
    other_name = tmp_path / f".store-b.{gone.pid}@{host}.jkl012"
    for folder in (dead, live, other_host, other_name):
        (folder / "part").mkdir(parents=True)
    with atomic_dir(tmp_path / "store") as folder:
        (folder / "done.json").write_text("{}")
    assert not dead.exists()
    assert live.is_dir() and other_host.is_dir() and other_name.is_dir()
    assert (tmp_path / "store" / "done.json").is_file()


def test_a_writers_left_temps_are_removed_but_not_another_files(tmp_path):
    """Probe 33: the ledger's clean-up matched `.ledger.csv.pending.XXXX.tmp` too, another lock's file."""
    from kit.fsio import atomic_path, remove_left_temps

    mine, theirs = tmp_path / ".ledger.csv.k1ll3d.tmp", tmp_path / ".ledger.csv.pending.wr1t1ng.tmp"
    mine.write_text("half")
    theirs.write_text("being written")
    remove_left_temps(tmp_path / "ledger.csv")
    assert not mine.exists() and theirs.exists()
    with atomic_path(tmp_path / "ledger.csv") as tmp:           # the pattern a writer's own temp file has
        assert tmp.name.startswith(".ledger.csv.") and "." not in tmp.name[len(".ledger.csv."):-4]
        tmp.write_text("x")
