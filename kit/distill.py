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
from kit.infer import predict_run, source_mode
from kit.pseudo import TEACHER, check_pseudo_labels, ensemble_probs, save_teacher
from kit.records import predicted_mode
from kit.runs import check_start
from kit.train import train


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


def write_teacher(members, path, temperature: float = 1.0, folds: int = 5) -> dict:
    """The calibrated ensemble's test probabilities (members: kit.ensemble.Member) as a teacher
    file; returns the fit's method, weights and temperatures."""
    if not temperature > 0:
        raise KitError(f"--temperature {temperature}: must be > 0")
    fit = ensemble_probs([m.val_probs for m in members], members[0].val_labels,
                         [m.test_probs for m in members], folds)
    save_teacher(path, members[0].ids.test, np.exp(fit["test_logp"]), temperature)
    return {"method": fit["method"], "weights": fit["weights"], "temperatures": fit["temperatures"]}


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
    cfg = student_config(best_member(members), out, config, overrides, init)
    check_start(out, resume)            # before teacher.npz is written: a finished student keeps its own
    teacher = out / TEACHER
    if resume and teacher.is_file():
        fit = {"method": "(kept from the interrupted run)"}
    else:
        out.mkdir(parents=True, exist_ok=True)
        fit = write_teacher(members, teacher, temperature)
    cfg.train.teacher = str(teacher.resolve())
    cfg.train.distill_weight = distill_weight
    if pseudo_labels:
        cfg.data.pseudo_labels = str(Path(pseudo_labels).resolve())
    if allow_external_labels:               # the student's training checks the file again
        cfg.data.allow_external_labels = True
    if minutes is not None:
        cfg.train.minutes = minutes
    log(f"distilling {len(members)} member(s) ({fit['method']} vote) into {out}"
        + (f", starting from {Path(cfg.train.init_from).parent.name}" if cfg.train.init_from else ""))
    summary = train(cfg, out, resume=resume, progress=progress)
    mode = source_mode(cfg)
    pred = predict_run(out, which="last", progress=progress, mode=mode, compare=not mode)
    return {"summary": summary, "pred": pred, "teacher": fit, "run_dir": str(out)}
