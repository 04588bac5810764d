"""Large-margin fine-tuning ([after] lmft, `kit recipe run --lmft`): every member with a margin head
is fine-tuned from its checkpoint on longer crops at the full margin, and the vote is of the
fine-tuned members in their places; members with other heads are voted as they are."""
from __future__ import annotations

from pathlib import Path

import pytest

from kit.config import load_toml
from kit.errors import KitError
from kit.recipe import load_recipe
from kit.records import SubmissionManifest
from kit.rundir import RunDir

from conftest import recipe_toml

MARGIN = {"name": "m", "model.head": "aamsoftmax", "model.am_m": 0.2, "model.margin_warmup_steps": 10,
          "data.segment_len": 40}
LMFT = recipe_toml([MARGIN, {"name": "plain", "train.seed": 1}], name="tinylm",
                   base={"train": {"max_steps": 36, "eval_every": 12, "lr": 1e-3}},
                   after={"predict": True, "which": "last", "ensemble": "auto", "lmft": {"share": 0.5}})


@pytest.mark.slow
def test_recipe_lmft_fine_tunes_the_margin_members_on_longer_crops_at_the_full_margin(tiny_data, tmp_path):
    from kit.zoo import run_recipe

    recipe = tmp_path / "tinylm.toml"
    recipe.write_text(LMFT)
    runs, subs = tmp_path / "runs", tmp_path / "subs"
    logs: list[str] = []
    result = run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(runs), workers=1, progress=False,
                        submissions=subs, log=logs.append)
    root = runs / "tinylm"
    tuned = RunDir.of(root / "m-lm")
    cfg = load_toml(tuned.path / "config.toml")
    assert cfg["data"]["segment_len"] == 120                               # 3 x 40
    assert cfg["model"]["am_m"] == 0.5 and cfg["model"]["margin_warmup_steps"] == 0
    assert cfg["train"]["lr"] == pytest.approx(1e-4)                      # lr_scale 0.1
    assert cfg["train"]["init_from"] == str((root / "m" / "last.pt").resolve())
    assert tuned.summary()["step"] == 6                                    # 36 x 0.5 / 3: the compute of half
    assert not (root / "plain-lm").exists()                                # a linear head: voted as it is
    assert result.lmft == [str(root / "m-lm")]
    manifest = SubmissionManifest.load(subs / "tinylm.json")
    assert [Path(m).name for m in manifest.members] == ["m-lm", "plain"]
    assert any(line.startswith("lmft: m fine-tuned on 3x longer crops at margin 0.5") for line in logs)
    summary = tuned.summary()                                              # a re-run keeps it
    again = run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(runs), workers=1, progress=False,
                       submissions=subs)
    assert tuned.summary() == summary and again.lmft == result.lmft


def test_lmft_without_a_margin_member_says_so_and_votes_the_members(tiny_data, tmp_path):
    from kit.rounds import LMFT_DEFAULTS, lmft_stage
    from kit.timeplan import TimePlan

    logs: list[str] = []

    class Host:                     # a recipe run whose members have linear heads
        root, plan = tmp_path, TimePlan()
        log = staticmethod(logs.append)

        def config(self, name):
            from kit.config import RunConfig
            return RunConfig()

    from kit.recipe_result import RecipeResult

    dirs = [tmp_path / "a", tmp_path / "b"]
    after = {"lmft": dict(LMFT_DEFAULTS)}
    result = RecipeResult("tiny", "quick", str(tiny_data))
    assert lmft_stage(Host(), after, ["a", "b"], dirs, result) == dirs and result.lmft == []
    assert logs == ["lmft: no member has a margin head (AM-/AAM-Softmax): nothing to fine-tune, the vote goes on"]


@pytest.mark.parametrize("line,message", [
    ("lmft.segment_scale = 0.5", "lmft.segment_scale 0.5: at least 1"),
    ("lmft.margin = -1", "lmft.margin -1: a positive number"),
    ("lmft.crops = 2", "unknown key(s) crops"),
])
def test_a_bad_lmft_table_is_refused_naming_the_file(tmp_path, line, message):
    path = tmp_path / "r.toml"
    path.write_text(LMFT.replace("lmft.share = 0.5", line))
    assert line in path.read_text()
    with pytest.raises(KitError, match=str(path).replace(".", r"\.")) as err:
        load_recipe(path)
    assert message in str(err.value)
