"""Using the unlabelled test set: pseudo-labels from the ensemble, and its soft targets for a student.

`ensemble_probs` gives the calibrated ensemble's probabilities: out-of-fold on validation (each
fold predicted by temperatures and weights fitted on the other folds, so its confidences are
honest) and on test (fitted on all of validation). `choose_threshold` picks the lowest
confidence whose validation utterances above it are still right at the target precision; the
test utterances above it become pseudo-labels, and that validation precision is the estimate
kit prints. Validation utterances are never labelled: they only measure.
"""
from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kit.ensemble import (
    DEFAULT_POOL,
    METHODS,
    apply_method,
    check_compatible,
    crossfit,
    fit_methods,
    load_member,
    log_probs,
    member_speakers,
)
from kit.errors import KitError
from kit.fsio import file_lock, read_json, remove_left_temps, sha256_file, write_bytes, write_csv, write_json
from kit.submission import read_answer_key, score_predictions

PSEUDO_CSV, PSEUDO_JSON, TEACHER = "pseudo.csv", "pseudo.json", "teacher.npz"


def ensemble_probs(val_probs_list, labels, test_probs_list, folds: int = 5, pool: str = DEFAULT_POOL) -> dict:
    """{method, val_logp (OOF, (N, C)), test_logp (M, C)} of the calibrated ensemble.

    The method is the one cross-fitting chooses among those with probabilities (single, equal,
    weighted): a hard vote has no confidence to threshold."""
    labels = np.asarray(labels, dtype=np.int64)
    methods = tuple(m for m in METHODS if m != "hard")
    logps = [log_probs(p) for p in val_probs_list]
    cv = crossfit(logps, labels, methods, pool, folds)
    method, oof = cv["chosen"], cv["oof_logp"][cv["chosen"]]
    fit = fit_methods(logps, labels, (method,), pool)
    _, test = apply_method(method, fit["weights"][method], fit["temperatures"],
                           [log_probs(p) for p in test_probs_list], pool)
    return {"method": method, "val_logp": oof, "test_logp": test,
            "temperatures": [float(t) for t in fit["temperatures"]],
            "weights": [float(w) for w in fit["weights"][method]]}


MIN_SUPPORT = 20      # validation utterances a precision estimate must rest on, at the least


def choose_threshold(val_conf, val_correct, test_conf, precision: float | None = None,
                     top_fraction: float | None = None, min_support: int = MIN_SUPPORT) -> dict:
    """The confidence threshold and its validation-estimated precision.

    precision: the lowest threshold at which validation utterances at or above it are right at
    least this often, over at least `min_support` of them (fewer validation utterances than that
    make no estimate). top_fraction: the threshold that keeps this share of the test utterances.
    Returns {threshold, estimated_precision, val_count (utterances the estimate rests on),
    test_count}. No threshold reaches the precision: threshold inf, nothing chosen."""
    val_conf, val_correct = np.asarray(val_conf, dtype=np.float64), np.asarray(val_correct, dtype=bool)
    test_conf = np.asarray(test_conf, dtype=np.float64)
    if (precision is None) == (top_fraction is None):
        raise KitError("pseudo-labels: give exactly one of a precision or a top fraction")
    if top_fraction is not None:
        if not 0 < top_fraction <= 1:
            raise KitError(f"top fraction {top_fraction}: must be in (0, 1]")
        k = max(1, int(round(top_fraction * len(test_conf))))
        threshold = float(np.sort(test_conf)[::-1][k - 1])
    else:
        assert precision is not None                            # exactly one of the two is given
        if not 0 < precision <= 1:
            raise KitError(f"precision {precision}: must be in (0, 1]")
        order = np.argsort(-val_conf, kind="stable")
        running = np.cumsum(val_correct[order]) / np.arange(1, len(order) + 1)     # precision of the top k
        ok = np.flatnonzero(running >= precision)
        ok = ok[ok + 1 >= min(min_support, len(order))]
        # the largest top-k that keeps the precision, cut at a confidence boundary
        threshold = float(val_conf[order][ok[-1]]) if len(ok) else float("inf")
    above = val_conf >= threshold
    return {"threshold": threshold, "val_count": int(above.sum()),
            "estimated_precision": float(val_correct[above].mean()) if above.any() else None,
            "test_count": int((test_conf >= threshold).sum())}


@dataclass
class PseudoLabels:
    """What a pseudo-labelling round used and chose (pseudo.json beside pseudo.csv)."""
    members: list
    method: str
    threshold: float
    estimated_precision: float | None
    target_precision: float | None
    top_fraction: float | None
    val_count: int
    test_count: int
    n_test: int
    csv: str
    csv_sha256: str
    teacher: str
    temperatures: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    created: str = ""
    member_test_probs_sha256: list = field(default_factory=list)    # the predictions voted (older kits: none)

    @classmethod
    def beside(cls, csv) -> PseudoLabels | None:
        """The record `kit pseudo` wrote beside this CSV (None when there is none)."""
        path = Path(csv).with_name(PSEUDO_JSON)
        if not path.is_file():
            return None
        saved = read_json(path, f"the record of {PSEUDO_CSV}")
        try:
            return cls(**saved)
        except TypeError as e:
            raise KitError(f"{path}: not a pseudo-label record ({e})") from None

    def describe(self) -> str:
        """One line: how many test utterances were labelled, at what confidence and precision."""
        if self.threshold == float("inf"):
            return (f"0 of {self.n_test} test utterances: at no confidence are the validation utterances above it "
                    f"right {self.target_precision:.0%} of the time, over at least {MIN_SUPPORT} of them")
        est = "-" if self.estimated_precision is None else f"{self.estimated_precision:.3f}"
        return (f"{self.test_count} of {self.n_test} test utterances (confidence >= {self.threshold:.3f}; estimated "
                f"precision {est} from {self.val_count} validation utterances, {self.method} vote)")


def make_pseudo_labels(run_dirs, out_dir, precision: float | None = 0.95, top_fraction: float | None = None,
                       folds: int = 5) -> PseudoLabels:
    """Write OUT/pseudo.csv (Id,Category,Confidence of the chosen test utterances), OUT/teacher.npz
    (ids, probs: the calibrated ensemble on every test utterance) and OUT/pseudo.json."""
    if top_fraction is not None:
        precision = None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise KitError(f"{out}: exists and is not a directory (the dir for {PSEUDO_CSV}, {TEACHER}, {PSEUDO_JSON})")
    members = [load_member(d) for d in run_dirs]
    if not members:
        raise KitError("no run dirs given to pseudo-label from")
    check_compatible(members)
    labels = members[0].val_labels
    if len(labels) < 2:
        raise KitError(f"{members[0].run_dir}: pseudo-labels need a validation split to measure precision on")
    fit = ensemble_probs([m.val_probs for m in members], labels, [m.test_probs for m in members], folds)
    val_p, test_p = np.exp(fit["val_logp"]), np.exp(fit["test_logp"])
    chosen = choose_threshold(val_p.max(axis=1), val_p.argmax(axis=1) == labels, test_p.max(axis=1),
                              precision, top_fraction)
    speakers, _ = member_speakers(members[0])
    keep = test_p.max(axis=1) >= chosen["threshold"]
    ids = np.asarray(members[0].ids.test)
    csv = out / PSEUDO_CSV
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out / ".pseudo.lock"):           # one writer of the round: a killed one's temp files go
        for name in (PSEUDO_CSV, TEACHER, PSEUDO_JSON):
            remove_left_temps(out / name)
        # Confidence at full precision (shortest repr, read back exactly): the threshold in pseudo.json
        # is one of these values, and every row must compare >= it as written.
        write_csv(csv, pd.DataFrame({"Id": ids[keep], "Category": [speakers[k] for k in test_p[keep].argmax(axis=1)],
                                     "Confidence": test_p[keep].max(axis=1)}))
        save_teacher(out / TEACHER, ids, test_p)
        record = PseudoLabels(
            members=[str(m.run_dir.resolve()) for m in members], method=fit["method"], threshold=chosen["threshold"],
            estimated_precision=chosen["estimated_precision"], target_precision=precision, top_fraction=top_fraction,
            val_count=chosen["val_count"], test_count=chosen["test_count"], n_test=len(ids), csv=str(csv.resolve()),
            csv_sha256=sha256_file(csv), teacher=str((out / TEACHER).resolve()), temperatures=fit["temperatures"],
            weights=fit["weights"], created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            member_test_probs_sha256=[m.test_sha256 for m in members])
        write_json(out / PSEUDO_JSON, asdict(record))
    return record


def save_teacher(path, ids, probs, temperature: float = 1.0, extra: dict | None = None) -> None:
    """teacher.npz: ids (test feature paths) and probs (N, C) float32, sharpened (T < 1) or
    softened (T > 1) by a temperature; `extra` arrays beside them (kit.distill's record of the teaching)."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature != 1.0:
        logp = np.log(np.maximum(probs, 1e-30)) / temperature
        probs = np.exp(logp - logp.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
    buf = io.BytesIO()
    np.savez(buf, ids=np.asarray(ids, dtype=str), probs=probs.astype(np.float32), **(extra or {}))
    write_bytes(path, buf.getvalue())


def true_precision(pseudo_csv, answers) -> float | None:
    """The pseudo-labels' precision against an answer key (synthetic data; a path, or what
    kit.submission.read_answer_key read from one): for the report. None when nothing was labelled.
    A key for another test set is refused as `kit score` refuses it (score_predictions), against the
    test utterances the labels were chosen from (teacher.npz beside the CSV)."""
    key = answers if isinstance(answers, dict) else read_answer_key(answers)
    chosen = pd.read_csv(pseudo_csv, dtype={"Id": str, "Category": str})
    labels = dict.fromkeys(_test_ids(pseudo_csv), "")       # unlabelled test utterances score as wrong
    labels.update(zip(chosen["Id"], chosen["Category"], strict=True))
    score = score_predictions(labels, key, f"{pseudo_csv} (the test set it labels)",
                              "the answer key" if isinstance(answers, dict) else str(answers))
    return score["overall"]["correct"] / len(chosen) if len(chosen) else None


def _test_ids(pseudo_csv) -> list[str]:
    """Every test utterance the pseudo-labels in pseudo_csv were chosen from."""
    record = PseudoLabels.beside(pseudo_csv)
    teacher = Path(record.teacher) if record else Path(pseudo_csv).with_name(TEACHER)
    if not teacher.is_file():
        raise KitError(f"{pseudo_csv}: no {TEACHER} beside it names the test set the labels were chosen from "
                       "(write them with `kit pseudo`)")
    with np.load(teacher, allow_pickle=False) as z:
        return [str(i) for i in z["ids"]]


EXTERNAL_HINT = ("make pseudo-labels with `kit pseudo`, or pass --allow-external-labels to train on this file "
                 "anyway")


def check_pseudo_labels(path, allow_external: bool = False) -> None:
    """Refuse pseudo-labels kit did not make, unless allow_external: `kit pseudo` writes pseudo.json
    beside pseudo.csv with the CSV's sha256. Without that record (an answer key, say, which would
    train on the test set's answers) or with another file's, training on it is refused."""
    path = Path(path)
    if allow_external:
        return
    if not path.is_file():
        raise KitError(f"{path}: pseudo-label file not found")
    try:
        record = PseudoLabels.beside(path)
    except KitError as e:
        raise KitError(f"{e}; {EXTERNAL_HINT}") from None
    if record is None:
        raise KitError(f"{path}: no {PSEUDO_JSON} beside it, so kit did not make these pseudo-labels (an answer "
                       f"key would train on the test set's answers); {EXTERNAL_HINT}")
    if record.csv_sha256 != sha256_file(path):
        raise KitError(f"{path}: not the file its {PSEUDO_JSON} records (the sha256 differs: edited or replaced "
                       f"since `kit pseudo` wrote it); {EXTERNAL_HINT}")


def check_pseudo_test_ids(path, test_ids) -> None:
    """Pseudo-labels name test utterances of the data the teachers were predicted on: an Id that is
    not one of them (labels made on other data, a competition regenerated since) is one line before a
    student's folder is made."""
    path = Path(path)
    try:
        ids = pd.read_csv(path, dtype={"Id": str}, usecols=["Id"])["Id"]
    except (ValueError, OSError) as e:
        raise KitError(f"{path}: unreadable pseudo-label CSV ({e})") from None
    known = set(test_ids)
    stray = [i for i in ids if i not in known]
    if stray:
        raise KitError(f"{path}: {len(stray)} Id(s) are not test utterances of the teachers' data (e.g. "
                       f"{stray[0]!r}): pseudo-labels made on other data; make them with `kit pseudo` from these runs")


def changed_teachers(path) -> list[str]:
    """The run dirs whose test predictions are no longer those the pseudo-labels at `path` were voted
    from (retrained, or predicted again since `kit pseudo`): their labels are an older model's."""
    record = PseudoLabels.beside(path)
    if record is None:
        return []
    changed = []
    for run, digest in zip(record.members, record.member_test_probs_sha256, strict=False):
        probs = Path(run) / "test_probs.npy"
        if not probs.is_file() or sha256_file(probs) != digest:
            changed.append(run)
    return changed
