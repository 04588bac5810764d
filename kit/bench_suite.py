"""`kit bench --accuracy --suite`: the accuracy bench on each competition of the tuning suite, so
no choice is made on one generator's data; one table of the recipe against the course sample.

The suite: `hard` (kit's source-filter voices in close families), `tts` (espeak-ng and flite
voices, channel and noise per utterance, real-data lengths) and `many` (600 speakers with ten
utterances each). Each row is one run of kit.bench_accuracy: test scored with the answer key.
"""
from __future__ import annotations

from pathlib import Path

from kit.bench_accuracy import run_accuracy_bench
from kit.fsio import write_json, write_text

SUITE = ("hard", "tts", "many")
TARGET_OVER_COURSE = 0.15       # private points over the course sample at the same wall time
TARGET_OVER_MEMBER = 0.02       # the vote over its best member, mean of public and private


def suite_row(preset: str, result: dict) -> dict:
    """One competition's line: the vote, its best member and the course sample, test-scored, with
    the comparisons the accuracy bench made (best_member, private_over_course, gain_over_best_member)."""
    rows = result["rows"]
    vote = next((r for r in rows if r["kind"] == "ensemble"), None)
    best = next((r for r in rows if r["kind"] == "member" and r["name"] == result.get("best_member")), None)
    course = next((r for r in rows if r["kind"] == "baseline"), None)
    return {"preset": preset, "minutes": result["wall_minutes"],
            "vote_public": vote["public"] if vote else None, "vote_private": vote["private"] if vote else None,
            "best_member": best["name"] if best else None,
            "best_public": best["public"] if best else None, "best_private": best["private"] if best else None,
            "course_public": course["public"] if course else None,
            "course_private": course["private"] if course else None,
            "over_course": result.get("private_over_course"),
            "over_member": result.get("gain_over_best_member")}


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}" if signed else f"{x:.3f}"


def suite_markdown(recipe: str, rows: list[dict]) -> str:
    lines = [f"Recipe {recipe} on the tuning suite (test scored with each answer key; public / private)", "",
             "| competition | minutes | vote | best member | course sample (same wall time) | vote - course, "
             "private | vote - best member, mean |", "|---|---:|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['minutes']:.1f} | {_pct(r['vote_public'])} / {_pct(r['vote_private'])} "
                     f"| {r['best_member']} {_pct(r['best_public'])} / {_pct(r['best_private'])} "
                     f"| {_pct(r['course_public'])} / {_pct(r['course_private'])} "
                     f"| {_pct(r['over_course'], True)} | {_pct(r['over_member'], True)} |")
    if all(r["course_private"] is None for r in rows):
        lines += ["", "- the course sample was not run (--no-course): the targets are not judged"]
        return "\n".join(lines) + "\n"
    met = [r for r in rows if (r["over_course"] or 0) >= TARGET_OVER_COURSE
           and (r["over_member"] or 0) >= TARGET_OVER_MEMBER]
    lines += ["", f"- targets (+{TARGET_OVER_COURSE * 100:.0f} private over the course sample, "
                  f"+{TARGET_OVER_MEMBER * 100:.0f} vote over its best member): met on {len(met)} of {len(rows)}"]
    return "\n".join(lines) + "\n"


def run_suite(recipe: str = "boss", presets: tuple[str, ...] = SUITE, minutes: float | None = None,
              out: str | Path = ".", cache: str | Path = "data", log=lambda m: None, course: bool = True,
              audition: bool | None = None, per_member_minutes: float | None = None) -> dict:
    """The accuracy bench on each preset (generated into `cache` once); each competition's own
    bench_accuracy.json/.md go to OUT/suite-<preset>/, the table to OUT/bench_suite.json/.md.
    course, audition, per_member_minutes: as the accuracy bench takes them (--no-course,
    --no-audition, --member-minutes), for every competition."""
    out = Path(out)
    rows: list[dict] = []
    summary: dict = {"recipe": recipe, "minutes": minutes, "per_member_minutes": per_member_minutes,
                     "audition": audition, "course": course, "rows": rows}
    for preset in presets:
        log(f"suite: {preset}")
        result = run_accuracy_bench(recipe, preset, minutes=minutes, per_member_minutes=per_member_minutes,
                                    out=out / f"suite-{preset}", cache=cache, course=course, log=log,
                                    audition=audition)
        rows.append(suite_row(preset, result))
        # Written after every competition: a suite stopped half way keeps the rows it has.
        write_json(out / "bench_suite.json", summary)
        write_text(out / "bench_suite.md", suite_markdown(recipe, rows))
    return summary
