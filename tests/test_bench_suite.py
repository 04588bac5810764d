"""The tuning suite's table: one row per competition from the accuracy bench's scored rows."""
from kit.bench_accuracy import _verdicts
from kit.bench_suite import SUITE, run_suite, suite_markdown, suite_row
from kit.synth import PRESETS


def bench_result(vote: tuple, members: dict, course: tuple) -> dict:
    rows = [{"name": n, "kind": "member", "public": p, "private": q} for n, (p, q) in members.items()]
    rows.append({"name": "ensemble boss", "kind": "ensemble", "public": vote[0], "private": vote[1]})
    rows.append({"name": "course sample (same wall time)", "kind": "baseline", "public": course[0],
                 "private": course[1]})
    return {"wall_minutes": 8.0, "rows": rows, **_verdicts(rows)}        # as run_accuracy_bench returns it


def test_a_row_compares_the_vote_with_its_best_member_and_the_course_sample():
    row = suite_row("tts", bench_result((0.80, 0.78), {"a": (0.70, 0.72), "b": (0.75, 0.74)}, (0.60, 0.58)))
    assert row["best_member"] == "b" and row["best_private"] == 0.74
    assert abs(row["over_course"] - 0.20) < 1e-9 and abs(row["over_member"] - 0.045) < 1e-9
    table = suite_markdown("boss", [row, suite_row("many", bench_result((0.5, 0.5), {"a": (0.5, 0.5)},
                                                                        (0.45, 0.45)))])
    assert "| tts | 8.0 | 0.800 / 0.780 | b 0.750 / 0.740 | 0.600 / 0.580 | +20.0 | +4.5 |" in table
    assert "met on 1 of 2" in table


def test_the_suite_runs_every_competition_and_keeps_rows_as_it_goes(monkeypatch, tmp_path):
    seen = []

    def fake_bench(recipe, preset, minutes=None, per_member_minutes=None, out=".", cache="data", course=True,
                   log=None, audition=None):
        assert (course, audition, per_member_minutes) == (True, None, None)
        seen.append((recipe, preset, minutes))
        assert (tmp_path / "bench_suite.json").is_file() == (len(seen) > 1)   # written after each one
        return bench_result((0.9, 0.9), {"a": (0.8, 0.8)}, (0.6, 0.6))

    monkeypatch.setattr("kit.bench_suite.run_accuracy_bench", fake_bench)
    result = run_suite("boss", SUITE, 5.0, out=tmp_path)
    assert [s[1] for s in seen] == list(SUITE) and all(p in PRESETS for p in SUITE)
    assert [r["preset"] for r in result["rows"]] == list(SUITE)
    assert "met on 3 of 3" in (tmp_path / "bench_suite.md").read_text()


def test_the_suite_passes_no_course_and_no_audition_to_every_competition(monkeypatch, tmp_path):
    """--no-course and --no-audition reach each competition's run (they were once dropped silently)."""
    from kit.cli import main

    seen = []

    def fake_bench(recipe, preset, minutes=None, per_member_minutes=None, out=".", cache="data", course=True,
                   log=None, audition=None):
        seen.append((preset, minutes, course, audition))
        rows = [r for r in bench_result((0.9, 0.9), {"a": (0.8, 0.8)}, (0.6, 0.6))["rows"] if r["kind"] != "baseline"]
        return {"wall_minutes": 8.0, "rows": rows, **_verdicts(rows)}

    monkeypatch.setattr("kit.bench_suite.run_accuracy_bench", fake_bench)
    assert main(["bench", "--accuracy", "--suite", "--minutes", "30", "--no-course", "--no-audition",
                 "--out", str(tmp_path)]) == 0
    assert seen == [(p, 30.0, False, False) for p in SUITE]
    summary = (tmp_path / "bench_suite.md").read_text()
    assert "| tts | 8.0 | 0.900 / 0.900 | a 0.800 / 0.800 | - / - | - | +10.0 |" in summary
    assert "not run (--no-course)" in summary and "met on" not in summary


def test_the_suite_refuses_options_it_would_ignore(capsys):
    from kit.cli import main

    assert main(["bench", "--accuracy", "--suite", "--stages", "refit"]) == 2
    assert "--stages goes without --suite" in capsys.readouterr().err
