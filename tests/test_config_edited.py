"""A run is predicted as it trained: a config.toml edited since in a setting of the run's identity
(identity.json's "config") is refused, even where the weights would still load (n_heads and
feature_norm change no parameter's shape); the settings outside the identity ([infer],
train.minutes, which a recipe rewrites on its re-runs) stay free to change."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from kit.data import FeatureStore
from kit.errors import KitError
from kit.train import load_model

from conftest import kit_cli, one_error, train_tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    # the cache goes outside tiny_data, which is shared and read-only
    store = FeatureStore.open(tiny_data, dtype="float32", cache_dir=tmp_path_factory.mktemp("cache"),
                              progress=False)
    return train_tiny_run(store, tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture
def run(trained, tmp_path):
    """A private copy of the trained run, free to edit."""
    return shutil.copytree(trained, tmp_path / "run")


def edit(run, section: str, key: str, value: str) -> None:
    """Set `key = value` (value as TOML) in config.toml's [section], as a user's editor would."""
    path = run / "config.toml"
    text = path.read_text()
    table = re.search(rf"^\[{section}\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    body, count = re.subn(rf"^{key} = .*$", f"{key} = {value}", table.group(1), flags=re.M)
    assert count == 1, (section, key)
    path.write_text(text[:table.start(1)] + body + text[table.end(1):])


@pytest.mark.parametrize("key, value, phrase", [("n_heads", "4", "model.n_heads 2 -> 4"),
                                                ("feature_norm", '"cmn"', "model.feature_norm 'none' -> 'cmn'")])
def test_predict_refuses_a_model_setting_edited_since_the_run_trained(run, capsys, key, value, phrase):
    edit(run, "model", key, value)
    code, _, err = kit_cli(capsys, "predict", run, "--no-progress")
    one_error(code, err, str(run / "config.toml"), phrase, "identity.json", "put config.toml back", "--fresh")
    assert not (run / "ids.json").exists() and not (run / "test_probs.npy").exists()
    with pytest.raises(KitError, match=re.escape(phrase)):          # what a recipe's prediction loads by
        load_model(run, "best")


def test_infer_and_time_budget_edits_still_predict(run, capsys):
    edit(run, "infer", "mode", '"full"')                # what a recipe's [infer] writes over a trained run
    edit(run, "infer", "window", "48")
    edit(run, "train", "minutes", "3.5")               # a recipe's --minutes, recomputed on each re-run
    edit(run, "model", "dropout", "0.3")               # off at prediction (probe 32: it was refused)
    code, _, err = kit_cli(capsys, "predict", run, "--no-progress")
    assert code == 0, err
    assert json.loads((run / "ids.json").read_text())["mode"] == "full"


def test_a_run_without_identity_json_still_predicts(run, capsys):
    (run / "identity.json").unlink()                    # a run of an older kit: nothing to compare with
    assert kit_cli(capsys, "predict", run, "--no-progress")[0] == 0


def test_a_damaged_identity_json_names_a_way_to_predict_that_keeps_the_weights(run, capsys):
    """Probe 32: the only advice was --fresh (a retrain), though a missing identity.json predicts."""
    (run / "identity.json").write_text("{")
    code, _, err = kit_cli(capsys, "predict", run, "--no-progress")
    one_error(code, err, str(run / "identity.json"), "unreadable run identity", "move its identity.json aside")
