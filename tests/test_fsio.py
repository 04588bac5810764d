"""Atomic folders: a folder appears whole or not at all; one another process finished first is kept."""
from __future__ import annotations

import pytest

from kit.errors import KitError
from kit.fsio import atomic_dir, read_json, write_json


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
