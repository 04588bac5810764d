"""Probe 24's bad inputs: each one line naming the file and the problem, exit 2, nothing left behind --
values a float16 store cannot hold, a link loop, JSON and TOML nested too deeply, a bool for n_mels,
`--competition` that no Kaggle competition could be called, a bad Kaggle timing setting."""
from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch

from kit.data import FeatureStore
from kit.errors import KitError
from kit.layout import load_feature, read_layout

from conftest import kit_cli, one_error, recipe_toml, submit_args


def first_feature(data) -> str:
    return read_layout(data).train[0].path


def test_values_a_float16_store_cannot_hold_are_named_not_trained_on_as_inf(data, tmp_path):
    """1e5 is finite, so it passed every check and turned inf in the float16 store: training then
    'diverged', with advice about the learning rate and no file named."""
    name = first_feature(data)
    x = torch.load(data / name, weights_only=True)
    torch.save(torch.full_like(x, 1e5), data / name)
    with pytest.raises(KitError) as err:
        FeatureStore.open(data, "float16", cache_dir=tmp_path / "cache", progress=False)
    assert str(err.value).startswith(f"{data / name}: values up to 100000 do not fit the float16 packed store")
    assert 'data.store_dtype = "float32"' in str(err.value)
    assert not list((tmp_path / "cache").glob("store-*"))                  # no half store
    store = FeatureStore.open(data, "float32", cache_dir=tmp_path / "cache", progress=False)
    assert float(store.features.max()) == 1e5                               # float32 holds them as they are
    big = torch.zeros(x.shape, dtype=torch.float64)
    big[0, 0] = 1e300                                                       # finite, but not as float32
    torch.save(big, data / name)
    with pytest.raises(KitError, match="values up to 1e\\+300 are beyond float32's range"):
        load_feature(data / name)


def test_a_feature_file_that_links_to_itself_is_one_line(data, capsys):
    name = first_feature(data)
    (data / name).unlink()
    os.symlink(name, data / name)
    for command in ("info", "check"):
        one_error(*kit_cli(capsys, "data", command, data)[::2], name, "cannot be resolved (a symbolic link loop?")


def test_json_and_toml_nested_too_deeply_are_one_line(data, tmp_path, capsys):
    (data / "metadata.json").write_text("[" * 100000 + "]" * 100000)
    one_error(*kit_cli(capsys, "data", "info", data)[::2], "metadata.json: malformed JSON (nested too deeply")
    recipe = tmp_path / "deep.toml"
    recipe.write_text('name = "x"\nx = ' + "[" * 50000 + "]" * 50000 + "\n")
    one_error(*kit_cli(capsys, "recipe", "cost", recipe)[::2], f"{recipe}: malformed TOML (nested too deeply")


def test_n_mels_true_is_not_taken_for_one(data, capsys):
    meta = json.loads((data / "metadata.json").read_text())
    meta["n_mels"] = True
    (data / "metadata.json").write_text(json.dumps(meta))
    one_error(*kit_cli(capsys, "data", "info", data)[::2], "metadata.json: n_mels True must be a positive integer")


def test_data_check_workers_below_one_is_one_line(tiny_data, capsys):
    for n in ("-2", "0"):
        one_error(*kit_cli(capsys, "data", "check", tiny_data, "--workers", n)[::2], f"--workers {n}: at least 1")


@pytest.mark.parametrize("name", ["../x", "ML 2021", "ml2022spring-hw4/"])
def test_a_competition_no_kaggle_address_could_have_is_refused_before_anything_trains(tiny_data, tmp_path, capsys,
                                                                                     name):
    """A rehearsal's stand-in served `../x` and the ledger got its row; on real data the typo would
    show only at the end."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(recipe_toml(["m"]))
    one_error(*kit_cli(capsys, "recipe", "run", recipe, "--data", tiny_data, "--runs", tmp_path / "runs",
                       "--competition", name)[::2], f"--competition {name!r}: a Kaggle competition's name")
    assert not (tmp_path / "runs").exists()


def test_a_kit_train_refused_before_its_first_write_leaves_no_run_dir(tiny_data, tmp_path, capsys):
    out = tmp_path / "runs" / "x"
    code, _, err = kit_cli(capsys, "train", "--data", tiny_data, "--out", out, "--cache", tiny_data / "metadata.json",
                           "--set", "train.max_steps=2")
    assert code == 2 and "cannot write the packed store here" in err.splitlines()[-1], err
    assert not out.exists()                         # it held only the trainer's lock


def test_a_damaged_init_from_is_not_mended_by_fresh(tiny_data, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    line = one_error(*kit_cli(capsys, "train", "--data", tiny_data, "--out", tmp_path / "r", "--set",
                              f"train.init_from={bad}", "--set", "train.max_steps=2")[::2], str(bad))
    assert "point train.init_from at a sound checkpoint" in line and "--fresh" not in line


def test_small_lines_name_what_they_are_about(tiny_data, tmp_path, capsys):
    """A busy port names it; a member that cannot be built names the recipe; a folder for a file says so."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_error(*kit_cli(capsys, "kaggle", "serve", "--data", tiny_data, "--port", port)[::2],
                  f"cannot start the stand-in on port {port}")
    recipe = tmp_path / "heads.toml"
    recipe.write_text(recipe_toml([{"name": "m", "model.d_model": 80, "model.n_heads": 3}],
                                  budget={"quick": {"train.max_steps": 5}}))
    one_error(*kit_cli(capsys, "recipe", "cost", recipe, "--budget", "quick")[::2],
              f"{recipe}: member m: model.d_model 80")
    (tmp_path / "dir.csv").mkdir()
    one_error(*kit_cli(capsys, "validate", tmp_path / "dir.csv", "--data", tiny_data)[::2], "is a folder, not a file")
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy, ignore=shutil.ignore_patterns(".kit-cache"))
    (copy / "mapping.json").unlink()
    (copy / "mapping.json").mkdir()
    one_error(*kit_cli(capsys, "data", "info", copy)[::2], "mapping.json: a folder (expected")


@pytest.mark.parametrize("setting", ["KIT_KAGGLE_BACKOFF=nan", "KIT_KAGGLE_MAX_RETRY_AFTER=abc",
                                     "KIT_KAGGLE_RETRIES=abc"])
def test_a_bad_kaggle_timing_setting_stops_a_submission_before_it_is_sent(kaggle_env, standin, sub, capsys,
                                                                          monkeypatch, setting):
    """They were read only when a retry needed them: the submission went out under them."""
    name, value = setting.split("=")
    monkeypatch.setenv(name, value)
    one_error(*kit_cli(capsys, *submit_args(sub, standin))[::2], f"environment variable {name}={value!r}")
    assert "CreateSubmission" not in standin.calls and not (sub.parent / "ledger.csv").exists()
    one_error(*kit_cli(capsys, "scores", "--ledger", sub.parent / "ledger.csv")[::2], name)


@pytest.mark.parametrize("edit", ["swap", "missing", "not an object"])
def test_an_id2speaker_that_disagrees_with_speaker2id_is_one_line(data, capsys, edit):
    """Probe 24: kit read speaker2id alone, so a mapping.json whose halves disagreed was taken as it came."""
    path = data / "mapping.json"
    mapping = json.loads(path.read_text())
    i2s = mapping["id2speaker"]
    if edit == "swap":
        i2s["0"], i2s["1"] = i2s["1"], i2s["0"]
    elif edit == "missing":
        del i2s["1"]
    else:
        mapping["id2speaker"] = list(i2s.values())
    path.write_text(json.dumps(mapping))
    one_error(*kit_cli(capsys, "data", "info", data)[::2], str(path), "id2speaker disagrees")
    del mapping["id2speaker"]                                       # only speaker2id: as before
    path.write_text(json.dumps(mapping))
    assert read_layout(data).speakers


def test_a_kit_progress_that_is_not_0_or_1_is_one_line(tiny_data, capsys, monkeypatch):
    """Probe 24: `KIT_PROGRESS=maybe` was ignored without a word (bars shown or not by the terminal)."""
    monkeypatch.setenv("KIT_PROGRESS", "maybe")
    one_error(*kit_cli(capsys, "data", "info", tiny_data)[::2], "KIT_PROGRESS='maybe': 0")
    monkeypatch.setenv("KIT_PROGRESS", "")                          # set empty: as if unset
    assert kit_cli(capsys, "data", "info", tiny_data)[0] == 0


def test_a_synthetic_competition_whose_answer_key_is_gone_skips_its_submission_in_a_line(data, tmp_path, capsys):
    """Probe 32: the recipe trained, voted, then died with a FileNotFoundError traceback starting its
    stand-in; a marker of the wrong types was a TypeError traceback."""
    from kit.kaggle import recipe_submit
    from kit.kaggle.rehearsal import check_recipe_submissions, rehearsal_stand_in
    from kit.layout import SYNTH_MARKER, synth_marker

    from conftest import write_submission

    marker = data / SYNTH_MARKER                                     # `data`: this test's own copy
    values = json.loads(marker.read_text())
    sub = write_submission(tmp_path / "subs", Path(values["answers"]), data)
    marker.write_text(json.dumps({**values, "answers": str(tmp_path / "moved" / "answers.csv")}))
    said = []
    check_recipe_submissions(tmp_path / "subs", "sub", {"ensemble": "auto", "submit": True}, True, data,
                             log=said.append)
    assert len(said) == 1 and "names no answer key that is there" in said[0] and "skipped" in said[0]
    result = recipe_submit(sub, "m", data, submissions_dir=tmp_path / "subs")
    assert result["status"] == "SKIPPED" and str(marker) in result["reason"], result
    with pytest.raises(KitError, match="names no answer key"), rehearsal_stand_in(data):   # --launcher kaggle's
        pass
    marker.write_text(json.dumps({**values, "answers": 7}))
    one_error(*kit_cli(capsys, "kaggle", "serve", "--data", data, "--port", "0")[::2], str(marker),
              "answers 7 is not text")
    with pytest.raises(KitError, match="is not text"):
        synth_marker(data)


@pytest.mark.parametrize("how", ["env", "flag"])
def test_a_blank_cache_folder_is_one_line_not_a_folder_of_blanks(tiny_data, tmp_path, capsys, monkeypatch, how):
    """Probe 46: KIT_CACHE="   " made a folder named three blanks in the current folder, without a word."""
    monkeypatch.chdir(tmp_path)
    if how == "env":
        monkeypatch.setenv("KIT_CACHE", "   ")
        one_error(*kit_cli(capsys, "data", "info", tiny_data)[::2], "KIT_CACHE='   ': a blank folder name")
    else:
        one_error(*kit_cli(capsys, "data", "info", tiny_data, "--cache", " ")[::2], "--cache ' ': a blank folder name")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("KIT_CACHE", "")                             # set empty: as if unset
    assert kit_cli(capsys, "data", "info", tiny_data)[0] == 0
