"""The files passed between stages: ids.json and the submission manifest load what they save, and
files written by an older kit still load (missing keys take defaults, unknown ones are ignored)."""
import json

import pytest

from kit.errors import KitError
from kit.records import PredictionIds, SubmissionManifest

IDS = {"val": ["uttr-a.pt", "uttr-b.pt"], "val_labels": [0, 1], "test": ["uttr-c.pt"], "window": 256, "hop": 128,
       "full": False, "mode": "sliding", "mode_requested": "auto", "average": "probs", "which": "best",
       "checkpoint_sha256": "ab" * 32, "data_dir": "/data/demo", "val_acc": 0.5, "val_acc_centre": 0.5,
       "val_acc_full": 1.0, "val_acc_sliding": 0.5, "val_nll_full": 0.3, "val_nll_sliding": 0.4}


def test_prediction_ids_round_trip_with_the_keys_kit_predict_writes(tmp_path):
    PredictionIds(**IDS).save(tmp_path / "ids.json")
    text = (tmp_path / "ids.json").read_text()
    assert list(json.loads(text)) == list(IDS)                       # same keys, same order
    assert PredictionIds.load(tmp_path) == PredictionIds.load(tmp_path / "ids.json") == PredictionIds(**IDS)


def test_old_ids_json_loads_with_defaults(tmp_path):
    (tmp_path / "ids.json").write_text(json.dumps({"val": [], "val_labels": [], "test": ["t"], "full": True,
                                                   "window": 256, "something_new": 1}))
    ids = PredictionIds.load(tmp_path)
    assert ids.mode is None and ids.data_dir is None and ids.val_nll_full is None
    assert ids.inference_mode == "full" and ids.settings()["mode"] == "full"


def test_unusable_ids_json_says_to_predict_again(tmp_path):
    (tmp_path / "ids.json").write_text(json.dumps({"val": [], "test": []}))
    with pytest.raises(KitError, match="lacks 'val_labels'.*kit predict"):
        PredictionIds.load(tmp_path)
    (tmp_path / "ids.json").write_text("{not json")
    with pytest.raises(KitError, match="unreadable.*kit predict"):
        PredictionIds.load(tmp_path)


def test_manifest_round_trip_omits_auto_keys_of_a_plain_vote(tmp_path):
    plain = SubmissionManifest(name="boss", vote="hard", weights=[0.5, 0.5], weights_mode="equal",
                               members=["/r/a", "/r/b"], csv="/s/boss.csv", data_dir="/data/demo", val_acc=0.9)
    plain.save(tmp_path / "boss.json")
    data = json.loads((tmp_path / "boss.json").read_text())
    assert "method" not in data and "oof_acc" not in data
    assert list(data)[:4] == ["name", "vote", "weights", "weights_mode"] and list(data)[-1] == "created"
    assert SubmissionManifest.beside(tmp_path / "boss.csv") == plain
    assert plain.description == "hard vote (equal weights)" and plain.label == "boss"

    auto = SubmissionManifest(name="a", vote="auto", method="weighted", pool="geo", folds=5, oof_acc=0.8)
    assert list(auto.to_dict())[4:9] == ["method", "pool", "folds", "oof_acc", "members"]
    assert auto.description == "weighted"


def test_old_manifest_loads_and_a_missing_one_is_none(tmp_path):
    (tmp_path / "old.json").write_text(json.dumps({"data_dir": "/d", "members": ["/r/a"], "vote": "soft",
                                                   "csv": "/s/old.csv", "retired_key": True}))
    m = SubmissionManifest.beside(tmp_path / "old.csv")
    assert m.data_dir == "/d" and m.weights_mode is None and m.table == [] and m.label == "old"
    assert SubmissionManifest.beside(tmp_path / "none.csv") is None
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(KitError, match="not a JSON object"):
        SubmissionManifest.beside(tmp_path / "bad.csv")


def test_an_ids_json_naming_no_checkpoint_kit_has_is_refused_naming_it(tmp_path):
    """Probe 32: `which: "foo"` surfaced as "checkpoint 'foo': choose ..." without the file's name."""
    for which in ("foo", 5):
        (tmp_path / "ids.json").write_text(json.dumps({**IDS, "which": which}))
        with pytest.raises(KitError, match=r"ids.json: not prediction ids kit wrote \(which: wrong type\)"):
            PredictionIds.load(tmp_path)
