"""kit.recipe_result: the recipe's typed result; which validation accuracy a figure is."""
from __future__ import annotations

import json

from kit.recipe_result import MemberResult, RecipeResult, VoteResult


def test_a_member_shows_its_predictions_accuracy_else_its_crops_marked():
    trained = MemberResult("a", "runs/r/a", val_acc_crop=0.71)
    assert trained.accuracy == 0.71 and trained.accuracy_text() == "0.7100 (crop)"
    trained.val_acc, trained.mode = 0.74, "full"
    assert trained.accuracy == 0.74 and trained.accuracy_text() == "0.7400"
    assert MemberResult("never", "runs/r/never").accuracy_text() == "-"


def test_the_result_is_plain_json_and_finds_members_by_name():
    result = RecipeResult("boss", "quick", "data/x", [MemberResult("a", "runs/boss/a", val_acc_crop=0.5)],
                          ensemble=VoteResult(0.8, "subs/boss.csv", "auto", weights=[1.0]))
    again = json.loads(json.dumps(result.to_dict()))
    assert again["members"][0]["val_acc_crop"] == 0.5 and again["ensemble"]["weights"] == [1.0]
    assert result.member("a").run_dir == "runs/boss/a"
