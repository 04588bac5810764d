"""kit.timeplan: the recipe's clock. Members are given their minutes as they start, with their own
prediction reserved; stages get theirs from what is left; a launcher's job gets its limit."""
from __future__ import annotations

import time

import pytest

from kit.errors import KitError
from kit.timeplan import AFTER_SECONDS, START_SECONDS, TimePlan, member_minutes, predict_estimates, time_limits


def test_a_member_with_a_costly_prediction_trains_less_and_leaves_the_others_their_share():
    # 4 members, 2 at a time, 10 minutes: two members one after another in each slot.
    flat = member_minutes(10.0, 0.0, [60.0] * 4, n_slots=2)
    costly_first = member_minutes(10.0, 0.0, [150.0, 30.0, 30.0, 30.0], n_slots=2)
    assert flat == pytest.approx(((600 - AFTER_SECONDS) / 2 - START_SECONDS - 60) / 60)
    # the starting member pays for its own 150 s; the one after it in its slot is reserved 30 s
    assert costly_first == pytest.approx((600 - AFTER_SECONDS - 2 * START_SECONDS - 150 - 30) / 2 / 60)
    assert costly_first < flat
    cheap_first = member_minutes(10.0, 0.0, [30.0, 150.0, 30.0, 30.0], n_slots=2)
    assert cheap_first > flat                         # the costly one is later: reserved at the average


def test_an_allowance_too_small_is_refused_up_front_and_floored_later():
    with pytest.raises(KitError, match="too little time for 3 member"):
        member_minutes(1.0, 0.0, [30.0] * 3, n_slots=1)
    assert member_minutes(1.0, 0.0, [30.0] * 3, n_slots=1, floor=True) == pytest.approx(10 / 60)


def test_the_plan_shares_members_stages_and_fine_tunes():
    plan = TimePlan(minutes=10.0, slots=1, stages=0.3, predict={"transformer": 120.0, "ecapa": 30.0},
                    began=time.time())
    assert plan.timed and plan.prediction("transformer-pl1") == 120.0 and plan.prediction("student") == 75.0
    # the members end at 70% of the time; a stage ending at 100% gets more than the members' part
    members = plan.member_share(["ecapa", "transformer"])
    stage = plan.stage_minutes(1.0, ["ecapa"])
    assert members < stage
    assert plan.sharer()(["ecapa", "transformer"]) == pytest.approx(members, rel=1e-3)
    per_member = TimePlan(per_member_minutes=2.0, stages=0.5)
    assert per_member.sharer()(["a"]) == 2.0
    assert per_member.stage_minutes(1.0, ["a"], share=0.25) == pytest.approx(1.0)   # 2 x 0.25 / 0.5
    untimed = TimePlan()
    assert not untimed.timed and untimed.sharer() is None
    with pytest.raises(KitError, match="not timed"):
        untimed.stage_minutes(1.0, ["a"])


def test_prediction_is_estimated_per_member_from_its_flops(tiny_data):
    from kit.data import FeatureStore
    from kit.recipe import load_recipe, member_config

    store = FeatureStore.open(tiny_data, progress=False)
    recipe = load_recipe("boss")
    configs = {n: member_config(recipe, n, "quick", tiny_data) for n in ("transformer", "ecapa")}
    est = predict_estimates(store, configs, on_gpu=False)
    assert set(est) == {"transformer", "ecapa"} and all(v > 0 for v in est.values())
    assert est["transformer"] != est["ecapa"]          # each member's own model, not one average
    assert predict_estimates(store, configs, on_gpu=True) == {"transformer": 0.0, "ecapa": 0.0}


def test_a_launchers_job_gets_the_recipe_time_or_its_session_less_a_margin():
    class Recipe:
        minutes = {"quick": 30.0}

    hours, inner = time_limits(Recipe(), "quick", 1, 12.0, None, None, None)
    assert hours == pytest.approx(0.75) and inner is None          # 30 min + 15 min to start
    hours, inner = time_limits(Recipe(), "full", 2, 12.0, None, None, None)
    assert hours == 12.0 and inner == pytest.approx(11.75)         # a Kaggle session, stopped 15 min early
    hours, inner = time_limits(Recipe(), "full", 2, 12.0, None, 5.0, None)
    assert hours == pytest.approx(10 / 60 + 0.25)                  # 2 members x 5 minutes


def test_the_first_stage_starts_where_the_members_end_and_takes_its_share():
    plan = TimePlan(minutes=10.0, stages=0.5, members_end=0.5)
    assert plan.stage_span(0.3) == pytest.approx((0.5, 0.8))      # pseudo 0.3 of 0.5: 60% of what follows
    kept = TimePlan(minutes=10.0, stages=0.5, members_end=0.0)     # every member kept from an earlier run
    assert kept.stage_span(0.3) == pytest.approx((0.0, 0.6))


def test_the_deadline_counts_what_the_end_needs():
    from kit.timeplan import Deadline

    deadline = Deadline(1.0, time.time(), predict={"a": 30.0, "b": 90.0})
    assert deadline.after_needs(["b"]) == AFTER_SECONDS + 90.0
    assert deadline.after_needs([]) == AFTER_SECONDS and deadline.after_needs(["unknown"]) == AFTER_SECONDS


def test_members_share_their_own_slots_and_the_stages_the_recipes():
    # one member left to train (one slot); a stage's fine-tunes train on the recipe's two slots
    plan = TimePlan(minutes=10.0, slots=1, stage_slots=2, predict={"a": 0.0, "b": 0.0}, began=time.time())
    one_at_a_time = plan.member_share(["a", "b"])
    side_by_side = plan.sharer(1.0)(["a", "b"])
    assert side_by_side == pytest.approx(2 * one_at_a_time + START_SECONDS / 60, rel=1e-3)
