"""kit.cost and `kit recipe cost`: FLOPs counted on the members' real shapes, projected to Kaggle's
GPUs and checked against a Kaggle week."""
from __future__ import annotations

import pytest

from kit.config import RunConfig
from kit.cost import (
    GPUS,
    KAGGLE_WEEK_HOURS,
    MemberCost,
    fits_a_week,
    kaggle_hours,
    projection_line,
    step_gflop,
    verdict,
)
from kit.recipe import load_recipe
from kit.rounds import PSEUDO_DEFAULTS, parse_stage

from conftest import kit_cli, one_error

P100, T4X2 = GPUS[0], GPUS[1]
FULL = {"full": {"train.max_steps": 1000, "train.eval_every": 100}}


def tiny_cfg(batch: int, encoder: str = "transformer") -> RunConfig:
    cfg = RunConfig()
    cfg.model.encoder, cfg.model.d_model, cfg.model.ffn_dim, cfg.model.n_classes = encoder, 32, 64, 10
    cfg.model.channels = 8
    cfg.train.batch_size, cfg.data.segment_len = batch, 40
    return cfg


@pytest.mark.parametrize("encoder", ["transformer", "resnet"])
def test_a_step_costs_in_proportion_to_its_batch(encoder):
    one, four = step_gflop(tiny_cfg(8, encoder)), step_gflop(tiny_cfg(32, encoder))
    assert one > 0 and four == pytest.approx(4 * one, rel=1e-6)


def test_the_transformer_is_counted_in_prediction_too():
    """In eval mode nn.TransformerEncoder takes a fused path the FLOP counter cannot see: counted
    that way, a transformer's prediction cost 40x less than its arithmetic."""
    from kit.bench.prediction import forward_flops
    from kit.models import build_model, count_params

    cfg = tiny_cfg(8)
    net = build_model(cfg.model).eval()
    frames = 256
    assert forward_flops(net, cfg.model.n_mels)(frames) >= 2 * count_params(net.encoder) * frames * 0.9
    assert not net.training


def cost(name: str, hours_on_p100: float) -> MemberCost:
    """A member whose projection on a P100 is `hours_on_p100`."""
    pflop = hours_on_p100 * 3600 * P100.tflops * 1e12 * P100.utilisation / 1e15
    return MemberCost(name, 1, 64, 200, 1000, pflop * 1e6 / 1000, 0.0, 0, 0.0)


def test_kaggle_hours_share_a_session_between_its_gpus():
    costs = [cost("a", 6), cost("b", 5), cost("c", 4)]
    assert kaggle_hours(costs, P100) == pytest.approx(15)               # one GPU: one after another
    per = [c.hours(T4X2) for c in costs]
    assert kaggle_hours(costs, T4X2) == pytest.approx(max(per[0], per[1] + per[2]))     # two at once


def test_a_week_fits_when_some_kaggle_gpu_holds_it():
    assert fits_a_week([cost("a", 20)])                               # a P100 week holds 20 h
    assert fits_a_week([cost("a", 40), cost("b", 1)])                 # T4 x2 runs them side by side
    assert not fits_a_week([cost("a", 200)])


def test_the_verdict_says_whether_a_week_holds_it_and_a_rerun():
    assert "with room for a re-run" in verdict([cost("a", 10)], P100)
    assert "no room for a re-run" in verdict([cost("a", 20)], P100)
    assert "does NOT fit" in verdict([cost("a", KAGGLE_WEEK_HOURS + 1)], P100)
    assert "needs 2 sessions" in verdict([cost("a", 13)], P100)


@pytest.mark.slow
def test_the_boss_full_budget_fits_a_week_with_room_for_a_rerun():
    """What the recipe's comment promises (README, "What it costs")."""
    from kit.cost import recipe_costs

    costs = recipe_costs(load_recipe("boss"), "full")
    assert [c.name for c in costs] == ["transformer", "conformer", "ecapa", "resnet", "resnet-b"]
    for gpu in (P100, T4X2):
        assert kaggle_hours(costs, gpu) <= KAGGLE_WEEK_HOURS / 2, gpu.key


def test_recipe_cost_prints_the_table(tiny_recipe, capsys):
    recipe = tiny_recipe("a", {"name": "b", "model.pooling": "sap"}, budget=FULL)
    code, out, err = kit_cli(capsys, "recipe", "cost", recipe)
    assert code == 0, err
    assert "| a |" in out and "| b |" in out and "1,000" in out
    assert "Kaggle P100" in out and "assumed" in out
    code, _, err = kit_cli(capsys, "recipe", "cost", recipe, "--utilisation", 2)
    one_error(code, err, "--utilisation 2")
    timed = tiny_recipe("a", budget={"quick": {"train.minutes": 2.0}, **FULL}, file="timed.toml")
    code, _, err = kit_cli(capsys, "recipe", "cost", timed, "--budget", "quick")
    one_error(code, err, "the quick budget is counted in wall-clock minutes")


def test_a_launcher_line_only_for_step_budgets(tiny_recipe):
    timed = load_recipe(tiny_recipe("a", budget={"quick": {"train.minutes": 2.0}, **FULL}))
    assert projection_line(timed, "quick") is None
    whole_recipe_timed = load_recipe(tiny_recipe("a", budget={"quick": {"minutes": 3}, **FULL}, file="r.toml"))
    assert projection_line(whole_recipe_timed, "quick") is None        # the recipe's minutes, as boss's quick
    line = projection_line(timed, "full")
    assert line.startswith("projected cost of a (full budget)") and "p100" in line and "t4x2" in line


def test_a_top_fraction_alone_replaces_the_default_precision():
    opts = parse_stage("r.toml", "pseudo", {"top_fraction": 0.5}, PSEUDO_DEFAULTS)
    assert opts["precision"] is None and opts["top_fraction"] == 0.5
    assert parse_stage("r.toml", "pseudo", {}, PSEUDO_DEFAULTS)["precision"] == 0.9


def test_a_measured_step_rate_turns_the_counted_flops_into_hours(tiny_recipe, capsys):
    from kit.cost import StepRate, measure_step, measured_table

    rate = measure_step(tiny_cfg(4), steps=2, warmup=1)
    assert rate.device == "cpu" and rate.seconds_per_step > 0
    cost = MemberCost("a", 1, 4, 40, steps=3600, step_gflop=2.0, eval_gflop=0.0, evals=0, predict_gflop=0.0)
    table = measured_table([cost], [StepRate("cpu", "no", 0.5)])
    # 2 GFLOP in 0.5 s = 4 GFLOP/s; 3,600 steps x 0.5 s = half an hour.
    assert "| a | 500.0 | 0.00 | 0.50 |" in table and "fp32" in table
    recipe = tiny_recipe("a", budget=FULL)
    code, out, err = kit_cli(capsys, "recipe", "cost", recipe, "--measure", 1)
    assert code == 0, err
    assert "timing 1 training steps of a" in err and "| a | " in out.split("Measured on cpu")[1]
    code, _, err = kit_cli(capsys, "recipe", "cost", recipe, "--measure", -1)
    one_error(code, err, "--measure -1")


def test_an_audition_costs_its_cut_for_every_candidate_and_the_rest_for_those_kept():
    from kit.cost import audition_pieces

    def member(name: str, hours: float) -> MemberCost:       # 10 evaluations of 1 PFLOP, a prediction of 0.5
        return MemberCost(name, 1, 64, 200, 1000, cost(name, hours).step_gflop, 1e6, 10, 5e5)

    costs = [member("a", 6), member("b", 3), member("c", 1)]
    whole = sum(c.total_pflop for c in costs)
    # all kept: the cut and the rest add up to each member's whole run (steps, evaluations, one prediction)
    assert sum(p.total_pflop for p in audition_pieces(costs, 3, 0.3, dearest=True)) == pytest.approx(whole)
    low, high = (sum(p.total_pflop for p in audition_pieces(costs, 1, 0.3, d)) for d in (False, True))
    train = {c.name: c.steps * c.step_gflop / 1e6 for c in costs}
    # every candidate's 300 steps and 3 evaluations, then the kept one's 700 steps, 7 evaluations and prediction
    assert high == pytest.approx(0.3 * sum(train.values()) + 3 * 3 + 0.7 * train["a"] + 7 + 0.5)
    assert low == pytest.approx(0.3 * sum(train.values()) + 3 * 3 + 0.7 * train["c"] + 7 + 0.5)
    assert low < high < whole
    # what `kit recipe cost --audition` prints: at most `keep` go on, and `within` may keep as few as one
    # (probe 42 D5: the low end assumed `keep` survivors, the cheapest two here)
    from kit.cost import audition_lines

    spec = {"keep": 2, "rung": 0.3, "twins": {}}
    line = audition_lines(costs, costs, spec)[1]
    printed = float(line.split(": ")[1].split(" ..")[0])
    fewest = kaggle_hours(audition_pieces(costs, 1, 0.3, False), P100)
    assert printed == pytest.approx(fewest, abs=0.05)
    assert fewest < kaggle_hours(audition_pieces(costs, 2, 0.3, False), P100) - 0.1
    # a twin (b2: another seed of b) trains its whole schedule when it goes on: counted at the high end
    twin = member("b2", 3)
    high = audition_lines([*costs, twin], costs, {**spec, "twins": {"b2": "b"}})[1]
    assert float(high.split(".. ")[1].split(" h")[0]) == pytest.approx(
        kaggle_hours(audition_pieces(costs, 2, 0.3, True) + [twin], P100), abs=0.05)
    assert float(high.split(": ")[1].split(" ..")[0]) == pytest.approx(fewest, abs=0.05)


def test_recipe_cost_audition_prints_the_range_beside_the_fixed_members(tiny_recipe, capsys):
    recipe = tiny_recipe("a", {"name": "b", "model.pooling": "sap"}, {"name": "c", "candidate": True}, budget=FULL)
    recipe.write_text(recipe.read_text() + "[audition]\nkeep = 1\n")
    code, out, err = kit_cli(capsys, "recipe", "cost", recipe, "--audition")
    assert code == 0, err
    assert "| c |" in out and "3 candidates to 30% of their steps, at most the best 1 on" in out
    assert "fixed members (2)" in out and out.count("h of quota; fixed members") == 2
    code, out, _ = kit_cli(capsys, "recipe", "cost", recipe)
    assert "| c |" not in out and "audition" not in out


def test_recipe_cost_audition_counts_fixed_members_that_are_not_candidates(tiny_recipe, capsys):
    """Probe 17: a fixed member outside the audition (`audition = false`) was left out: "fixed members
    (0) ... 0.0 h" while --no-audition would train it."""
    recipe = tiny_recipe({"name": "fixed", "audition": False, "model.d_model": 256, "model.n_layers": 4,
                          "model.ffn_dim": 1024, "data.segment_len": 400, "train.batch_size": 64,
                          "budget.full.train.max_steps": 200000},
                         {"name": "c1", "candidate": True}, {"name": "c2", "candidate": True}, budget=FULL)
    recipe.write_text(recipe.read_text() + "[audition]\nkeep = 1\n")
    code, out, err = kit_cli(capsys, "recipe", "cost", recipe, "--audition")
    assert code == 0, err
    assert "2 candidates to 30%" in out and "the fixed members (1) beside it" in out
    fixed_hours = [float(line.split("fixed members ")[1].split(" h")[0]) for line in out.splitlines()
                   if "h of quota; fixed members" in line]
    code, plain, _ = kit_cli(capsys, "recipe", "cost", recipe)          # what --no-audition trains: fixed
    assert "| fixed |" in plain and "| c1 |" not in plain
    assert len(fixed_hours) == 2 and all(h > 0 for h in fixed_hours), out
