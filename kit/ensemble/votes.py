"""Plain votes over members' probabilities: hard (majority of argmaxes) and soft (mean), equal or
weighted, and greedy forward selection of weights on validation (Caruana et al. 2004).
"""
from __future__ import annotations

import numpy as np

from kit.errors import KitError


def check_weights(weights, m: int) -> np.ndarray:
    """(M,) float weights: equal when None; KitError unless M finite, non-negative, not all zero."""
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (m,):
        raise KitError(f"{w.size} weights given for {m} ensemble members")
    with np.errstate(over="ignore"):
        total = w.sum()                 # inf for weights too large to add up (1e308,1e308)
    if (w < 0).any() or not np.isfinite(w).all() or not np.isfinite(total) or total <= 0:   # plain numbers: 1, nan
        raise KitError(f"weights {', '.join(f'{x:g}' for x in w.tolist())}: must be finite, non-negative and "
                       "not all zero")
    return w


def require_finite(probs_list, what: str = "") -> None:
    """KitError unless every member's probabilities (M arrays (N, C)) are finite: NaN argmaxes to
    class 0 and NaN weights drop a member silently, so a diverged member would decide the vote."""
    bad = [k for k, p in enumerate(probs_list) if not np.isfinite(np.asarray(p, dtype=np.float64)).all()]
    if bad:
        raise KitError(f"member {bad[0] + 1} of {len(probs_list)}: its {what + ' ' if what else ''}probabilities "
                       "hold NaN or inf (a diverged run); leave it out of the vote or train it again")


def _stacked(probs_list) -> np.ndarray:
    """M member probabilities (N, C) -> (M, N, C) float64, refused unless finite."""
    require_finite(probs_list)
    return np.stack([np.asarray(p, dtype=np.float64) for p in probs_list])


def soft_vote(probs_list, weights=None) -> np.ndarray:
    """(Weighted) mean of member probabilities: M arrays (N, C) -> (N, C)."""
    probs = _stacked(probs_list)                                               # (M, N, C)
    w = check_weights(weights, len(probs))
    return np.tensordot(w / w.sum(), probs, axes=1)                          # (N, C)


def hard_vote(probs_list, weights=None) -> np.ndarray:
    """Majority of the members' argmax predictions (weighted counts if weights): -> (N,).

    Ties go to the tied class with the largest summed (weighted) probability, then to the
    lowest class index, so the result never depends on member order.
    """
    probs = _stacked(probs_list)                                               # (M, N, C)
    w = check_weights(weights, len(probs))
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
    require_finite(val_probs_list, "validation")
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
    if best_counts is None:
        raise KitError(f"rounds {rounds}: at least one round of selection is needed")
    return best_counts / best_counts.sum()
