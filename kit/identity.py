"""What defines a run (identity.json): its data's digests, its config less the settings that do not
change what its weights mean, its budget and input files; read, compared and described for kit.runs.
"""
from __future__ import annotations

import json
import uuid
from pathlib import Path

from kit.config import RunConfig, from_dict, load_toml, to_dict
from kit.errors import KitError, first_line
from kit.fsio import sha256_file

IDENTITY = "identity.json"
# Settings that do not change what a run's weights mean, so they are left out of its identity:
# time budgets (a recipe's --minutes recomputes train.minutes from elapsed time on every re-run),
# switches for speed with the same maths (threads, torch.compile, where the store lives),
# prediction settings, the run's label, the experiment tracker that watches it (so a run resumes
# with tracking turned on or off), and the data dir's path: the data fingerprint covers the data
# itself, so a copied or moved data dir is still the same data. So with the paths of the files a run
# trains from besides the data (INPUT_FILES): their contents are in the identity's "inputs", so a
# moved or copied runs folder keeps its fine-tunes and students.
NOT_IDENTITY = ("name", "data.data_dir", "data.store_on_gpu", "data.allow_external_labels", "train.minutes",
                "train.max_minutes", "train.stop_step", "train.cpu_threads", "train.compile", "train.log_with", "infer",
                "data.pseudo_labels", "train.teacher", "train.init_from")
START_OVER = ("start over with --fresh (of `kit train`, `kit distill` or `kit recipe run`: the old run is moved "
              "aside, nothing is deleted)")


def _flat(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _defining(key: str) -> bool:
    return not any(key == k or key.startswith(k + ".") for k in NOT_IDENTITY)


def flat_config(cfg) -> dict:
    """The resolved config as flat `section.key: value`."""
    return _flat(to_dict(cfg))


def config_identity(cfg) -> dict:
    """The resolved config as flat `section.key: value`, less the settings in NOT_IDENTITY."""
    return {k: v for k, v in flat_config(cfg).items() if _defining(k)}


def data_identity(store) -> dict:
    """The json files' hash and the packed features' content digest (dir kept only to report)."""
    # deferred: kit.data brings numpy, which this module's light importers (kit.records, and
    # through it every `kit kaggle` command and Kaggle worker process) never need
    from kit.data import layout_hash

    return {"dir": str(Path(store.layout.data_dir).resolve()), "layout": layout_hash(store.layout.data_dir),
            "features": store.content_digest}


def run_identity(cfg, store, budget: str | None = None, run_dir: str | Path | None = None) -> dict:
    """What defines a run trained from cfg on store's data. n_mels/n_classes come from the data
    (as training fills them in). run_dir: keep its recorded budget name when budget is None, and its run id
    ("run": made once, when the run starts; kit.written.record_written ties its checkpoints.json to it), which
    identity_changes never compares."""
    cfg = from_dict(to_dict(cfg))
    cfg.model.n_mels, cfg.model.n_classes = store.n_mels, len(store.speakers)
    before = (read_identity(run_dir) or {}) if run_dir is not None else {}
    if budget is None:
        budget = before.get("budget")
    identity = {"version": 1, "data": data_identity(store), "config": config_identity(cfg), "budget": budget,
                "run": before.get("run") if isinstance(before.get("run"), str) else uuid.uuid4().hex}
    inputs = input_identity(cfg)
    if inputs:                          # pseudo-labels, a teacher, starting weights: their contents
        identity["inputs"] = inputs
    return identity


def require_same_data(run_dir: str | Path, data_dir: str | Path) -> None:
    """Refuse to predict or vote a run on a data dir whose json files changed since the run trained
    on it: its class indices would name other speakers (mapping.json), its split other utterances.
    Runs from before identity.json recorded the layout are not checked."""
    recorded = ((read_identity(run_dir) or {}).get("data") or {}).get("layout")
    if not recorded:
        return
    # deferred: kit.data brings numpy and torch, which this module's light importers never need
    from kit.data import layout_hash

    try:
        now = layout_hash(data_dir)
    except OSError as e:
        why = "it is not there" if isinstance(e, FileNotFoundError) else f"{e.filename}: {e.strerror}"
        raise KitError(f"{data_dir}: the data dir {run_dir} was trained and predicted on cannot be read ({why}: "
                       "moved or deleted?); put the data back at that path") from None
    if now != recorded:
        raise KitError(f"{data_dir}: its metadata.json, mapping.json or testdata.json changed since {run_dir} "
                       f"trained on it (layout {recorded}, now {now}), so the model's classes would name other "
                       f"speakers; restore those files, or train the run again on the data as it is now "
                       f"(`kit train ... --fresh`)")


INPUT_FILES = ("data.pseudo_labels", "train.teacher", "train.init_from")


def input_identity(cfg) -> dict:
    """Content digests of the files a run trains from besides the data (by setting name)."""
    out = {}
    for key in INPUT_FILES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value:
            path = Path(value)
            path = path / "last.pt" if path.is_dir() else path
            out[key] = sha256_file(path) if path.is_file() else None
    return out


def read_identity(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / IDENTITY
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:     # RecursionError: nested too deeply to parse
        raise KitError(f"{path}: unreadable run identity ({first_line(e)}); {START_OVER}") from None
    if not (isinstance(value, dict) and isinstance(value.get("config"), dict) and isinstance(value.get("data"), dict)):
        raise KitError(f"{path}: malformed run identity; {START_OVER}")
    return value


def legacy_identity(run_dir: Path) -> dict | None:
    """For a run dir from before identity.json: its config.toml, and its data dir by path only."""
    path = run_dir / "config.toml"
    if not path.is_file():
        return None
    try:
        cfg = from_dict(load_toml(path), where=str(path))
    except KitError:
        return {"legacy": True, "data": {"dir": None}, "config": {"config.toml": "unreadable"}}
    return {"legacy": True, "data": {"dir": str(Path(cfg.data.data_dir).resolve())},
            "config": config_identity(cfg)}


def identity_changes(old: dict, new: dict, config_prefix: str | tuple[str, ...] = "") -> list[str]:
    """What differs between two identities, as short phrases ("data", "model.d_model 16 -> 32",
    "budget quick -> full"). Only config keys starting with config_prefix (or one of them) are compared; a key
    the old identity lacks (a setting added to kit since) counts only if it is not the default."""
    changes = []
    was, now = old.get("data", {}), new["data"]
    if "features" in was:
        if (was.get("layout"), was.get("features")) != (now["layout"], now["features"]):
            changes.append(f"data ({data_change(was, now)})")
    elif was.get("dir") != now["dir"]:
        changes.append(f"data ({was.get('dir')} -> {now['dir']})")
    changes += config_changes(old.get("config", {}), new["config"], config_prefix)
    if not config_prefix:
        changes += input_changes(old, new)
    if not old.get("legacy") and not config_prefix and old.get("budget") != new.get("budget"):
        changes.append(f"budget {old.get('budget')} -> {new.get('budget')}")
    return changes


def data_change(was: dict, now: dict) -> str:
    """What changed in the data, in a few words: its json files, or the contents of its feature files
    (the identity keeps one digest of them all, so not which), and where it is when it moved too (probe
    45: a copied dir with one file changed was reported as the two paths, as if the move were the change)."""
    what = []
    if was.get("layout") != now["layout"]:
        what.append("its metadata.json, mapping.json or testdata.json changed")
    if was.get("features") != now["features"]:
        what.append("the contents of its feature files changed")
    where = "" if was.get("dir") == now["dir"] else f"; the dir moved too: {was.get('dir')} -> {now['dir']}"
    return " and ".join(what) + where


def input_changes(old: dict, new: dict) -> list[str]:
    """["contents of data.pseudo_labels"] when the files a run was made from (its pseudo-labels, its
    teacher: the identity's inputs) hold other contents now; [] when they do not."""
    was, now = old.get("inputs", {}), new.get("inputs", {})
    changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
    return [f"contents of {', '.join(changed)}"] if changed else []


def config_changes(before: dict, after: dict, prefix: str | tuple[str, ...] = "") -> list[str]:
    """What differs between two identities' configs ("model.n_heads 2 -> 4"), for the keys in
    `after` that start with prefix; a key `before` lacks (a setting added to kit since) counts only
    if it is not the default."""
    defaults = config_identity(RunConfig())
    return [f"{key} {before.get(key, defaults.get(key))!r} -> {value!r}" for key, value in sorted(after.items())
            if key.startswith(prefix) and before.get(key, defaults.get(key)) != value]


def describe(changes: list[str], most: int = 4) -> str:
    shown = ", ".join(changes[:most])
    return shown + (f" and {len(changes) - most} more" if len(changes) > most else "")


# The settings a run cannot resume under changed: the model's shape, and what its validation split is.
RESUME_KEYS = ("model.", "data.split_seed", "data.val_fraction", "data.train_on_val")


def check_resume(run_dir: str | Path, identity: dict) -> None:
    """Refuse to resume run_dir on other data, with another model shape or another validation split
    (probe 41: a resume with --set data.split_seed=7 wrote a new split.json, and validation then held
    utterances the weights had trained on; the vote's calibration and its "honest" figure with them)."""
    run_dir = Path(run_dir)
    old = read_identity(run_dir) or legacy_identity(run_dir)
    if old is None:
        return
    # the data, the model's shape, the split, and the pseudo-labels or teacher it trained from (probe 41:
    # a round replaced by `kit pseudo --out` was trained on, and identity.json then named the new one)
    changes = identity_changes(old, identity, RESUME_KEYS) + ([] if old.get("legacy") else input_changes(old, identity))
    if changes:
        raise KitError(f"{run_dir}: cannot resume: it was trained on other data, another model shape, another "
                       f"validation split or other pseudo-labels ({describe(changes)}); {START_OVER}, or train "
                       "into another --out")


def check_resumed_step(run_dir: str | Path, step: int, train) -> None:
    """Refuse a step-based resume whose train.max_steps is below the step the run has reached (probe 41:
    at step 30, `--set train.max_steps=10` exited 0, and config.toml and identity.json then said 10, so a
    recipe asking for 10 steps would take the 30-step run as its member). `train`: the run's TrainConfig."""
    if not train.minutes and 0 < train.max_steps < step:
        raise KitError(f"{run_dir}: cannot resume with train.max_steps {train.max_steps}: it has trained {step} "
                       f"steps already; give at least {step}, or {START_OVER}")
