"""Ensembling predicted run dirs: plain hard/soft votes, and a calibrated, cross-fitted choice.

`ensemble_runs` reads each member's val/test probabilities (written by `kit predict`) and
writes a submission CSV plus a JSON manifest saying exactly what went into it. With
weights "auto" each member is temperature-scaled and the combination (best single member,
hard vote, equal or NLL-weighted soft vote) is chosen by out-of-fold validation accuracy,
so the reported gain over the best member is honest.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.errors import KitError
from kit.fsio import sha256_file, write_csv
from kit.records import PredictionIds, SubmissionManifest, trained_on

VOTES = ("hard", "soft", "auto")


# ---------------------------------------------------------------- votes
def _weights(weights, m: int) -> np.ndarray:
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (m,):
        raise KitError(f"{len(w)} weights given for {m} ensemble members")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise KitError(f"weights {list(w)}: must be finite, non-negative and not all zero")
    return w


def soft_vote(probs_list, weights=None) -> np.ndarray:
    """(Weighted) mean of member probabilities: M arrays (N, C) -> (N, C)."""
    probs = np.stack([np.asarray(p, dtype=np.float64) for p in probs_list])   # (M, N, C)
    w = _weights(weights, len(probs))
    return np.tensordot(w / w.sum(), probs, axes=1)                          # (N, C)


def hard_vote(probs_list, weights=None) -> np.ndarray:
    """Majority of the members' argmax predictions (weighted counts if weights): -> (N,).

    Ties go to the tied class with the largest summed (weighted) probability, then to the
    lowest class index, so the result never depends on member order.
    """
    probs = np.stack([np.asarray(p, dtype=np.float64) for p in probs_list])   # (M, N, C)
    w = _weights(weights, len(probs))
    m, n, c = probs.shape
    votes = np.zeros((n, c))
    rows = np.arange(n)
    for k in range(m):
        np.add.at(votes, (rows, probs[k].argmax(axis=1)), w[k])               # (N, C) vote counts
    return _most_votes(votes, np.tensordot(w, probs, axes=1))


def _most_votes(votes: np.ndarray, summed: np.ndarray) -> np.ndarray:
    """The hard vote's rule, (N, C) vote counts and summed probabilities -> (N,) classes: most
    votes; ties to the largest summed probability, then to the lowest class index."""
    # isclose: weights like 0.1 + 0.2 must tie with 0.3
    tied = np.isclose(votes, votes.max(axis=1, keepdims=True), rtol=1e-9, atol=1e-12)
    return np.where(tied, summed, -np.inf).argmax(axis=1)                     # first max = lowest index


def vote_predictions(probs_list, vote: str, weights=None) -> np.ndarray:
    """Predicted classes (N,) of a hard or soft vote."""
    if vote == "hard":
        return hard_vote(probs_list, weights)
    if vote == "soft":
        return soft_vote(probs_list, weights).argmax(axis=1)
    raise KitError(f"--vote {vote!r}: choose hard or soft")


def select_weights(val_probs_list, val_labels, vote: str = "soft", rounds: int | None = None) -> np.ndarray:
    """Greedy forward selection with replacement (Caruana et al. 2004) on validation only.

    Each round adds to the bag the member (repeats allowed) that gives the best validation
    accuracy of the bag's vote, ties broken by the bag's log-loss; the best bag seen is kept,
    so the result is never worse on validation than the best single member.
    Returns weights (M,) summing to 1 (zero for members never picked).
    """
    labels = np.asarray(val_labels, dtype=np.int64)
    probs = [np.asarray(p, dtype=np.float64) for p in val_probs_list]     # M x (N, C)
    m = len(probs)
    if m == 0:
        raise KitError("no ensemble members to weight")
    if len(labels) == 0:
        raise KitError("--weights auto needs a validation split, and these runs have none")
    rounds = rounds or max(10, 4 * m)
    rows = np.arange(len(labels))
    votes = [p.argmax(axis=1) for p in probs]                            # M x (N,) each member's vote

    # The bag is kept as running sums, so trying a member costs one (N, C) pass, not a re-vote.
    counts = np.zeros(m)
    bag_probs, bag_votes = np.zeros_like(probs[0]), np.zeros_like(probs[0])   # (N, C)

    def score(k: int, size: int) -> tuple[float, float]:
        prob_sum = bag_probs + probs[k]                                  # (N, C)
        if vote == "hard":
            vote_sum = bag_votes.copy()
            vote_sum[rows, votes[k]] += 1
            pred = _most_votes(vote_sum, prob_sum)
        else:
            pred = prob_sum.argmax(axis=1)
        nll = -np.log(np.clip(prob_sum[rows, labels] / size, 1e-12, None)).mean()
        return float((pred == labels).mean()), -float(nll)        # larger is better for both

    best_counts, best_score = None, None
    for r in range(rounds):
        s, neg_k = max((score(k, r + 1), -k) for k in range(m))  # on a full tie, the lowest index
        k = -neg_k
        counts[k] += 1
        bag_probs += probs[k]
        bag_votes[rows, votes[k]] += 1
        if best_score is None or s > best_score:
            best_score, best_counts = s, counts.copy()
    return best_counts / best_counts.sum()


# ---------------------------------------------------------------- calibration
T_RANGE = (0.05, 20.0)           # temperatures fit_temperature may return
PROB_FLOOR = 1e-30               # float32 softmax underflows to 0; log(0) would poison the sums


def log_probs(probs) -> np.ndarray:
    """Member probabilities (N, C) -> log-probabilities (N, C) float64, zeros floored."""
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), PROB_FLOOR))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def calibrate(logp, temperature: float) -> np.ndarray:
    """Temperature-scaled log-probabilities: log of p^(1/T) renormalised, (N, C) -> (N, C)."""
    return _log_softmax(np.asarray(logp, dtype=np.float64) / float(temperature))


def mean_nll(logp, labels) -> float:
    """Mean negative log-likelihood of `labels` under log-probabilities (N, C)."""
    labels = np.asarray(labels, dtype=np.int64)
    return float(-np.asarray(logp)[np.arange(len(labels)), labels].mean())


def fit_temperature(logp, labels, t_range=T_RANGE, tol: float = 1e-8) -> float:
    """The temperature T in t_range minimising the NLL of softmax(logp / T) on `labels`.

    With beta = 1/T the NLL is convex (its derivative is mean(E_p[logp] - logp[label]), its
    second derivative the mean variance of logp under p), so a Newton step kept inside a
    shrinking bracket finds the minimum in a handful of passes over the (N, C) array.
    """
    logp = np.asarray(logp, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    picked = logp[np.arange(len(labels)), labels]                    # (N,)

    def slope(beta: float) -> tuple[float, float]:
        p = np.exp(_log_softmax(beta * logp))                          # (N, C)
        mean = (p * logp).sum(axis=1)                                  # (N,) E_p[logp]
        var = (p * logp * logp).sum(axis=1) - mean * mean              # (N,) Var_p[logp]
        return float((mean - picked).mean()), float(np.maximum(var, 0).mean())

    lo, hi = 1.0 / t_range[1], 1.0 / t_range[0]                       # beta bracket
    g_lo, g_hi = slope(lo)[0], slope(hi)[0]
    if g_lo >= 0:
        return float(t_range[1])
    if g_hi <= 0:
        return float(t_range[0])
    beta = min(max(1.0, lo), hi)
    for _ in range(100):
        g, h = slope(beta)
        if abs(g) < tol:
            break
        if g > 0:
            hi = beta
        else:
            lo = beta
        step = beta - g / h if h > 0 else None
        # Newton when it stays inside the bracket, else the geometric midpoint (the bracket spans 400x)
        beta = step if step is not None and lo < step < hi else float(np.sqrt(lo * hi))
        if hi / lo < 1 + 1e-12:
            break
    return float(1.0 / beta)


# ---------------------------------------------------------------- pooling and weights
POOLS = ("geo", "mean")   # geo: weighted mean of log-probs, renormalised; mean: of probabilities


def pool_log_probs(cal_logps, weights, pool: str) -> np.ndarray:
    """Pooled log-probabilities (N, C) of M calibrated members (M arrays (N, C)), weights (M,)."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if pool == "geo":
        z = sum(wk * lp for wk, lp in zip(w, cal_logps) if wk > 0)     # (N, C)
        return _log_softmax(z)
    if pool == "mean":
        p = sum(wk * np.exp(lp) for wk, lp in zip(w, cal_logps) if wk > 0)
        return np.log(np.maximum(p, PROB_FLOOR))
    raise KitError(f"pool {pool!r}: choose one of {', '.join(POOLS)}")


def fit_weights(cal_logps, labels, pool: str = "geo", steps: int = 300, tol: float = 1e-9) -> np.ndarray:
    """Weights on the simplex (M,) minimising the NLL of the pooled calibrated members.

    mean pool: EM for mixture weights (each step provably lowers the NLL, no step size).
    geo pool: the NLL is convex in the weights; exponentiated gradient with a step that
    halves whenever a step would raise the loss.
    """
    labels = np.asarray(labels, dtype=np.int64)
    m, rows = len(cal_logps), np.arange(len(labels))
    w = np.full(m, 1.0 / m)
    if m == 1 or len(labels) == 0:
        return w
    picked = np.stack([lp[rows, labels] for lp in cal_logps])         # (M, N) log p_k(label)
    if pool == "mean":
        pk = np.exp(picked)                                             # (M, N)
        last = np.inf
        for _ in range(steps):
            mix = np.maximum(w @ pk, PROB_FLOOR)                         # (N,)
            loss = -np.log(mix).mean()
            w = w * (pk / mix).mean(axis=1)
            w /= w.sum()
            if last - loss < tol:
                break
            last = loss
        return w
    if pool != "geo":
        raise KitError(f"pool {pool!r}: choose one of {', '.join(POOLS)}")

    def loss_grad(w):
        lp = pool_log_probs(cal_logps, w, "geo")                         # (N, C), w sums to 1
        p = np.exp(lp)
        grad = np.array([((p * l).sum(axis=1) - pk).mean() for l, pk in zip(cal_logps, picked)])
        return float(-lp[rows, labels].mean()), grad

    loss, grad = loss_grad(w)
    eta = 1.0
    for _ in range(steps):
        trial = w * np.exp(-eta * (grad - grad.min()))                  # shift: same step, no overflow
        trial /= trial.sum()
        t_loss, t_grad = loss_grad(trial)
        if t_loss > loss:
            eta /= 2
            if eta < 1e-6:
                break
            continue
        done = loss - t_loss < tol
        w, loss, grad = trial, t_loss, t_grad
        eta *= 1.5
        if done:
            break
    return w


# ---------------------------------------------------------------- honest choice of a combination
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
    cal = [calibrate(lp, t) for lp, t in zip(logps, temps)]
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
    return _combine(method, weights, [calibrate(lp, t) for lp, t in zip(logps, temperatures)], pool)


def _combine(method: str, weights, cal, pool: str):
    """apply_method on members already calibrated (cal: M arrays (N, C))."""
    if method == "single":
        lp = cal[int(np.argmax(weights))]
        return lp.argmax(axis=1), lp
    if method == "hard":
        return hard_vote([np.exp(lp) for lp in cal], weights), None
    lp = pool_log_probs(cal, weights, pool)
    return lp.argmax(axis=1), lp


def crossfit(logps, labels, methods=METHODS, pool: str = DEFAULT_POOL, folds=5) -> dict:
    """Out-of-fold (OOF) predictions of each method: for each fold, temperatures and weights
    are fitted on the other folds only, then the fold is predicted.

    folds: a number of stratified folds, or fold ids (N,). Returns {"folds": (N,),
    "oof_pred": {method: (N,)}, "oof_acc": {method: float}, "oof_nll": {method: float | None},
    "chosen": the method with the highest OOF accuracy, ties to the simpler one (METHODS order)}.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    fold = fold_ids(labels, min(int(folds), n)) if np.isscalar(folds) else np.asarray(folds, dtype=np.int64)
    if len(fold) != n or len(np.unique(fold)) < 2:
        raise KitError(f"cross-fitting needs at least 2 non-empty folds; got {len(np.unique(fold))} fold(s) "
                       f"of {n} validation utterance(s) (--folds {folds if np.isscalar(folds) else '?'})")
    pred = {m: np.zeros(n, dtype=np.int64) for m in methods}
    picked = {m: np.zeros(n) for m in methods}                          # log p(label), OOF
    for f in np.unique(fold):
        train, held = fold != f, fold == f
        fit = fit_methods([lp[train] for lp in logps], labels[train], methods, pool)
        cal = [calibrate(lp[held], t) for lp, t in zip(logps, fit["temperatures"])]
        for m in methods:
            p, lp = _combine(m, fit["weights"][m], cal, pool)
            pred[m][held] = p
            if lp is not None:      # the held-out labels are read here only, to score
                picked[m][held] = lp[np.arange(held.sum()), labels[held]]
    correct = {m: int((pred[m] == labels).sum()) for m in methods}
    chosen = max(methods, key=lambda m: (correct[m], -methods.index(m)))
    return {"folds": fold, "oof_pred": pred, "oof_acc": {m: correct[m] / n for m in methods},
            "oof_nll": {m: None if m == "hard" else float(-picked[m].mean()) for m in methods},
            "chosen": chosen}


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
    logps = [log_probs(p) for p in val_probs_list]
    cv = crossfit(logps, labels, methods, pool, folds)
    fit = fit_methods(logps, labels, methods, pool)
    candidates = {}
    cal = [calibrate(lp, t) for lp, t in zip(logps, fit["temperatures"])]
    for m in methods:
        p, _ = _combine(m, fit["weights"][m], cal, pool)
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


# ---------------------------------------------------------------- members on disk
@dataclass
class Member:
    run_dir: Path
    ids: PredictionIds
    val_probs: np.ndarray      # (n_val, C)
    test_probs: np.ndarray     # (n_test, C)

    @property
    def val_labels(self) -> np.ndarray:
        return np.asarray(self.ids.val_labels, dtype=np.int64)


def load_member(run_dir: str | os.PathLike) -> Member:
    """A predicted run dir's ids and probabilities, with a clear error if prediction is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KitError(f"{run_dir}: run dir not found")
    files = [run_dir / n for n in ("ids.json", "val_probs.npy", "test_probs.npy")]
    for f in files:
        if not f.is_file():
            raise KitError(f"{run_dir}: no {f.name}; run `kit predict {run_dir}` first")
    ids = PredictionIds.load(files[0])
    try:
        val, test = np.load(files[1]), np.load(files[2])
    except (ValueError, OSError) as e:
        raise KitError(f"{run_dir}: unreadable prediction files ({e}); "
                       f"run `kit predict {run_dir}` again") from None
    if val.shape[0] != len(ids.val) or test.shape[0] != len(ids.test) or val.shape[1:] != test.shape[1:]:
        raise KitError(f"{run_dir}: val_probs/test_probs shapes {val.shape}/{test.shape} do not match "
                       f"ids.json; run `kit predict {run_dir}` again")
    return Member(run_dir, ids, val, test)


def check_compatible(members: list[Member]) -> None:
    """Members must share the validation split, the test list and the classes."""
    first = members[0]
    for other in members[1:]:
        if other.ids.val != first.ids.val or other.ids.val_labels != first.ids.val_labels:
            raise KitError(f"{first.run_dir} and {other.run_dir} were validated on different splits; "
                           "ensemble only runs trained with the same data.split_seed and val_fraction")
        if other.ids.test != first.ids.test:
            raise KitError(f"{first.run_dir} and {other.run_dir} predicted different test sets "
                           "(different data dirs?)")
        if other.test_probs.shape[1] != first.test_probs.shape[1]:
            raise KitError(f"{first.run_dir} has {first.test_probs.shape[1]} classes but "
                           f"{other.run_dir} has {other.test_probs.shape[1]}")


def member_speakers(member: Member) -> tuple[list[str], str]:
    """Class index -> speaker id string, from the data dir the member was predicted on,
    after checking that its test list is that data dir's (so the CSV will be valid)."""
    from kit.data import read_layout

    data_dir = member.ids.data_dir
    if not data_dir:
        from kit.config import from_dict, load_toml

        data_dir = from_dict(load_toml(member.run_dir / "config.toml")).data.data_dir
    layout = read_layout(data_dir)
    if member.ids.test != [u.path for u in layout.test]:
        raise KitError(f"{member.run_dir}: its test predictions do not follow {data_dir}/testdata.json; "
                       f"run `kit predict {member.run_dir}` again")
    if len(layout.speakers) != member.test_probs.shape[1]:
        raise KitError(f"{member.run_dir}: {member.test_probs.shape[1]} classes but "
                       f"{data_dir}/mapping.json has {len(layout.speakers)} speakers")
    return layout.speakers, str(data_dir)


def parse_weights(text: str | None):
    """CLI --weights: None, 'auto' or '0.5,1,2' -> None | 'auto' | list[float]."""
    if text is None or text == "auto":
        return text
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise KitError(f"--weights {text!r}: give 'auto' or comma-separated numbers like 1,0.5,2") from None


def member_mode(ids: PredictionIds) -> str:
    """How a member's test probabilities were made: sliding | full (old ids.json: from "full")."""
    return ids.inference_mode


def ensemble_runs(run_dirs, vote: str = "hard", weights=None, name: str | None = None,
                  out_dir: str | os.PathLike = "submissions", pool: str = DEFAULT_POOL, folds: int = 5) -> dict:
    """Vote over predicted run dirs and write OUT/NAME.csv (Id,Category) and OUT/NAME.json.

    vote hard | soft with weights None (equal) or a list: that plain vote of the members'
    probabilities, as written by `kit predict`.
    weights "auto", or vote "auto": the calibrated, cross-fitted ensemble (`auto_ensemble`).
    Each member gets a temperature fitted on validation; the combination method is chosen by
    out-of-fold accuracy over `folds` folds of the validation split (temperatures and weights
    fitted on the other folds each time), then refitted on all of validation for the test
    predictions. The candidates: vote auto -> single, hard, equal, weighted; soft -> single,
    equal, weighted (calibrated soft votes, `pool` geo or mean); hard -> single, hard.

    Returns {csv, manifest, table: [{member, val_acc, weight, ...}, ..., ensemble row],
    val_acc (the written vote's in-sample validation accuracy), weights (M,), and for the
    auto mode also oof_acc (honest), method, temperatures, candidates}.
    """
    import pandas as pd

    from kit.submission import validate_submission

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
    auto = vote == "auto" or weights == "auto"
    members = [load_member(d) for d in run_dirs]
    check_compatible(members)
    labels = members[0].val_labels
    val_list = [m.val_probs for m in members]

    def acc(pred):
        return float((pred == labels).mean()) if len(labels) else None

    extra = {}
    if auto:
        fit = auto_ensemble(val_list, labels, [m.test_probs for m in members], AUTO_METHODS[vote], pool, folds)
        w, pred = np.asarray(fit["weights"], dtype=np.float64), fit["test_pred"]
        val_acc, label = fit["val_acc"], f"ensemble ({'auto' if vote == 'auto' else 'auto ' + vote}: {fit['method']})"
        extra = {k: fit[k] for k in ("method", "pool", "folds", "temperatures", "oof_acc", "candidates")}
    else:
        w = _weights(weights, len(members))
        w = w / w.sum()
        val_acc = acc(vote_predictions(val_list, vote, w)) if len(labels) else None
        pred = vote_predictions([m.test_probs for m in members], vote, w)          # (n_test,)
        label = f"ensemble ({vote} vote)"
    table = [{"member": str(m.run_dir), "val_acc": acc(m.val_probs.argmax(axis=1)), "weight": float(wk),
              "mode": m.ids.inference_mode} for m, wk in zip(members, w)]
    if auto:
        for row, t in zip(table, extra["temperatures"]):
            row["temperature"] = t
    table.append({"member": label, "val_acc": val_acc, "weight": float(w.sum()),
                  **({"oof_acc": extra["oof_acc"]} if auto else {})})

    speakers, data_dir = member_speakers(members[0])
    name = name or f"{vote}-{len(members)}members-{time.strftime('%Y%m%d-%H%M%S')}"
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise KitError(f"--name {name!r}: give a plain file name (no folders, not starting with '.')")
    out_dir = Path(out_dir)
    csv_path, manifest_path = out_dir / f"{name}.csv", out_dir / f"{name}.json"
    frame = pd.DataFrame({"Id": members[0].ids.test, "Category": [speakers[int(k)] for k in pred]})
    write_csv(csv_path, frame)
    problems = validate_submission(csv_path, data_dir)
    if problems:                   # a safety net: member_speakers checked ids and classes
        raise KitError(f"{csv_path}: written but invalid for {data_dir}: {problems[0]}")
    SubmissionManifest(
        name=name, vote=vote, weights=[float(x) for x in w],
        weights_mode="auto" if auto else ("given" if weights is not None else "equal"), **extra,
        members=[str(m.run_dir.resolve()) for m in members],
        member_settings=[m.ids.settings() for m in members],
        member_test_probs_sha256=[sha256_file(m.run_dir / "test_probs.npy") for m in members],
        csv=str(csv_path.resolve()), csv_sha256=sha256_file(csv_path), data_dir=data_dir,
        n_val=int(len(labels)), table=table, val_acc=val_acc, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        trained_on=trained_on(run_dirs) or None,
    ).save(manifest_path)
    return {"csv": csv_path, "manifest": manifest_path, "table": table, "val_acc": val_acc,
            "weights": [float(x) for x in w], **extra}
