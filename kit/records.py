"""The files one stage hands to the next, as dataclasses: a run's ids.json (what its probability
rows are and how they were predicted) and a submission's manifest NAME.json (what went into it).

`load` is tolerant: keys a file lacks (written by an older kit) take their defaults, keys it has
that kit no longer knows are ignored. `save` writes the keys kit has always written, in order.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from kit.config import CHECKPOINTS, load_toml
from kit.errors import KitError, first_line
from kit.fsio import read_json, sha256_file, write_json
from kit.identity import read_identity
from kit.names import OLD_SUFFIX
from kit.runs import lock_holder
from kit.written import lost_record, written_by_run


def _read_json(path: Path, what: str, fix: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:     # Recursion: nested too deeply
        raise KitError(f"{path}: unreadable {what} ({first_line(e)}){fix}") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: {what} is not a JSON object{fix}")
    return data


def _known(cls, data: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _text(value) -> bool:
    return isinstance(value, str)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _texts(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _integers(value) -> bool:
    return isinstance(value, list) and all(_integer(v) for v in value)


def _wrong_types(data: dict, checks: dict, required=()) -> list[str]:
    """The keys of data whose value fails its check, so a hand-edited or foreign file is refused in
    one line at load instead of as a TypeError deep in a reader. A key the file lacks is left to the
    dataclass default (older kits), and so is null, except for the `required` keys."""
    return [k for k, ok in checks.items()
            if (k in data and data[k] is not None and not ok(data[k])) or (k in required and data.get(k) is None)]


# ---------------------------------------------------------------- a run's predictions: ids.json
@dataclass
class PredictionIds:
    """ids.json, written by `kit predict` beside val_probs.npy and test_probs.npy."""
    val: list[str]                          # validation feature paths, in val_probs.npy's row order
    val_labels: list[int]                   # their class indices
    test: list[str]                         # test feature paths, in test_probs.npy's row order
    window: int | None = None               # sliding-window frames and hop
    hop: int | None = None
    full: bool = False                      # whole utterances (older files say only this)
    mode: str | None = None                 # sliding | full; None in files from before modes
    mode_requested: str | None = None       # what was asked: sliding | full | auto
    average: str | None = None              # probs | logits: how windows were averaged
    which: str | None = None                # checkpoint: best | last | avg
    checkpoint_sha256: str | None = None    # of <which>.pt as predicted from; None in older files
    data_dir: str | None = None             # None in old files: the run's config names it
    val_acc: float | None = None            # of the chosen mode
    val_acc_centre: float | None = None
    val_acc_full: float | None = None
    val_acc_sliding: float | None = None
    val_nll_full: float | None = None       # after temperature scaling
    val_nll_sliding: float | None = None
    val_probs_sha256: str | None = None     # of val_probs.npy and test_probs.npy as written; None in
    test_probs_sha256: str | None = None    # older files (their bytes are then not checked)
    data_features: str | None = None        # the packed features' content digest predicted from, and the
    data_key: str | None = None             # store key (files' names, sizes, times) then; None in older files

    REQUIRED = ("val", "val_labels", "test")

    @property
    def inference_mode(self) -> str:
        """How the test probabilities were made: sliding | full (old files: from `full`)."""
        return self.mode or ("full" if self.full else "sliding")

    def settings(self) -> dict:
        """The prediction settings a manifest records for each member."""
        return {"window": self.window, "hop": self.hop, "full": self.full, "average": self.average,
                "which": self.which, "mode": self.inference_mode, "checkpoint_sha256": self.checkpoint_sha256}

    @classmethod
    def from_dict(cls, data: dict, where: str = "ids.json") -> PredictionIds:
        """Refused (KitError naming `where`) when a field has the wrong type, or when only one of the
        two digests is there: kit writes both and older kits neither, so one alone means the other
        was removed, and the file it vouched for would be voted unchecked."""
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise KitError(f"{where}: lacks {missing[0]!r}")
        bad = _wrong_types(data, _IDS_CHECKS, cls.REQUIRED)
        if bad:
            raise KitError(f"{where}: not prediction ids kit wrote ({', '.join(bad)}: wrong type)")
        if len(data["val"]) != len(data["val_labels"]):
            raise KitError(f"{where}: {len(data['val'])} validation utterances but {len(data['val_labels'])} labels")
        digests = [k for k in _DIGEST_KEYS if data.get(k) is not None]
        if len(digests) == 1:
            raise KitError(f"{where}: records only one of {' and '.join(_DIGEST_KEYS)} ({digests[0]}); kit "
                           "writes both, so the probability file without one cannot be trusted")
        return cls(**_known(cls, data))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PredictionIds:
        """ids.json of a run dir (or its path); KitError saying to predict again if unusable."""
        path = Path(path)
        path = path / "ids.json" if path.is_dir() else path
        fix = f"; run `kit predict {path.parent}` again"
        data = _read_json(path, "prediction ids", fix)
        try:
            return cls.from_dict(data, str(path))
        except KitError as e:
            raise KitError(f"{e}{fix}") from None

    def recorded_sha256(self, name: str) -> str | None:
        """The digest ids.json recorded for val_probs.npy or test_probs.npy (None: an older kit's)."""
        return {"val_probs.npy": self.val_probs_sha256, "test_probs.npy": self.test_probs_sha256}[name]

    def to_dict(self) -> dict:
        """The keys in order; the digests (of the probability files, of the data) only when known, so
        ids read from an older kit's file save with the keys it had."""
        return {k: v for k, v in asdict(self).items() if not (k in _OPTIONAL_KEYS and v is None)}

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())


_DIGEST_KEYS = ("val_probs_sha256", "test_probs_sha256")
_DIGESTED = ("val_probs.npy", "test_probs.npy")
_OPTIONAL_KEYS = (*_DIGEST_KEYS, "data_features", "data_key")
_IDS_CHECKS = {"val": _texts, "val_labels": _integers, "test": _texts, "window": _integer, "hop": _integer,
               "full": lambda v: isinstance(v, bool),
               **dict.fromkeys(("mode", "mode_requested", "average", "checkpoint_sha256", "data_dir",
                                "data_features", "data_key", *_DIGEST_KEYS), _text),
               "which": lambda v: v is None or v in CHECKPOINTS,
               **dict.fromkeys(("val_acc", "val_acc_centre", "val_acc_full", "val_acc_sliding", "val_nll_full",
                                "val_nll_sliding"), _number)}


def refuse_while_training(run_dir, then: str) -> None:
    """KitError while a trainer holds run_dir's lock: its checkpoints are about to change, so
    predictions made or read now would not describe the run it leaves. then: what to do after."""
    pid = lock_holder(run_dir)
    if pid:
        raise KitError(f"{run_dir}: a trainer (pid {pid}) is training this run now; wait for it to finish "
                       f"(or stop it), then {then}")


# ---------------------------------------------------------------- a submission: NAME.json
AUTO_KEYS = ("method", "pool", "folds", "temperatures", "oof_acc", "candidates",   # only for a chosen ensemble
             "trained_on", "fitted_on")     # only with pseudo-labels/teachers; only for a refit's vote


_MANIFEST_TEXT = ("name", "vote", "weights_mode", "method", "pool", "csv", "csv_sha256", "data_dir", "created",
                  "competition")
MANIFEST_CORE = ("vote", "members", "csv")        # in every manifest `kit ensemble` has written


@dataclass
class SubmissionManifest:
    """NAME.json beside submissions/NAME.csv, written by `kit ensemble`; `kit submit` reads the
    data dir, members and vote from it, `kit report` the ensemble's numbers."""
    name: str | None = None
    vote: str | None = None                 # hard | soft | auto
    weights: list[float] = field(default_factory=list)
    weights_mode: str | None = None         # equal | given | auto
    method: str | None = None               # auto only: single | hard | equal | weighted
    pool: str | None = None                 # auto only: geo | mean
    folds: int | None = None
    temperatures: list[float] | None = None
    oof_acc: float | None = None            # out-of-fold validation accuracy (honest)
    candidates: dict | None = None          # method -> {oof_acc, oof_nll, val_acc, weights}
    members: list[str] = field(default_factory=list)        # run dirs, resolved
    member_settings: list[dict] = field(default_factory=list)
    member_test_probs_sha256: list[str] = field(default_factory=list)
    csv: str | None = None
    csv_sha256: str | None = None
    data_dir: str | None = None
    competition: str | None = None          # the data's (kit.layout.data_competition), where `kit submit` sends it
    n_val: int | None = None
    table: list[dict] = field(default_factory=list)
    val_acc: float | None = None            # in-sample validation accuracy of the written vote
    created: str | None = None
    trained_on: list[dict] | None = None    # members trained on test utterances too: which files (kit.pseudo)
    fitted_on: list[str] | None = None      # a refit's vote: the run dirs whose validation predictions fitted it

    @property
    def label(self) -> str:
        """A name for tables: the manifest's name, else its CSV's stem."""
        return self.name or Path(self.csv or "ensemble").stem

    @property
    def voted(self) -> str:
        """The vote as a ledger row records it: e.g. 'auto: weighted' (what the auto vote chose), 'soft'."""
        return f"{self.vote}: {self.method}" if self.method and self.vote else self.vote or ""

    @property
    def description(self) -> str:
        """The method (auto), or e.g. 'hard vote (equal weights)'."""
        return self.method or f"{self.vote or '?'} vote ({self.weights_mode or 'equal'} weights)"

    @classmethod
    def from_dict(cls, data: dict) -> SubmissionManifest:
        return cls(**_known(cls, data))

    @classmethod
    def load(cls, path: str | os.PathLike, whole: bool = False) -> SubmissionManifest:
        """NAME.json, refused in one line when a field kit submit reads has the wrong type. whole: also
        when it lacks what every `kit ensemble` wrote (MANIFEST_CORE), for a reader given the file by
        name (`kit report --ensemble`), where any JSON object would otherwise pass as an empty vote."""
        path = Path(path)
        data = _read_json(path, "submission manifest", "")
        checks = {**dict.fromkeys(_MANIFEST_TEXT, _text), "members": _texts}
        bad = _wrong_types({"members": [], **data}, checks, ("members",))     # null members: refused too
        if bad:
            raise KitError(f"{path}: not a submission manifest kit wrote ({', '.join(bad)}: wrong type); "
                           f"re-run `kit ensemble`, or delete it and pass --data DIR")
        lacking = [k for k in MANIFEST_CORE if data.get(k) is None] if whole else []
        if lacking:
            raise KitError(f"{path}: not a submission manifest (no {', '.join(lacking)}); give the NAME.json "
                           "that `kit ensemble` wrote beside its CSV")
        return cls.from_dict(data)

    @classmethod
    def beside(cls, csv_path: str | os.PathLike) -> SubmissionManifest | None:
        """The manifest beside a CSV (manifest_path), or None when there is none."""
        path = manifest_path(csv_path)
        return cls.load(path) if path.is_file() else None

    def to_dict(self) -> dict:
        """The keys as `kit ensemble` writes them: the auto-only ones only when set."""
        data = asdict(self)
        return {k: v for k, v in data.items() if not (k in AUTO_KEYS and v is None)}

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())


_KEPT = re.compile(rf"(?P<name>.+)\.csv(?P<kept>{OLD_SUFFIX.pattern})")


def manifest_path(csv_path: str | os.PathLike) -> Path:
    """Where a CSV's manifest is: NAME.json beside NAME.csv, and NAME.json.old-<stamp> beside
    NAME.csv.old-<stamp>, the pair `kit ensemble` kept when it wrote a submitted name again
    (kit.submission.keep_submitted), so a kept CSV submits with its members and vote."""
    csv_path = Path(csv_path)
    kept = _KEPT.fullmatch(csv_path.name)
    if kept:
        return csv_path.with_name(f"{kept['name']}.json{kept['kept']}")
    return csv_path.with_suffix(".json")


def predicted_which(run_dir) -> str:
    """The checkpoint (best | last | avg) a run was last predicted from; best when it has not been
    predicted (or its ids.json is unusable)."""
    try:
        return PredictionIds.load(run_dir).which or "best"
    except KitError:
        return "best"


def predicted_mode(run_dir, default: str = "auto") -> str:
    """The inference mode (full | sliding) a predicted run dir chose; `default` when it has not
    been predicted (or its ids.json is unusable)."""
    try:
        return PredictionIds.load(run_dir).inference_mode
    except KitError:
        return default


PREDICTION_FILES = ("ids.json", "val_probs.npy", "test_probs.npy")


def stale_checkpoint(run_dir, ids: PredictionIds, which: str | None = None) -> Path | None:
    """The checkpoint <which>.pt (default: the one ids.json names) when it is on disk and the run's
    predictions did not come from it; None when they did, or when there is no such checkpoint
    (predictions copied without their weights still vote).

    ids.json records the checkpoint's SHA-256; an older one without it is judged by time: the
    probabilities must have been written after the checkpoint, and from the same `which`."""
    run_dir = Path(run_dir)
    which = which or ids.which or "best"
    ckpt = run_dir / f"{which}.pt"
    if not ckpt.is_file():
        return None
    if ids.checkpoint_sha256:
        return None if sha256_file(ckpt) == ids.checkpoint_sha256 else ckpt
    if (ids.which or "best") != which:
        return ckpt
    written = min((run_dir / name).stat().st_mtime for name in PREDICTION_FILES[1:])
    return ckpt if written < ckpt.stat().st_mtime else None


def foreign_predictions(run_dir, ids: PredictionIds, which: str | None = None) -> str | None:
    """Why the run's predictions are not of a checkpoint its own training wrote, or None: ids.json's
    checkpoint digest is not the <which>.pt that checkpoints.json records (another run's checkpoint
    and predictions copied in together; or predictions of a checkpoint trained on since). An older kit's files
    (no digest, no record) pass; a lost record is said as such (kit.written.lost_record)."""
    which = which or ids.which or "best"
    if not ids.checkpoint_sha256 or written_by_run(Path(run_dir) / f"{which}.pt", ids.checkpoint_sha256):
        return None
    return lost_record(run_dir, f"its {which}.pt and predictions") or (
        f"{run_dir}: its predictions come from a {which}.pt that this run's training did not write last "
        f"(checkpoints.json records another: another run's checkpoint and predictions copied in, or "
        f"predictions older than its training); put the run's own files back, or run `kit predict "
        f"{run_dir}{'' if which == 'best' else ' --which ' + which}` on its own {which}.pt")


def predictions_current(run_dir, which: str | None = None) -> bool:
    """Whether the run's val/test probabilities came from the checkpoint <which>.pt now on disk
    (which: best | last | avg; default the one ids.json names), made as its config.toml's [infer]
    asks. False when the run has not been predicted, its ids.json or config.toml is unusable, or
    that checkpoint is missing."""
    run_dir = Path(run_dir)
    if not all((run_dir / name).is_file() for name in PREDICTION_FILES):
        return False
    try:
        ids = PredictionIds.load(run_dir)
    except KitError:
        return False
    which = which or ids.which or "best"
    if not (run_dir / f"{which}.pt").is_file() or stale_checkpoint(run_dir, ids, which) is not None:
        return False
    if any((recorded := ids.recorded_sha256(f)) and recorded != sha256_file(run_dir / f) for f in _DIGESTED):
        return False                            # not the files ids.json names (a kill between them: probe 46)
    try:
        if foreign_predictions(run_dir, ids, which):        # predicting again refuses the foreign file itself
            return False
    except KitError:                            # an unreadable checkpoints.json: predicting names it
        return False
    config = run_dir / "config.toml"
    if not config.is_file():                    # nothing asks otherwise (and nothing could predict it again)
        return True
    try:                                        # made as the run's [infer] now asks (a recipe may change it)
        return not settings_changes(ids, load_toml(config).get("infer", {}))
    except KitError:                            # predicting names the unreadable config in one line
        return False


def settings_changes(ids: PredictionIds, infer: dict) -> list[str]:
    """How the predictions in ids.json were made against what a config's [infer] table asks:
    e.g. ["mode sliding -> full"]; [] when the same. A setting an older ids.json lacks is not compared."""
    asked = {"mode": "full" if infer.get("full") else infer.get("mode", "auto"), "window": infer.get("window"),
             "hop": infer.get("hop"), "average": infer.get("average")}
    made = {"mode": ids.mode_requested or (ids.inference_mode if asked["mode"] in ("full", "sliding") else None),
            "window": ids.window, "hop": ids.hop, "average": ids.average}     # older files: the mode made
    return [f"{k} {made[k]} -> {asked[k]}" for k in asked
            if made[k] is not None and asked[k] is not None and made[k] != asked[k]]


def trained_on(run_dirs) -> list[dict]:
    """For each member trained on test utterances too (pseudo-labels, a teacher, or starting
    weights of such a run): the files and their content digests from its identity.json, plus the
    pseudo-labelling round's numbers (pseudo.json beside the CSV) -- so a submission says exactly
    what it used."""
    out = []
    for run_dir in run_dirs:
        try:
            inputs = (read_identity(run_dir) or {}).get("inputs")
            cfg = load_toml(Path(run_dir) / "config.toml") if inputs else {}
        except KitError:                # an unreadable record: nothing to report for this member
            inputs = None
        if not inputs:
            continue
        entry = {"member": str(Path(run_dir).resolve()), "sha256": inputs}
        pseudo = cfg.get("data", {}).get("pseudo_labels")
        if pseudo:
            entry["pseudo_labels"] = pseudo
            record = Path(pseudo).with_name("pseudo.json")
            if record.is_file():
                stats = read_json(record, "a pseudo-labelling record")
                entry["pseudo"] = {k: stats.get(k) for k in ("test_count", "n_test", "threshold",
                                                             "estimated_precision", "target_precision", "method")}
        for key in ("teacher", "init_from"):
            if cfg.get("train", {}).get(key):
                entry[key] = cfg["train"][key]
        out.append(entry)
    return out
