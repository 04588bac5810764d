"""Unpacking a re-downloaded competition: changed files are replaced, and the data dir reported
is the one the zip produced, not an older one already in the folder.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from kit.kaggle import extract_zip, find_data_dir
from kit.layout import LAYOUT_FILES


def make_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def test_redownload_replaces_a_changed_file_of_the_same_size(tmp_path):
    old = make_zip(tmp_path / "old.zip", {"Dataset/mapping.json": '{"id00001": 0, "id00002": 1}'})
    new = make_zip(tmp_path / "new.zip", {"Dataset/mapping.json": '{"id00002": 0, "id00001": 1}'})
    out = tmp_path / "out"
    assert extract_zip(old, out) == 1
    assert extract_zip(new, out) == 1
    assert (out / "Dataset/mapping.json").read_text() == '{"id00002": 0, "id00001": 1}'
    assert extract_zip(new, out) == 0                       # same contents: resume skips it


def test_data_dir_is_the_one_the_zip_unpacked(tmp_path):
    out = tmp_path / "out"
    (out / "Aold").mkdir(parents=True)
    for name in LAYOUT_FILES:
        (out / "Aold" / name).write_text("{}")
    zip_path = make_zip(tmp_path / "comp.zip", {f"Dataset/{name}": "{}" for name in LAYOUT_FILES})
    extract_zip(zip_path, out)
    with zipfile.ZipFile(zip_path) as zf:
        members = zf.namelist()
    assert find_data_dir(out) == out / "Aold"               # without the zip's names: the old rule
    assert find_data_dir(out, members) == out / "Dataset"
