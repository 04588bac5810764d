"""`kit bench --accuracy`: a recipe against the course sample given the same wall time, on a
synthetic competition whose answer key scores the test set (public and private halves).

The recipe runs first within its allowance; the course sample then trains for the wall time the
recipe actually took. Validation is what kit tunes on; the answer key is read only to report.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kit import course as course_sample
from kit.bench import ensure_synth
from kit.errors import KitError
from kit.fsio import write_csv, write_json, write_text
from kit.layout import read_layout
from kit.pseudo import true_precision
from kit.recipe import resolve_recipe
from kit.recipe_result import RecipeResult
from kit.records import PredictionIds
from kit.rounds import STAGES
from kit.rundir import RunDir
from kit.submission import score_submission
from kit.synth import answers_path
from kit.zoo import run_recipe


def _member_csv(run_dir: Path, out: Path) -> Path:
    """A member's own submission: argmax of its test probabilities."""
    ids = PredictionIds.load(run_dir)
    if ids.data_dir is None:                # only ids.json from before kit recorded it
        raise KitError(f"{run_dir}: ids.json names no data dir; run `kit predict {run_dir}` again")
    probs = np.load(run_dir / "test_probs.npy")
    speakers = read_layout(ids.data_dir).speakers
    write_csv(out, pd.DataFrame({"Id": ids.test, "Category": [speakers[k] for k in probs.argmax(1)]}))
    return out


def _scores(csv: Path, key: Path) -> dict:
    s = score_submission(csv, key)
    return {"public": s["public"]["acc"], "private": s["private"]["acc"], "overall": s["overall"]["acc"],
            "n": s["overall"]["n"]}


def run_accuracy_bench(recipe: str = "boss", preset: str = "hard", data: str | None = None,
                       minutes: float | None = None, per_member_minutes: float | None = None,
                       out: str | Path = ".", runs: str | Path = "runs-bench", cache: str | Path = "data",
                       course: bool = True, course_minutes: float | None = None, stages: str | bool | None = None,
                       stage_minutes: float | None = None, same_budget: bool = False, log=lambda m: None,
                       audition: bool | None = None, workers: int | None = None) -> dict:
    """Run `recipe` (its quick budget, or `minutes` of wall time for the whole recipe) on a fresh
    runs dir, score every member and the ensemble with the answer key, then train the course
    sample for the same wall time (or `course_minutes`) and score it. stages ("pseudo", "distill",
    "pseudo,distill"; True: both): then run the recipe again with those stages on: on the same runs
    dir, its finished members kept and the stages given the recipe's time again (extra time, as a
    user adding them to a finished run would), or with `same_budget` from scratch in the same
    minutes as the plain run (members and stages share them); score those too, with the
    pseudo-labels' true precision next to the estimate; stage_minutes: that second run's wall time
    (default: the recipe's). audition: the recipe's audition on or off (None: as the recipe says).
    workers: members trained at once (kit.zoo.run_recipe's; 1: here, one after another).
    Writes bench_accuracy.json/.md into `out`."""
    data_dir = Path(data) if data else ensure_synth(preset, Path(cache), log)
    key = answers_path(data_dir)
    if not key.is_file():
        raise KitError(f"{data_dir}: no answer key at {key}; the accuracy bench needs a synthetic data dir")
    out = Path(out)
    runs = Path(runs) / time.strftime("%Y%m%d-%H%M%S")        # never reuse members of another run
    recipe_path = resolve_recipe(recipe)
    args = dict(data=str(data_dir), budget="quick", progress=False, log=log, minutes=minutes,
                per_member_minutes=per_member_minutes, submit=False, audition=audition, workers=workers)
    which = stage_set(stages)
    res, rows, wall = _recipe_rows(recipe_path, runs, key, args)
    result = {"recipe": res.recipe, "data": str(data_dir), "wall_minutes": wall / 60, "rows": rows,
              "time": time.strftime("%Y-%m-%d %H:%M:%S"),
              "audition": res.audition.lines() if res.audition is not None else None}
    if which:
        names = " and ".join(which)
        if same_budget:
            log(f"the recipe again from scratch with {names}, in the same minutes")
            staged_args, staged_runs = args, runs.with_name(runs.name + "-stages")
        else:
            log(f"the same run again with {names} (members kept)")
            staged_args = {**args, "minutes": stage_minutes or minutes, "per_member_minutes": None}
            staged_runs = runs
        staged, staged_rows, staged_wall = _recipe_rows(recipe_path, staged_runs, key, staged_args, which, same_budget)
        rows += staged_rows
        result.update(stages=list(which), stages_same_budget=same_budget, stages_wall_minutes=staged_wall / 60,
                      pseudo=_pseudo_precision(staged, key))
    if course:
        minutes = course_minutes or wall / 60
        log(f"course sample: training for {minutes:.1f} min (the recipe took {wall / 60:.1f} min)")
        c = course_sample.train_for(data_dir, minutes, log=log)
        csv = course_sample.write_submission(c["model"], c["layout"], runs / "course_sample.csv")
        rows.append({"name": "course sample (same wall time)", "kind": "baseline", "val_acc": c["valid_acc"],
                     "minutes": c["seconds"] / 60, **_scores(csv, key)})
    result.update(_verdicts(rows))
    write_json(out / "bench_accuracy.json", result)
    write_text(out / "bench_accuracy.md", accuracy_markdown(result))
    return result


def stage_set(stages) -> tuple[str, ...]:
    """--stages: None/False (none), True (pseudo and distill), or a list of lmft, pseudo, refit, distill."""
    if not stages:
        return ()
    if stages is True:
        return ("pseudo", "distill")
    parts = [p.strip() for p in str(stages).split(",") if p.strip()]
    if not parts or set(parts) - set(STAGES):
        raise KitError(f"--stages {stages!r}: give some of {', '.join(STAGES)}, e.g. pseudo,distill")
    return tuple(k for k in STAGES if k in parts)


def _recipe_rows(recipe_path: Path, runs: Path, key: Path, args: dict, stages: tuple[str, ...] = (),
                 same_budget: bool = False):
    """Run the recipe into `runs` (with `stages` on) and score its members, ensemble(s) and
    student: (result, rows, wall). The members of a run with stages are scored when they were
    trained in it (same_budget); kept ones were scored before."""
    began = time.time()
    res = run_recipe(recipe_path, runs=str(runs), submissions=runs, pseudo="pseudo" in stages,
                     distill="distill" in stages, refit="refit" in stages, lmft="lmft" in stages, **args)
    wall = time.time() - began
    tag = f" [{'same budget: ' if same_budget else '+'}{', '.join(stages)}]" if stages else ""
    rows = []
    for m in (res.members if same_budget or not stages else []):
        run_dir = Path(m.run_dir)
        csv = _member_csv(run_dir, run_dir / "member_test.csv")
        rows.append({"name": m.name + tag, "kind": "member" if not stages else "staged member",
                     "val_acc": m.accuracy, "minutes": m.minutes, **_scores(csv, key)})
    for d in res.lmft + (res.rounds[-1].fine_tuned if res.rounds else []) + res.refits:
        run_dir, refit = Path(d), d in res.refits       # a refit trained on validation: no held-out figure
        csv = _member_csv(run_dir, run_dir / "member_test.csv")
        rows.append({"name": run_dir.name, "kind": "refit member" if refit else "fine-tuned member",
                     "val_acc": None if refit else PredictionIds.load(run_dir).val_acc,
                     "minutes": _minutes(run_dir), **_scores(csv, key)})
    if res.vote0 is not None and (same_budget or not stages):
        rows.append({"name": f"vote before pseudo-labelling{tag}", "kind": "vote0",
                     "val_acc": res.vote0.val_acc_oof, "minutes": wall / 60, **_scores(Path(res.vote0.csv), key)})
    if res.before_refit is not None:
        rows.append({"name": f"vote before the refit{tag}", "kind": "before refit", "val_acc":
                     res.before_refit.val_acc_oof, "minutes": wall / 60, **_scores(Path(res.before_refit.csv), key)})
    ens = res.ensemble
    if ens is not None:
        rows.append({"name": f"ensemble ({ens.method or ens.vote}){tag}",
                     "kind": "ensemble" if not stages else "staged ensemble",
                     "val_acc": ens.val_acc_oof if ens.val_acc_oof is not None else ens.val_acc,
                     "minutes": wall / 60, **_scores(Path(ens.csv), key)})
    if res.student is not None and res.student.csv:
        rows.append({"name": f"distilled student{tag}", "kind": "student", "val_acc": res.student.val_acc,
                     "minutes": wall / 60, **_scores(Path(res.student.csv), key)})
    return res, rows, wall


def _minutes(run_dir: Path) -> float:
    return (RunDir(Path(run_dir)).summary() or {}).get("seconds", 0.0) / 60


def _pseudo_precision(res: RecipeResult, key: Path) -> list[dict]:
    """Each round's pseudo-labels: count, estimated precision and the true one (answer key)."""
    return [{"round": r.round, "count": r.count, "estimated_precision": r.estimated_precision,
             "true_precision": true_precision(r.pseudo_labels, key)} for r in res.rounds]


def _verdicts(rows: list[dict]) -> dict:
    members = [r for r in rows if r["kind"] == "member"]
    ens = next((r for r in rows if r["kind"] == "ensemble"), None)
    base = next((r for r in rows if r["kind"] == "baseline"), None)
    out = {}
    if ens and members:
        mean = lambda r: (r["public"] + r["private"]) / 2                      # noqa: E731
        best = max(members, key=mean)
        out["gain_over_best_member"] = mean(ens) - mean(best)
        out["best_member"] = best["name"]
    if ens and base:
        out["private_over_course"] = ens["private"] - base["private"]
    staged = next((r for r in rows if r["kind"] == "staged ensemble"), None)
    if ens and staged:
        out["pseudo_private_gain"] = staged["private"] - ens["private"]
    student = next((r for r in rows if r["kind"] == "student"), None)
    if student and staged and members:
        best = max(members, key=lambda r: r["private"])
        out["student_vs_ensemble_private"] = student["private"] - staged["private"]
        out["student_vs_best_member_private"] = student["private"] - best["private"]
    return out


def accuracy_markdown(result: dict) -> str:
    lines = [f"Recipe {result['recipe']} on {result['data']}, {result['wall_minutes']:.1f} min wall", "",
             "| model | val acc | test public | test private | minutes |", "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        val = "" if r.get("val_acc") is None else f"{r['val_acc']:.4f}"
        lines.append(f"| {r['name']} | {val} | {r['public']:.4f} | {r['private']:.4f} | {r['minutes']:.1f} |")
    lines.append("")
    if result.get("audition"):
        lines += ["```", *result["audition"], "```", ""]
    if "gain_over_best_member" in result:
        g = result["gain_over_best_member"]
        lines.append(f"- ensemble vs best member ({result['best_member']}), mean of public and private: "
                     f"{g * 100:+.1f} points (target +2.0: {'met' if g >= 0.02 else 'NOT met'})")
    if "private_over_course" in result:
        g = result["private_over_course"]
        lines.append(f"- ensemble vs the course sample at the same wall time, private: {g * 100:+.1f} points "
                     f"(target +15.0: {'met' if g >= 0.15 else 'NOT met'})")
    if "pseudo_private_gain" in result:
        g, names = result["pseudo_private_gain"], " + ".join(result.get("stages", ["pseudo", "distill"]))
        if result.get("stages_same_budget"):
            lines.append(f"- {names} at the same budget (from scratch, {result['stages_wall_minutes']:.1f} min), "
                         f"ensemble private: {g * 100:+.1f} points vs the plain recipe (target +2.0: "
                         f"{'met' if g >= 0.02 else 'NOT met'})")
        else:
            lines.append(f"- {names} on the finished members ({result['stages_wall_minutes']:.1f} extra min), "
                         f"ensemble private: {g * 100:+.1f} points (target +2.0 at the same budget; this is "
                         f"extra time)")
    for p in result.get("pseudo", []):
        est, true = p["estimated_precision"], p["true_precision"]
        gap = None if est is None or true is None else abs(true - est)
        lines.append(f"- pseudo-labels round {p['round']}: {p['count']} test utterances, estimated precision "
                     f"{'-' if est is None else f'{est:.3f}'}, true {'-' if true is None else f'{true:.3f}'}"
                     + ("" if gap is None else f" (gap {gap * 100:.1f} points, target <= 3: "
                                              f"{'met' if gap <= 0.03 else 'NOT met'})"))
    if "student_vs_ensemble_private" in result:
        a, b = result["student_vs_ensemble_private"], result["student_vs_best_member_private"]
        lines.append(f"- distilled student, private: {a * 100:+.1f} points vs its ensemble (target within 2: "
                     f"{'met' if a >= -0.02 else 'NOT met'}), {b * 100:+.1f} vs the best member of the plain "
                     f"recipe (target > 0: {'met' if b > 0 else 'NOT met'})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":       # a quick look: python -m kit.bench_accuracy RECIPE MINUTES
    r = run_accuracy_bench(sys.argv[1], minutes=float(sys.argv[2]), log=lambda m: print(m, file=sys.stderr))
    print(accuracy_markdown(r))
