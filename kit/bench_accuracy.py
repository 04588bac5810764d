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

from kit.errors import KitError
from kit.fsio import write_csv, write_json, write_text


def _member_csv(run_dir: Path, out: Path) -> Path:
    """A member's own submission: argmax of its test probabilities."""
    import pandas as pd

    from kit.layout import read_layout
    from kit.records import PredictionIds

    ids = PredictionIds.load(run_dir)
    probs = np.load(run_dir / "test_probs.npy")
    speakers = read_layout(ids.data_dir).speakers
    write_csv(out, pd.DataFrame({"Id": ids.test, "Category": [speakers[k] for k in probs.argmax(1)]}))
    return out


def _scores(csv: Path, key: Path) -> dict:
    from kit.submission import score_submission

    s = score_submission(csv, key)
    return {"public": s["public"]["acc"], "private": s["private"]["acc"], "overall": s["overall"]["acc"],
            "n": s["overall"]["n"]}


def run_accuracy_bench(recipe: str = "boss", preset: str = "hard", data: str | None = None,
                       minutes: float | None = None, per_member_minutes: float | None = None,
                       out: str | Path = ".", runs: str | Path = "runs-bench", cache: str | Path = "data",
                       course: bool = True, course_minutes: float | None = None, log=lambda m: None) -> dict:
    """Run `recipe` (its quick budget, or `minutes` of wall time for the whole recipe) on a fresh
    runs dir, score every member and the ensemble with the answer key, then train the course
    sample for the same wall time (or `course_minutes`) and score it. Writes bench_accuracy.json/.md
    into `out`."""
    from kit import course as course_sample
    from kit.bench import ensure_synth
    from kit.recipe import resolve_recipe, run_recipe
    from kit.synth import answers_path

    data_dir = Path(data) if data else ensure_synth(preset, Path(cache), log)
    key = answers_path(data_dir)
    if not key.is_file():
        raise KitError(f"{data_dir}: no answer key at {key}; the accuracy bench needs a synthetic data dir")
    out = Path(out)
    runs = Path(runs) / time.strftime("%Y%m%d-%H%M%S")        # never reuse members of another run
    recipe_path = resolve_recipe(recipe)

    began = time.time()
    res = run_recipe(recipe_path, data=str(data_dir), budget="quick", runs=str(runs), progress=False,
                     log=log, minutes=minutes, per_member_minutes=per_member_minutes, submit=False,
                     submissions=runs)
    wall = time.time() - began
    rows = []
    for m in res["members"]:
        run_dir = Path(m["run_dir"])
        csv = _member_csv(run_dir, run_dir / "member_test.csv")
        rows.append({"name": m["name"], "kind": "member", "val_acc": m.get("val_acc"), "minutes": m["minutes"],
                     **_scores(csv, key)})
    ens = res.get("ensemble")
    if ens:
        rows.append({"name": f"ensemble ({ens.get('method') or ens['vote']})", "kind": "ensemble",
                     "val_acc": ens.get("val_acc_oof", ens["val_acc"]), "minutes": wall / 60,
                     **_scores(Path(ens["csv"]), key)})
    result = {"recipe": res["recipe"], "data": str(data_dir), "wall_minutes": wall / 60, "rows": rows,
              "time": time.strftime("%Y-%m-%d %H:%M:%S")}
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
    return out


def accuracy_markdown(result: dict) -> str:
    lines = [f"Recipe {result['recipe']} on {result['data']}, {result['wall_minutes']:.1f} min wall", "",
             "| model | val acc | test public | test private | minutes |", "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        val = "" if r.get("val_acc") is None else f"{r['val_acc']:.4f}"
        lines.append(f"| {r['name']} | {val} | {r['public']:.4f} | {r['private']:.4f} | {r['minutes']:.1f} |")
    lines.append("")
    if "gain_over_best_member" in result:
        g = result["gain_over_best_member"]
        lines.append(f"- ensemble vs best member ({result['best_member']}), mean of public and private: "
                     f"{g * 100:+.1f} points (target +2.0: {'met' if g >= 0.02 else 'NOT met'})")
    if "private_over_course" in result:
        g = result["private_over_course"]
        lines.append(f"- ensemble vs the course sample at the same wall time, private: {g * 100:+.1f} points "
                     f"(target +10.0: {'met' if g >= 0.10 else 'NOT met'})")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":       # a quick look: python -m kit.bench_accuracy RECIPE MINUTES
    r = run_accuracy_bench(sys.argv[1], minutes=float(sys.argv[2]), log=lambda m: print(m, file=sys.stderr))
    print(accuracy_markdown(r))
