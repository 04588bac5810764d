"""One student that carries the ensemble: trained on the training labels plus the calibrated
ensemble's soft targets on every test utterance (kit.train.targets), so a single model holds
most of the vote's accuracy. The student is an ordinary run dir: it predicts, votes and submits
like any member.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.config import RunConfig, from_dict, layered, load_toml, parse_overrides, to_dict
from kit.ensemble import check_compatible, load_member
from kit.errors import KitError
from kit.fsio import read_json
from kit.identity import START_OVER
from kit.infer import predict_run, source_mode
from kit.pseudo import (
    TEACHER,
    changed_teachers,
    check_pseudo_labels,
    check_pseudo_test_ids,
    ensemble_probs,
    save_teacher,
)
from kit.records import predicted_mode
from kit.rundir import RunDir
from kit.runs import check_start
from kit.train import train
from kit.written import keep_finished

TEACHERS_JSON = "teachers.json"     # {teacher run dir: its test_probs.npy's SHA-256}, written by kit.rounds


def load_members(run_dirs) -> list:
    """The predicted members (kit.ensemble.Member), checked to share their split, test list and classes."""
    members = [load_member(d) for d in run_dirs]
    if not members:
        raise KitError("no run dirs given to distil")
    check_compatible(members)
    return members


def best_member(members) -> Path:
    """The run dir of the member (kit.ensemble.Member) with the highest validation accuracy (of its
    chosen inference mode)."""
    scores = [float((m.val_probs.argmax(axis=1) == m.val_labels).mean()) for m in members]
    return Path(members[max(range(len(members)), key=lambda k: (scores[k], -k))].run_dir)


def write_teacher(members, path, temperature: float = 1.0, folds: int = 5, record: dict | None = None) -> dict:
    """The calibrated ensemble's test probabilities (members: kit.ensemble.Member) as a teacher
    file; returns the fit's method, weights and temperatures. record (teaching()): kept in the file
    beside ids and probs, so a --resume can tell whether it is given the same teaching."""
    if not temperature > 0:
        raise KitError(f"--temperature {temperature}: must be > 0")
    fit = ensemble_probs([m.val_probs for m in members], members[0].val_labels,
                         [m.test_probs for m in members], folds)
    kept = {} if record is None else {
        "teachers": np.asarray(list(record["teachers"]), dtype=str),
        "teachers_sha256": np.asarray(list(record["teachers"].values()), dtype=str),
        "temperature": np.float64(record["temperature"]), "distill_weight": np.float64(record["distill_weight"])}
    save_teacher(path, members[0].ids.test, np.exp(fit["test_logp"]), temperature, kept)
    return {"method": fit["method"], "weights": fit["weights"], "temperatures": fit["temperatures"]}


def finished_before(out: Path, log) -> dict | None:
    """The summary of the student in `out` when it has finished training (a --resume then trains
    nothing and keeps it); a summary.json that cannot be read is said, and the student resumes."""
    run = RunDir.of(out)
    problem = run.summary_problem()
    if problem:
        log(f"{out}: its summary.json cannot be read ({problem}): not counted as finished; the student resumes "
            "from its checkpoint and writes a new one")
    return run.summary() if run.finished else None


def teaching(members, temperature: float, distill_weight: float) -> dict:
    """What a student is taught: its teachers (resolved run dir: its test_probs.npy's SHA-256, the
    format of kit.rounds' teachers.json), the temperature and the distill weight."""
    return {"teachers": {str(Path(m.run_dir).resolve()): m.test_sha256 for m in members},
            "temperature": float(temperature), "distill_weight": float(distill_weight)}


def recorded_teaching(out: Path) -> dict:
    """What the interrupted student in `out` recorded of its teaching: teacher.npz's record, else
    (an older kit's student) its teachers.json and config.toml; a key it has no record of is absent."""
    found: dict = {}
    try:
        with np.load(out / TEACHER, allow_pickle=False) as z:
            if "teachers" in z.files:
                found["teachers"] = dict(zip([str(t) for t in z["teachers"]],
                                             [str(h) for h in z["teachers_sha256"]], strict=True))
                found["temperature"] = float(z["temperature"])
                found["distill_weight"] = float(z["distill_weight"])
    except (KeyError, ValueError, OSError, EOFError) as e:
        raise KitError(f"{out / TEACHER}: unreadable teacher file ({e}); {START_OVER}") from None
    if "teachers" not in found and (out / TEACHERS_JSON).is_file():
        found["teachers"] = read_json(out / TEACHERS_JSON, "the student's teachers")
    if "distill_weight" not in found and (out / "config.toml").is_file():
        weight = load_toml(out / "config.toml").get("train", {}).get("distill_weight")
        if weight is not None:
            found["distill_weight"] = float(weight)
    return found


def check_same_teaching(out: Path, given: dict) -> None:
    """Refuse to resume the student in `out` with other teachers (or teachers predicted again since),
    another temperature or another distill weight than it was started with: its teacher.npz is kept
    on --resume, so the new ones would be silently ignored."""
    old = recorded_teaching(out)
    fix = f"resume with the same ones, or {START_OVER}"
    if "teachers" in old and set(old["teachers"]) != set(given["teachers"]):
        left = [t for t in old["teachers"] if t not in given["teachers"]]
        added = [t for t in given["teachers"] if t not in old["teachers"]]
        raise KitError(f"{out}: cannot resume: the interrupted student has other teachers ("
                       + "; ".join(([f"not given: {', '.join(left)}"] if left else [])
                                   + ([f"not its teachers: {', '.join(added)}"] if added else [])) + f"); {fix}")
    changed = [t for t in old.get("teachers", {}) if old["teachers"][t] != given["teachers"][t]]
    if changed:
        raise KitError(f"{out}: cannot resume: the teachers' test_probs.npy changed since it was taught "
                       f"({', '.join(changed)}: predicted again); {fix}")
    flags = {"temperature": ("--temperature", "temperature"), "distill_weight": ("--distill-weight", "distill weight")}
    for key, (was, now) in _teaching_changes(old, given).items():
        flag, what = flags[key]
        raise KitError(f"{out}: cannot resume: the interrupted student's {what} was {was:g}, not {now:g}; "
                       f"resume with {flag} {was:g}, or {START_OVER}")


def changed_settings(out: Path, temperature: float, distill_weight: float) -> dict[str, tuple[float, float]]:
    """What the student in `out` (finished or not) was taught with that differs from this temperature
    and distill weight: {key: (old, new)}, keys as in teaching(); {} when the same, when it has no
    teacher.npz yet (nothing taught) or no record of a setting (an older kit's student: its
    temperature). KitError when its teacher.npz is unreadable. Its teachers are compared by
    kit.rounds (teachers.json, by their predictions' digests)."""
    if not (out / TEACHER).is_file():
        return {}
    return _teaching_changes(recorded_teaching(out), {"temperature": temperature, "distill_weight": distill_weight})


def _teaching_changes(old: dict, given: dict) -> dict[str, tuple[float, float]]:
    """{key: (old, new)} of the temperature and distill weight that differ between what a student was
    taught with (recorded_teaching) and `given`; a setting with no record is not compared."""
    keys = ("temperature", "distill_weight")
    return {k: (old[k], float(given[k])) for k in keys if k in old and old[k] != float(given[k])}


def student_config(best: Path, out, config: str | None = None, overrides=(), init: str = "best") -> RunConfig:
    """The student's config: `config` (a member TOML) or the best member's (`best`: its run dir),
    then --set overrides. init "best": start from the best member's last.pt when it has the
    student's shape (a fine-tune: minutes instead of a whole training run), predicted in that
    member's mode; "none": from scratch."""
    if init not in ("best", "none"):
        raise KitError(f"--init {init!r}: choose best or none")
    source = Path(config) if config else best / "config.toml"
    cfg = layered((str(source), load_toml(source)), ("--set", parse_overrides(list(overrides))))
    cfg.name = Path(out).name
    if init == "best":
        teacher_cfg = from_dict(load_toml(best / "config.toml"), where=str(best / "config.toml"))
        if to_dict(teacher_cfg.model) != to_dict(cfg.model):
            raise KitError(f"--init best: the student's model differs from {best}'s; give --init none to "
                           "train it from scratch")
        cfg.train.init_from = str((best / "last.pt").resolve())
        cfg.infer.mode = predicted_mode(best, cfg.infer.mode)      # validation once (kit.infer.source_mode)
    return cfg


def distill(run_dirs, out, config: str | None = None, overrides=(), minutes: float | None = None,
            temperature: float = 1.0, distill_weight: float = 0.5, pseudo_labels: str | None = None,
            init: str = "best", resume: bool = False, progress: bool = True, log=None,
            allow_external_labels: bool = False) -> dict:
    """Train the student into `out`, then predict it (validation and test): {summary, pred, teacher}.
    pseudo_labels: a `kit pseudo` CSV (kit.pseudo.check_pseudo_labels), or any with allow_external_labels."""
    log = log or (lambda message: None)
    out = Path(out)
    if pseudo_labels:
        check_pseudo_labels(pseudo_labels, allow_external_labels)
    members = load_members(run_dirs)
    if pseudo_labels:
        check_pseudo_test_ids(pseudo_labels, members[0].ids.test)
        for run in [] if allow_external_labels else changed_teachers(pseudo_labels):
            log(f"warning: {pseudo_labels} was voted from predictions {run} no longer holds (retrained or predicted "
                "again since `kit pseudo`): these labels are the older model's; make them again with `kit pseudo`")
    cfg = student_config(best_member(members), out, config, overrides, init)
    check_start(out, resume)            # before teacher.npz is written: a finished student keeps its own
    done = finished_before(out, log) if resume else None
    teacher = out / TEACHER
    given = teaching(members, temperature, distill_weight)
    if resume and teacher.is_file():
        check_same_teaching(out, given)
        fit, taught = {"method": "kept"}, "the vote kept in its teacher.npz"
    else:
        out.mkdir(parents=True, exist_ok=True)
        fit = write_teacher(members, teacher, temperature, record=given)
        taught = f"{fit['method']} vote"
    cfg.train.teacher = str(teacher.resolve())
    cfg.train.distill_weight = distill_weight
    if pseudo_labels:
        cfg.data.pseudo_labels = str(Path(pseudo_labels).resolve())
    if allow_external_labels:               # the student's training checks the file again
        cfg.data.allow_external_labels = True
    if minutes is not None:
        cfg.train.minutes = minutes
    log(f"distilling {len(members)} member(s) ({taught}) into {out}"
        + (f", starting from {Path(cfg.train.init_from).parent.name}" if cfg.train.init_from else ""))
    summary = train(cfg, out, resume=resume, progress=progress)
    if (kept := keep_finished(out, done, summary)) is not None:      # as `kit train --resume` (probe 54 F7)
        summary = kept
        log(f"{out}: the student had already finished at step {kept.get('step')} (stopped: "
            f"{kept.get('stopped_reason')}); nothing trained, its summary.json kept, predicted again")
    mode = source_mode(cfg)
    pred = predict_run(out, which="last", progress=progress, mode=mode, compare=not mode)
    return {"summary": summary, "pred": pred, "teacher": fit, "run_dir": str(out)}
