"""Ensembling predicted run dirs: hard and soft (weighted) votes, weights chosen on validation.

`ensemble_runs` reads each member's val/test probabilities (written by `kit predict`) and
writes a submission CSV plus a JSON manifest saying exactly what went into it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.errors import KitError
from kit.fsio import sha256_file, write_csv, write_json

VOTES = ("hard", "soft")


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
    # isclose: weights like 0.1 + 0.2 must tie with 0.3
    tied = np.isclose(votes, votes.max(axis=1, keepdims=True), rtol=1e-9, atol=1e-12)
    summed = np.tensordot(w, probs, axes=1)                                   # (N, C)
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
        if vote == "hard":   # same rule as hard_vote: most votes, ties by summed probability
            vote_sum = bag_votes.copy()
            vote_sum[rows, votes[k]] += 1
            tied = vote_sum == vote_sum.max(axis=1, keepdims=True)
            pred = np.where(tied, prob_sum, -np.inf).argmax(axis=1)
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


# ---------------------------------------------------------------- members on disk
@dataclass
class Member:
    run_dir: Path
    ids: dict
    val_probs: np.ndarray      # (n_val, C)
    test_probs: np.ndarray     # (n_test, C)

    @property
    def val_labels(self) -> np.ndarray:
        return np.asarray(self.ids["val_labels"], dtype=np.int64)


def load_member(run_dir: str | os.PathLike) -> Member:
    """A predicted run dir's ids and probabilities, with a clear error if prediction is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KitError(f"{run_dir}: run dir not found")
    files = [run_dir / n for n in ("ids.json", "val_probs.npy", "test_probs.npy")]
    for f in files:
        if not f.is_file():
            raise KitError(f"{run_dir}: no {f.name}; run `kit predict {run_dir}` first")
    try:
        ids = json.loads(files[0].read_text(encoding="utf-8"))
        val, test = np.load(files[1]), np.load(files[2])
    except (ValueError, OSError) as e:
        raise KitError(f"{run_dir}: unreadable prediction files ({e}); "
                       f"run `kit predict {run_dir}` again") from None
    for key in ("val", "val_labels", "test"):
        if key not in ids:
            raise KitError(f"{files[0]}: lacks {key!r}; run `kit predict {run_dir}` again")
    if val.shape[0] != len(ids["val"]) or test.shape[0] != len(ids["test"]) or val.shape[1:] != test.shape[1:]:
        raise KitError(f"{run_dir}: val_probs/test_probs shapes {val.shape}/{test.shape} do not match "
                       f"ids.json; run `kit predict {run_dir}` again")
    return Member(run_dir, ids, val, test)


def check_compatible(members: list[Member]) -> None:
    """Members must share the validation split, the test list and the classes."""
    first = members[0]
    for other in members[1:]:
        if other.ids["val"] != first.ids["val"] or other.ids["val_labels"] != first.ids["val_labels"]:
            raise KitError(f"{first.run_dir} and {other.run_dir} were validated on different splits; "
                           "ensemble only runs trained with the same data.split_seed and val_fraction")
        if other.ids["test"] != first.ids["test"]:
            raise KitError(f"{first.run_dir} and {other.run_dir} predicted different test sets "
                           "(different data dirs?)")
        if other.test_probs.shape[1] != first.test_probs.shape[1]:
            raise KitError(f"{first.run_dir} has {first.test_probs.shape[1]} classes but "
                           f"{other.run_dir} has {other.test_probs.shape[1]}")


def _speakers(member: Member) -> tuple[list[str], str]:
    """Class index -> speaker id string, from the data dir the member was predicted on,
    after checking that its test list is that data dir's (so the CSV will be valid)."""
    from kit.data import read_layout

    data_dir = member.ids.get("data_dir")
    if not data_dir:
        from kit.config import from_dict, load_toml

        data_dir = from_dict(load_toml(member.run_dir / "config.toml")).data.data_dir
    layout = read_layout(data_dir)
    if member.ids["test"] != [u.path for u in layout.test]:
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


def ensemble_runs(run_dirs, vote: str = "hard", weights=None, name: str | None = None,
                  out_dir: str | os.PathLike = "submissions") -> dict:
    """Vote over predicted run dirs and write OUT/NAME.csv (Id,Category) and OUT/NAME.json.

    Returns {csv, manifest, table: [{member, val_acc}, ..., ensemble row], val_acc, weights}.
    """
    import pandas as pd

    from kit.submission import validate_submission

    if vote not in VOTES:
        raise KitError(f"--vote {vote!r}: choose hard or soft")
    if not run_dirs:
        raise KitError("no run dirs given to ensemble")
    members = [load_member(d) for d in run_dirs]
    check_compatible(members)
    labels = members[0].val_labels
    val_list = [m.val_probs for m in members]
    if isinstance(weights, str):
        if weights != "auto":
            raise KitError(f"weights {weights!r}: give 'auto' or a list of numbers")
        w = select_weights(val_list, labels, vote=vote)
    else:
        w = _weights(weights, len(members))
        w = w / w.sum()

    def acc(pred):
        return float((pred == labels).mean()) if len(labels) else None

    table = [{"member": str(m.run_dir), "val_acc": acc(m.val_probs.argmax(axis=1)), "weight": float(wk)}
             for m, wk in zip(members, w)]
    val_acc = acc(vote_predictions(val_list, vote, w)) if len(labels) else None
    table.append({"member": f"ensemble ({vote} vote)", "val_acc": val_acc, "weight": float(w.sum())})
    pred = vote_predictions([m.test_probs for m in members], vote, w)          # (n_test,)

    speakers, data_dir = _speakers(members[0])
    name = name or f"{vote}-{len(members)}members-{time.strftime('%Y%m%d-%H%M%S')}"
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise KitError(f"--name {name!r}: give a plain file name (no folders, not starting with '.')")
    out_dir = Path(out_dir)
    csv_path, manifest_path = out_dir / f"{name}.csv", out_dir / f"{name}.json"
    frame = pd.DataFrame({"Id": members[0].ids["test"], "Category": [speakers[int(k)] for k in pred]})
    write_csv(csv_path, frame)
    problems = validate_submission(csv_path, data_dir)
    if problems:                   # a safety net: _speakers checked ids and classes already
        raise KitError(f"{csv_path}: written but invalid for {data_dir}: {problems[0]}")
    write_json(manifest_path, {
        "name": name,
        "vote": vote,
        "weights": [float(x) for x in w],
        "weights_mode": "auto" if isinstance(weights, str) else ("given" if weights is not None else "equal"),
        "members": [str(m.run_dir.resolve()) for m in members],
        "member_settings": [{k: m.ids.get(k) for k in ("window", "hop", "full", "average", "which")}
                            for m in members],
        "member_test_probs_sha256": [sha256_file(m.run_dir / "test_probs.npy") for m in members],
        "csv": str(csv_path.resolve()),
        "csv_sha256": sha256_file(csv_path),
        "data_dir": data_dir,
        "n_val": int(len(labels)),
        "table": table,
        "val_acc": val_acc,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return {"csv": csv_path, "manifest": manifest_path, "table": table, "val_acc": val_acc,
            "weights": [float(x) for x in w]}
