"""Calibrating members and pooling them: a temperature per member fitted on validation (NLL),
calibrated log-probabilities pooled by a weighted geometric or arithmetic mean, and the pooling
weights fitted to minimise the pooled NLL.
"""
from __future__ import annotations

import numpy as np

from kit.ensemble.votes import check_weights
from kit.errors import KitError

T_RANGE = (0.05, 20.0)           # temperatures fit_temperature may return
PROB_FLOOR = 1e-30               # float32 softmax underflows to 0; log(0) would poison the sums


def log_probs(probs) -> np.ndarray:
    """Member probabilities (N, C) -> log-probabilities (N, C) float64, zeros floored; NaN or inf
    refused (every fit below would turn it into NaN temperatures and weights)."""
    probs = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(probs).all():
        raise KitError("member probabilities hold NaN or inf (a diverged run); leave it out of the vote "
                       "or train it again")
    return np.log(np.maximum(probs, PROB_FLOOR))


def _require_finite_logp(logp, what: str) -> np.ndarray:
    logp = np.asarray(logp, dtype=np.float64)
    if not np.isfinite(logp).all():
        raise KitError(f"{what}: log-probabilities hold NaN or inf (a diverged member?); "
                       "give probabilities through log_probs, which refuses them")
    return logp


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
    logp = _require_finite_logp(logp, "fit_temperature")
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


# ---------------------------------------------------------------- pooling members and their weights
POOLS = ("geo", "mean")   # geo: weighted mean of log-probs, renormalised; mean: of probabilities


def pool_log_probs(cal_logps, weights, pool: str) -> np.ndarray:
    """Pooled log-probabilities (N, C) of M calibrated members (M arrays (N, C)), weights (M,)."""
    # all-zero or NaN weights would leave nothing to pool (once an AttributeError on the int 0)
    w = check_weights(weights, len(cal_logps))
    w = w / w.sum()
    if pool == "geo":
        z = sum(wk * lp for wk, lp in zip(w, cal_logps, strict=True) if wk > 0)     # (N, C)
        return _log_softmax(z)
    if pool == "mean":
        p = sum(wk * np.exp(lp) for wk, lp in zip(w, cal_logps, strict=True) if wk > 0)
        return np.log(np.maximum(p, PROB_FLOOR))
    raise KitError(f"pool {pool!r}: choose one of {', '.join(POOLS)}")


def fit_weights(cal_logps, labels, pool: str = "geo", steps: int = 300, tol: float = 1e-9) -> np.ndarray:
    """Weights on the simplex (M,) minimising the NLL of the pooled calibrated members.

    mean pool: EM for mixture weights (each step provably lowers the NLL, no step size).
    geo pool: the NLL is convex in the weights; exponentiated gradient with a step that
    halves whenever a step would raise the loss.
    """
    labels = np.asarray(labels, dtype=np.int64)
    cal_logps = [_require_finite_logp(lp, "fit_weights") for lp in cal_logps]
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
        grad = np.array([((p * lk).sum(axis=1) - pk).mean() for lk, pk in zip(cal_logps, picked, strict=True)])
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
