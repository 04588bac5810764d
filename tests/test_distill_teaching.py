"""A recipe's distilled student is kept only while it was taught what the recipe teaches now: its
teachers (kit.rounds compares their predictions) and its [after.distill] temperature and weight.
A student taught at another temperature or weight is moved aside (nothing deleted) and trained
again, with one line saying why; an unchanged re-run keeps it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kit.fsio import write_json
from kit.pseudo import TEACHER, save_teacher
from kit.rundir import RunDir

from conftest import recipe_toml


def _recipe(path: Path, temperature: float, weight: float) -> Path:
    path.write_text(recipe_toml(["a"], name="tinyteach", base={"train": {"max_steps": 30, "eval_every": 10}},
                                after={"predict": True, "which": "last", "ensemble": "soft",
                                       "distill": {"share": 0.5, "temperature": temperature, "weight": weight}}))
    return path


def _run(recipe: Path, tiny_data: Path, tmp_path: Path) -> tuple[list[str], object]:
    from kit.zoo import run_recipe

    lines: list[str] = []
    result = run_recipe(recipe, data=str(tiny_data), budget="full", runs=str(tmp_path / "runs"), workers=1,
                        progress=False, log=lines.append, submissions=tmp_path / "subs")
    return lines, result


def _taught(student: Path) -> tuple[float, float]:
    with np.load(student / TEACHER) as z:
        return float(z["temperature"]), float(z["distill_weight"])


@pytest.mark.slow
def test_a_changed_temperature_or_weight_trains_the_student_again_and_keeps_the_old_one_aside(tiny_data, tmp_path):
    recipe = _recipe(tmp_path / "tinyteach.toml", 1.0, 0.5)
    root = tmp_path / "runs" / "tinyteach"
    student = root / "student"
    _run(recipe, tiny_data, tmp_path)
    assert _taught(student) == (1.0, 0.5) and RunDir(student).finished
    first = (student / "test_probs.npy").read_bytes(), RunDir.of(student).summary()
    member = RunDir.of(root / "a").summary()

    # unchanged: the finished student is kept, not taught or predicted again
    lines, _ = _run(recipe, tiny_data, tmp_path)
    assert not [line for line in lines if line.startswith("student") or "distilling" in line], lines
    assert ((student / "test_probs.npy").read_bytes(), RunDir.of(student).summary()) == first
    assert not list(root.glob("student.old-*"))

    # another temperature and weight: moved aside with one line, trained again on the new teaching
    lines, result = _run(_recipe(recipe, 4.0, 0.95), tiny_data, tmp_path)
    (old,) = root.glob("student.old-*")
    said = [line for line in lines if line.startswith("student: teaching changed")]
    assert said == [f"student: teaching changed (temperature 1.0 -> 4.0, weight 0.5 -> 0.95): trained again; "
                    f"the old one moved to {old}"], lines
    assert any(line.startswith("distilling") for line in lines)
    assert _taught(old) == (1.0, 0.5) and (old / "test_probs.npy").read_bytes() == first[0]    # kept whole
    assert _taught(student) == (4.0, 0.95) and RunDir(student).finished
    assert RunDir.of(student).summary() != first[1]
    assert result.student is not None and result.student.run_dir == str(student) and result.student.csv
    assert RunDir.of(root / "a").summary() == member                    # the members are not trained again

    # the weight alone counts too
    lines, _ = _run(_recipe(recipe, 4.0, 0.7), tiny_data, tmp_path)
    assert len(list(root.glob("student.old-*"))) == 2 and _taught(student) == (4.0, 0.7)
    assert [line for line in lines if line.startswith("student: teaching changed (weight 0.95 -> 0.7)")], lines


# ------------------------------------------------ the stage's check alone, on hand-made students
class _Host:
    """What _set_aside_if_taught_otherwise needs of a recipe run: a log."""

    def __init__(self):
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


TEACHERS = {"/runs/r/a": "0" * 64}


def _student(path: Path, temperature: float = 1.0, weight: float = 0.5, record: bool = True) -> Path:
    """A student folder as the stage leaves it (teachers.json, teacher.npz with its record, a
    checkpoint; no summary.json: unfinished): the check reads only what it was taught."""
    path.mkdir(parents=True)
    write_json(path / "identity.json", {"version": 1})         # the trainer's mark of a run dir
    write_json(path / "teachers.json", TEACHERS)
    extra = {"teachers": np.asarray(list(TEACHERS)), "teachers_sha256": np.asarray(list(TEACHERS.values())),
             "temperature": np.float64(temperature), "distill_weight": np.float64(weight)} if record else {}
    save_teacher(path / TEACHER, ["t0.npy"], np.array([[0.25, 0.75]]), temperature, extra)
    (path / "last.pt").write_bytes(b"weights")
    return path


@pytest.mark.parametrize("temperature,weight,expected", [
    (1.0, 0.5, None),
    (1, 0.5, None),                                     # TOML's `temperature = 1` is the same teaching
    (2.0, 0.5, "temperature 1.0 -> 2.0"),
    (1.0, 0.25, "weight 0.5 -> 0.25"),
])
def test_the_stage_moves_aside_only_a_student_taught_otherwise(tmp_path, temperature, weight, expected):
    from kit.rounds import _set_aside_if_taught_otherwise

    host, student = _Host(), _student(tmp_path / "student")
    _set_aside_if_taught_otherwise(host, student, TEACHERS, {"temperature": temperature, "weight": weight})
    moved = list(tmp_path.glob("student.old-*"))
    if expected is None:
        assert host.lines == [] and not moved and (student / "last.pt").is_file()
    else:
        assert host.lines == [f"student: teaching changed ({expected}): trained again; the old one moved to "
                              f"{moved[0]}"] and not student.exists()
        assert (moved[0] / "last.pt").read_bytes() == b"weights"          # an unfinished one too: nothing lost


def test_other_teachers_are_one_line_and_the_teaching_is_not_said_as_well(tmp_path):
    from kit.rounds import _set_aside_if_taught_otherwise

    host, student = _Host(), _student(tmp_path / "student")
    _set_aside_if_taught_otherwise(host, student, {"/runs/r/a": "1" * 64}, {"temperature": 3.0, "weight": 0.5})
    (moved,) = tmp_path.glob("student.old-*")
    assert host.lines == [f"student: taught by other members before; moved to {moved}"]


def test_an_unreadable_teacher_file_is_taught_again_and_an_older_students_unknown_temperature_kept(tmp_path):
    from kit.rounds import _set_aside_if_taught_otherwise

    host = _Host()
    broken = _student(tmp_path / "broken" / "student")
    (broken / TEACHER).write_bytes(b"not a zip")
    _set_aside_if_taught_otherwise(host, broken, TEACHERS, {"temperature": 1.0, "weight": 0.5})
    (moved,) = (tmp_path / "broken").glob("student.old-*")
    assert host.lines == [f"student: teaching changed (its {TEACHER} is unreadable): trained again; the old one "
                          f"moved to {moved}"]
    # an older kit's teacher.npz has no record: a temperature it cannot tell is not a change
    host = _Host()
    older = _student(tmp_path / "older" / "student", temperature=2.0, record=False)
    _set_aside_if_taught_otherwise(host, older, TEACHERS, {"temperature": 1.0, "weight": 0.5})
    assert host.lines == [] and older.is_dir()
