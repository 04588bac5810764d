"""The honest choice of a combination: each method (best single member, equal hard vote, equal or
weighted calibrated soft vote) fitted on validation folds and scored out of fold (cross-fitting);
`auto_ensemble` picks the best by out-of-fold accuracy and refits it on all of validation.
"""
from __future__ import annotations

import numpy as np

from kit.ensemble.calibration import calibrate, fit_temperature, fit_weights, log_probs, mean_nll, pool_log_probs
from kit.ensemble.votes import hard_vote, require_finite
from kit.errors import KitError

METHODS = ("single", "hard", "equal", "weighted")    # simplest first: an accuracy tie goes to the earlier
AUTO_METHODS = {"auto": METHODS, "soft": ("single", "equal", "weighted"), "hard": ("single", "hard")}
DEFAULT_POOL = "geo"


def fold_ids(labels, folds: int = 5) -> np.ndarray:
    """Deterministic stratified folds (N,): utterances sorted by label, then dealt out in turn."""
    labels = np.asarray(labels, dtype=np.int64)
    ids = np.empty(len(labels), dtype=np.int64)
    ids[np.argsort(labels, kind="stable")] = np.arange(len(labels)) % folds
    return ids


def fit_methods(logps, labels, methods=METHODS, pool: str = DEFAULT_POOL) -> dict:
    """Fit per-member temperatures, then each method's weights, on (val) log-probs.

    logps: M arrays (N, C) of raw member log-probabilities. Returns {"temperatures": (M,),
    "weights": {method: (M,)}}: single = one-hot on the most accurate member (ties: lower
    calibrated NLL, then lower index), hard and equal = equal, weighted = fit_weights.
    """
    labels = np.asarray(labels, dtype=np.int64)
    temps = np.array([fit_temperature(lp, labels) for lp in logps])
    cal = [calibrate(lp, t) for lp, t in zip(logps, temps, strict=True)]
    m = len(logps)
    weights = {}
    for method in methods:
        if method == "single":
            score = [((lp.argmax(axis=1) == labels).sum(), -mean_nll(lp, labels)) for lp in cal]
            weights[method] = np.eye(m)[max(range(m), key=lambda k: (score[k], -k))]
        elif method in ("hard", "equal"):
            weights[method] = np.full(m, 1.0 / m)
        elif method == "weighted":
            weights[method] = fit_weights(cal, labels, pool)
        else:
            raise KitError(f"method {method!r}: choose from {', '.join(METHODS)}")
    return {"temperatures": temps, "weights": weights}


def apply_method(method: str, weights, temperatures, logps, pool: str = DEFAULT_POOL):
    """Predictions (N,) and log-probabilities (N, C) of a fitted method on raw member log-probs
    (log-probabilities are None for the hard vote, which has no probabilities of its own)."""
    return combine(method, weights, [calibrate(lp, t) for lp, t in zip(logps, temperatures, strict=True)], pool)


def combine(method: str, weights, cal, pool: str):
    """apply_method on members already calibrated (cal: M arrays (N, C))."""
    if method == "single":
        lp = cal[int(np.argmax(weights))]
        return lp.argmax(axis=1), lp
    if method == "hard":
        return hard_vote([np.exp(lp) for lp in cal], weights), None
    lp = pool_log_probs(cal, weights, pool)
    return lp.argmax(axis=1), lp


def require_folds(folds: int) -> None:
    """A number of cross-fitting folds is at least 2 (`kit ensemble --folds`, whatever the vote)."""
    if folds < 2:
        raise KitError(f"--folds {folds}: cross-fitting needs at least 2 folds")


def crossfit(logps, labels, methods=METHODS, pool: str = DEFAULT_POOL, folds=5) -> dict:
    """Out-of-fold (OOF) predictions of each method: for each fold, temperatures and weights
    are fitted on the other folds only, then the fold is predicted.

    folds: a number of stratified folds, or fold ids (N,). Returns {"folds": (N,),
    "oof_pred": {method: (N,)}, "oof_logp": {method: (N, C) | None (hard)}, "oof_acc": {method:
    float}, "oof_nll": {method: float | None},
    "chosen": the method with the highest OOF accuracy, ties to the simpler one (METHODS order)}.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    scalar = np.isscalar(folds)
    if scalar:
        require_folds(int(folds))                   # checked before fold_ids divides by it
    fold = fold_ids(labels, min(int(folds), n)) if scalar else np.asarray(folds, dtype=np.int64)
    if len(fold) != n or len(np.unique(fold)) < 2:
        raise KitError(f"cross-fitting needs at least 2 non-empty folds; got {len(np.unique(fold))} fold(s) "
                       f"of {n} validation utterance(s) (--folds {folds if scalar else '?'})")
    pred = {m: np.zeros(n, dtype=np.int64) for m in methods}
    oof_logp: dict[str, np.ndarray | None] = {m: None for m in methods}      # OOF log-probabilities
    for f in np.unique(fold):
        train, held = fold != f, fold == f
        fit = fit_methods([lp[train] for lp in logps], labels[train], methods, pool)
        cal = [calibrate(lp[held], t) for lp, t in zip(logps, fit["temperatures"], strict=True)]
        for m in methods:
            p, lp = combine(m, fit["weights"][m], cal, pool)
            pred[m][held] = p
            if lp is not None:
                out = oof_logp[m]
                if out is None:
                    out = oof_logp[m] = np.zeros((n, lp.shape[1]))
                out[held] = lp
    correct = {m: int((pred[m] == labels).sum()) for m in methods}
    chosen = max(methods, key=lambda m: (correct[m], -methods.index(m)))
    nll = {m: None if lp is None else float(-lp[np.arange(n), labels].mean()) for m, lp in oof_logp.items()}
    return {"folds": fold, "oof_pred": pred, "oof_logp": oof_logp,
            "oof_acc": {m: correct[m] / n for m in methods}, "oof_nll": nll, "chosen": chosen}


def auto_ensemble(val_probs_list, labels, test_probs_list=None, methods=METHODS, pool: str = DEFAULT_POOL,
                  folds=5) -> dict:
    """The calibrated, cross-fitted ensemble: choose the method by OOF accuracy, fit it on the
    whole validation split, predict test.

    Returns {"method", "temperatures", "weights" (M,), "oof_acc", "candidates": {method:
    {oof_acc, oof_nll, val_acc (in-sample, fitted on all of validation), weights}},
    "val_pred", "val_acc", "test_pred" (None without test)}.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) < 2:
        raise KitError("the calibrated cross-fitted ensemble needs a validation split; these runs have "
                       f"{len(labels)} validation utterance(s)")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise KitError(f"method {unknown[0]!r}: choose from {', '.join(METHODS)}")
    methods = tuple(m for m in METHODS if m in methods)               # keep the simplicity order
    require_finite(val_probs_list, "validation")                       # before any fit: it names the member
    if test_probs_list is not None:
        require_finite(test_probs_list, "test")
    logps = [log_probs(p) for p in val_probs_list]
    cv = crossfit(logps, labels, methods, pool, folds)
    fit = fit_methods(logps, labels, methods, pool)
    candidates = {}
    cal = [calibrate(lp, t) for lp, t in zip(logps, fit["temperatures"], strict=True)]
    for m in methods:
        p, _ = combine(m, fit["weights"][m], cal, pool)
        candidates[m] = {"oof_acc": cv["oof_acc"][m], "oof_nll": cv["oof_nll"][m],
                         "val_acc": float((p == labels).mean()),
                         "weights": [float(x) for x in fit["weights"][m]]}
        if m == cv["chosen"]:
            val_pred = p
    method = cv["chosen"]
    w = fit["weights"][method]
    test_pred = None
    if test_probs_list is not None:
        test_pred, _ = apply_method(method, w, fit["temperatures"], [log_probs(p) for p in test_probs_list], pool)
    return {"method": method, "pool": pool, "folds": int(len(np.unique(cv["folds"]))),
            "temperatures": [float(t) for t in fit["temperatures"]], "weights": w,
            "oof_acc": cv["oof_acc"][method], "candidates": candidates,
            "val_pred": val_pred, "val_acc": candidates[method]["val_acc"], "test_pred": test_pred}
