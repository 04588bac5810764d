"""Ensembling predicted run dirs: `ensemble_runs` votes over them and writes a submission CSV plus a
JSON manifest saying exactly what went into it; the pieces, re-exported here, live beside it.

votes.py: plain hard/soft votes and greedy weights. calibration.py: a temperature per member and
pooled, weighted calibrated probabilities. crossfit.py: each combination scored out of fold on
validation, the best refitted (`auto_ensemble`). members.py: run dirs on disk, checked.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from kit.ensemble.calibration import POOLS, calibrate, fit_temperature, fit_weights, log_probs, mean_nll, pool_log_probs
from kit.ensemble.crossfit import (
    AUTO_METHODS,
    DEFAULT_POOL,
    METHODS,
    apply_method,
    auto_ensemble,
    crossfit,
    fit_methods,
    fold_ids,
    require_folds,
)
from kit.ensemble.members import (
    Member,
    check_compatible,
    collapsed,
    load_member,
    member_speakers,
    same_predictions,
)
from kit.ensemble.votes import check_weights, hard_vote, select_weights, soft_vote, vote_predictions
from kit.env import CACHE_DIRNAME
from kit.errors import KitError
from kit.fsio import json_bytes, remove_left_temps, sha256_file, staged
from kit.layout import data_competition
from kit.names import check_submission_name, distinct_runs
from kit.records import SubmissionManifest, trained_on
from kit.runs import RECIPE_LOCK, trained_on_validation
from kit.submission import keep_submitted, refuse_ledger, submission_lock, submitted_note, validate_submission

__all__ = ["AUTO_METHODS", "DEFAULT_POOL", "METHODS", "POOLS", "VOTES", "Member", "apply_method", "auto_ensemble",
           "calibrate", "check_compatible", "check_weights", "crossfit", "ensemble_runs", "fit_methods",
           "fit_temperature", "fit_weights", "fold_ids", "hard_vote", "load_member", "log_probs", "mean_nll",
           "member_speakers", "parse_weights", "pool_log_probs", "require_folds", "select_weights", "soft_vote",
           "vote_predictions"]

VOTES = ("hard", "soft", "auto")
UNDER_BEST = 0.01       # a plain vote this far (and two utterances) under its best member on validation is said


def parse_weights(text: str | None):
    """CLI --weights: None, 'auto' or '0.5,1,2' -> None | 'auto' | list[float]."""
    if text is None or text == "auto":
        return text
    try:
        if not text.isascii() or "_" in text:   # float() takes 1_0 as 10 and full-width digits
            raise ValueError(text)
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise KitError(f"--weights {text!r}: give 'auto' or comma-separated numbers like 1,0.5,2") from None


def ensemble_runs(run_dirs, vote: str = "hard", weights=None, name: str | None = None,
                  out_dir: str | os.PathLike = "submissions", pool: str = DEFAULT_POOL, folds: int = 5,
                  log=None, val_from: list | None = None, competition: str | None = None) -> dict:
    """Vote over predicted run dirs and write OUT/NAME.csv (Id,Category) and OUT/NAME.json.

    vote hard | soft with weights None (equal) or a list: that plain vote of the members'
    probabilities, as written by `kit predict`.
    weights "auto", or vote "auto": the calibrated, cross-fitted ensemble (`auto_ensemble`).
    Each member gets a temperature fitted on validation; the combination method is chosen by
    out-of-fold accuracy over `folds` folds of the validation split (temperatures and weights
    fitted on the other folds each time), then refitted on all of validation for the test
    predictions. The candidates: vote auto -> single, hard, equal, weighted; soft -> single,
    equal, weighted (calibrated soft votes, `pool` geo or mean); hard -> single, hard.

    A NAME.csv that was submitted (its sha256 is in a ledger or in the note `kit submit` leaves
    beside it) is not overwritten with other votes: it and its manifest move aside to
    NAME.csv.old-<time> (kit.submission.keep_submitted), said in one `log` line, and only once the
    new pair is written to temp files (a full disk leaves the old pair in place).

    Returns {csv, manifest, table: [{member, val_acc, weight, ...}, ..., ensemble row],
    val_acc (the written vote's in-sample validation accuracy), weights (M,), kept (the old
    files moved aside), and for the auto mode also oof_acc (honest), method, temperatures, candidates}.

    val_from (a refit, kit.rounds): one run dir per member whose validation predictions fit the vote
    in its place (the member trained on validation); the test predictions are the members' own.
    competition: where the vote is for (a recipe's --competition); None: its data's.
    """
    _check_arguments(run_dirs, vote, weights, pool)
    name = _submission_name(name, vote, len(run_dirs))                         # before any work
    _refuse_others_files(csv_path := Path(out_dir) / f"{name}.csv")
    members = [load_member(d) for d in run_dirs]
    if val_from is not None:
        members = [_validated_by(m, load_member(src)) for m, src in zip(members, val_from, strict=True)]
    check_compatible(members)
    auto = vote == "auto" or weights == "auto"
    voted = _auto_vote(members, vote, pool, folds) if auto else _plain_vote(members, vote, weights)
    data, data_dir = _csv_bytes(members, voted["test_pred"])
    w, extra = voted["weights"], voted["extra"]
    manifest = SubmissionManifest(
        name=name, vote=vote, weights=[float(x) for x in w],
        weights_mode="auto" if auto else ("given" if weights is not None else "equal"), **extra,
        members=[str(m.run_dir.resolve()) for m in members],
        member_settings=[m.ids.settings() for m in members],
        member_test_probs_sha256=[m.test_sha256 for m in members],
        csv=str(csv_path.resolve()), csv_sha256=hashlib.sha256(data).hexdigest(), data_dir=data_dir,
        competition=competition or (data_competition(data_dir) if data_dir else None),
        n_val=int(len(members[0].val_labels)), table=voted["table"], val_acc=voted["val_acc"],
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), trained_on=trained_on(run_dirs) or None,
        fitted_on=[str(Path(d).resolve()) for d in val_from] if val_from is not None else None,
    )
    kept = _publish(csv_path, data, data_dir, manifest)
    say = log or (lambda message: None)         # warnings once the vote is written: an error says all
    _warn_members(members, w, say)
    if not auto and not trained_on_validation(run_dirs):
        _warn_under_best(voted["table"], vote, max(1, len(members[0].val_labels)), say)
    if kept:
        say(f"{csv_path}: was submitted (its bytes, as it or another file: a ledger or {submitted_note(csv_path).name} "
            f"has their sha256), so the old file is kept as {', '.join(p.name for p in kept)}")
    return {"csv": csv_path, "manifest": csv_path.with_suffix(".json"), "table": voted["table"],
            "val_acc": voted["val_acc"], "weights": [float(x) for x in w], "kept": [str(p) for p in kept], **extra}


def _validated_by(member: Member, source: Member) -> Member:
    """`member` with `source`'s validation predictions (the same validation utterances)."""
    if list(source.ids.val) != list(member.ids.val) or source.val_probs.shape != member.val_probs.shape:
        raise KitError(f"{member.run_dir}: its validation split is not {source.run_dir}'s, so that run's "
                       "predictions cannot fit its vote")
    return dataclasses.replace(member, val_probs=source.val_probs)


def _check_arguments(run_dirs, vote: str, weights, pool: str) -> None:
    if vote not in VOTES:
        raise KitError(f"--vote {vote!r}: choose {', '.join(VOTES)}")
    if isinstance(weights, str) and weights != "auto":
        raise KitError(f"weights {weights!r}: give 'auto' or a list of numbers")
    if vote == "auto" and weights not in (None, "auto"):
        raise KitError("--vote auto chooses its own weights; leave out --weights or give --weights auto")
    if pool not in POOLS:
        raise KitError(f"pool {pool!r}: choose one of {', '.join(POOLS)}")
    if not run_dirs:
        raise KitError("no run dirs given to ensemble")
    distinct_runs(run_dirs)


def _accuracy(pred, labels) -> float | None:
    return float((pred == labels).mean()) if len(labels) else None


def _member_rows(members: list[Member], w, temperatures=None) -> list[dict]:
    """One table row per member: its own validation accuracy, its weight (and temperature)."""
    labels = members[0].val_labels
    rows = [{"member": str(m.run_dir), "val_acc": _accuracy(m.val_probs.argmax(axis=1), labels),
             "weight": float(wk), "mode": m.ids.inference_mode} for m, wk in zip(members, w, strict=True)]
    if temperatures is not None:        # the calibrated (auto) vote's, one per member
        for row, t in zip(rows, temperatures, strict=True):
            row["temperature"] = t
    return rows


def _plain_vote(members: list[Member], vote: str, weights) -> dict:
    """The hard or soft vote of the members' probabilities with equal or given weights."""
    labels = members[0].val_labels
    w = check_weights(weights, len(members))
    w = w / w.sum()
    val_acc = _accuracy(vote_predictions([m.val_probs for m in members], vote, w), labels) if len(labels) else None
    table = _member_rows(members, w) + [{"member": f"ensemble ({vote} vote)", "val_acc": val_acc,
                                         "weight": float(w.sum())}]
    return {"weights": w, "test_pred": vote_predictions([m.test_probs for m in members], vote, w),   # (n_test,)
            "val_acc": val_acc, "table": table, "extra": {}}


def _warn_members(members: list[Member], weights, say) -> None:
    """Members a vote should not count as they are: one model twice, a run collapsed to one speaker."""
    for first, again in same_predictions(members):
        say(f"warning: {first} and {again} hold the same test predictions (a copy of one run dir, or the same "
            "settings and seed): that model counts twice")
    weight = {m.run_dir: float(wk) for m, wk in zip(members, weights, strict=True)}
    for run, share in collapsed(members):
        effect = "it pulls the vote toward that speaker; leave it out" if weight[run] > 0 else \
            "this vote gives it no weight"
        say(f"warning: {run} gives one speaker to {share:.0%} of the test utterances (a run collapsed to one "
            f"class?): {effect}")


def _warn_under_best(table: list[dict], vote: str, n_val: int, say) -> None:
    """A plain vote (nothing fitted on validation, so its score there is honest) under its best member
    on validation: a weak member is dragging it down."""
    *rows, vote_row = table
    best = max(rows, key=lambda r: -1.0 if r["val_acc"] is None else r["val_acc"])
    if vote_row["val_acc"] is not None and best["val_acc"] is not None and \
            vote_row["val_acc"] < best["val_acc"] - max(UNDER_BEST, 2 / n_val):
        say(f"warning: the {vote} vote scores {vote_row['val_acc']:.3f} on validation, under its best member "
            f"{best['member']} ({best['val_acc']:.3f}): leave out the weak members, or use --vote auto (it "
            "weighs them on validation)")


def _auto_vote(members: list[Member], vote: str, pool: str, folds: int) -> dict:
    """The calibrated, cross-fitted ensemble among the candidates `vote` allows."""
    fit = auto_ensemble([m.val_probs for m in members], members[0].val_labels, [m.test_probs for m in members],
                        AUTO_METHODS[vote], pool, folds)
    w = np.asarray(fit["weights"], dtype=np.float64)
    extra = {k: fit[k] for k in ("method", "pool", "folds", "temperatures", "oof_acc", "candidates")}
    label = f"ensemble ({'auto' if vote == 'auto' else 'auto ' + vote}: {fit['method']})"
    table = _member_rows(members, w, extra["temperatures"]) + [
        {"member": label, "val_acc": fit["val_acc"], "weight": float(w.sum()), "oof_acc": extra["oof_acc"]}]
    return {"weights": w, "test_pred": fit["test_pred"], "val_acc": fit["val_acc"], "table": table, "extra": extra}


def _default_name(vote: str, n_members: int) -> str:
    return f"{vote}-{n_members}members-{time.strftime('%Y%m%d-%H%M%S')}"


def _submission_name(name, vote: str, n_members: int) -> str:
    """NAME when kit can write NAME.csv and NAME.json from it as given (a plain file name, not
    blank, no blanks around it, no .csv or .json of its own: `x.csv` would write x.csv.csv), else
    one line saying what to change; the default name when none was given (an empty one is refused)."""
    if name is None:
        return check_submission_name(_default_name(vote, n_members))
    check_submission_name(name)
    if not name.strip():
        raise KitError(f"submission name {name!r} is blank: give a name such as v4")
    if name != name.strip():
        raise KitError(f"submission name {name!r} begins or ends with a blank: give it as {name.strip()!r}")
    suffix = Path(name).suffix
    if suffix.lower() in (".csv", ".json"):
        raise KitError(f"submission name {name!r}: give it without {suffix} (kit writes NAME.csv and NAME.json)")
    return name


def _csv_bytes(members: list[Member], pred) -> tuple[bytes, str]:
    """The predicted classes (n_test,) as the CSV's bytes (Id,Category, speaker ids), and the data
    dir it is for."""
    speakers, data_dir = member_speakers(members[0])
    frame = pd.DataFrame({"Id": members[0].ids.test, "Category": [speakers[int(k)] for k in pred]})
    return frame.to_csv(index=False).encode("utf-8"), data_dir


def _publish(csv_path: Path, data: bytes, data_dir: str, manifest: SubmissionManifest) -> list[Path]:
    """Write NAME.csv (DATA) and NAME.json (MANIFEST) to temp files beside them, check the CSV the
    way Kaggle would for DATA_DIR, and only then move a submitted pair aside (keep_submitted) and
    rename the new pair into place (the CSV first), all under submission_lock: a full disk or a bad
    CSV leaves the old pair where a ledger names it, and two `kit ensemble`s at once keep each pair
    together. Returns the files moved aside."""
    json_path = csv_path.with_suffix(".json")
    digest = hashlib.sha256(data).hexdigest()
    with submission_lock(csv_path):
        for path in (csv_path, json_path):          # what a killed writer of the pair left: none is alive now
            remove_left_temps(path)
        if _same_pair(csv_path, digest, manifest):          # the same vote again (a re-run): nothing to write
            return []
        with staged(json_path, json_bytes(manifest.to_dict()), "manifest"), \
                staged(csv_path, data, "submission") as new_csv:
            problems = validate_submission(new_csv, data_dir)
            if problems:               # a safety net: member_speakers checked ids and classes
                raise KitError(f"{csv_path}: would be invalid for {data_dir}: {problems[0]}")
            # the CSV's bytes may stay while its manifest changes (another vote, the same labels):
            # a submitted pair then moves aside all the same, so its manifest is kept with it
            kept = keep_submitted(csv_path, None)
            _retire_report(csv_path, kept)
            return kept


def _retire_report(csv_path: Path, kept: list[Path]) -> None:
    """The replaced vote's NAME_report.png (`kit report`'s picture of it): moved with a kept pair, as
    NAME.csv.old-<time>_report.png, else removed, so no picture describes a vote no longer there."""
    png = csv_path.with_name(f"{csv_path.stem}_report.png")
    if not png.is_file():
        return
    kept_csv = next((p for p in kept if p.name.startswith(f"{csv_path.name}.old-")), None)
    try:
        if kept_csv is not None:
            os.replace(png, kept_csv.with_name(f"{kept_csv.name}_report.png"))
        else:
            png.unlink()
    except OSError:                             # another process moved it first: nothing stale is left
        pass


# Files that make a folder a kit run dir or a competition's data dir: a vote's pair is never written among them.
_NOT_A_SUBMISSIONS_FOLDER = ("config.toml", "identity.json", "checkpoints.json", "summary.json", "metadata.json",
                             "testdata.json", "mapping.json", RECIPE_LOCK)     # probe 58 F6: a recipe's folder


def _refuse_others_files(csv_path: Path) -> None:
    """NAME.csv and NAME.json replace only a vote's own pair: never files in a run dir or a data dir
    (a run's metrics.csv or summary.json, the competition's metadata.json), nor a CSV that is not a
    submission or a JSON file that is not a vote's manifest, nor a ledger. One line before any work."""
    refuse_ledger(csv_path)
    folder = csv_path.parent
    marks = [n for n in _NOT_A_SUBMISSIONS_FOLDER if (folder / n).is_file()]
    marks += [CACHE_DIRNAME] if CACHE_DIRNAME in folder.resolve().parts else []     # the packed store's cache
    if marks:
        raise KitError(f"--out {folder}: a run dir, a recipe's folder, a data dir or its cache (it holds "
                       f"{marks[0]}), where the vote's files would go among its own: choose another --out; nothing "
                       "was written")
    json_path = csv_path.with_suffix(".json")
    if json_path.is_file() and not _is_manifest(json_path):
        raise KitError(f"{json_path}: a file that is not a vote's manifest is there, and the vote would "
                       "replace it: choose another --name; nothing was written")
    if csv_path.is_file() and not _is_submission(csv_path):
        raise KitError(f"{csv_path}: a CSV that is not a submission (Id,Category) is there, and the vote "
                       "would replace it: choose another --name; nothing was written")


def _is_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("members"), list) and "vote" in data


def _is_submission(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline()
    except OSError:
        return False
    return header.strip().replace(" ", "").lower() == "id,category"


def _same_pair(csv_path: Path, digest: str, manifest: SubmissionManifest) -> bool:
    """Whether CSV_PATH and its manifest already say what the new pair would (but for its time)."""
    old = csv_path.with_suffix(".json")
    try:
        if sha256_file(csv_path) != digest:
            return False
        kept = json.loads(old.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    new = json.loads(json_bytes(manifest.to_dict()))
    return isinstance(kept, dict) and {**kept, "created": None} == {**new, "created": None}
