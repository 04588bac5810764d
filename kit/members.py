"""A recipe's members before any of them trains: their settings checked (a model that cannot be
built, a tracker not installed, a checkpoint [after] will not find); on disk, `--fresh` moves them
aside, the checks refuse a member another process is training, one made for other data or settings,
or one that cannot resume; and a changed [infer] table is brought to the members it does not retrain."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from kit.audition_record import AUDITION_FILE, JOURNAL_FILE, AuditionResult
from kit.config import to_dict
from kit.errors import KitError
from kit.identity import config_changes, config_identity, describe, read_identity, run_identity
from kit.layout import is_synthetic
from kit.models import check_model
from kit.names import is_stage_run
from kit.recipe import BUDGETS, Recipe, has_budget, member_config
from kit.records import predictions_current
from kit.rundir import RunDir
from kit.runs import holds_run, lock_holder, move_aside, old_name, reuse_changes, update_infer
from kit.train.trackers import check_installed


def start_over(root: Path, names: list[str], log: Callable[[str], None], decision: bool = True) -> None:
    """--fresh: the members' run dirs into one <root>.old-<time>/, with the audition's decision and its
    Optuna record and the stages' runs made from them (fine-tunes, pseudo-label rounds, the student)
    when `decision` (not under --only); none while a trainer works on any there."""
    folders = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []      # every member, not --only's
    if busy := [(d, pid) for d in folders if (pid := lock_holder(d))]:
        raise KitError(f"{busy[0][0]}: a trainer (pid {busy[0][1]}) is working on this member now (another "
                       "`kit recipe run` of these --runs?), so nothing was moved aside: wait for it, or stop it")
    dest = old_name(root)
    for name in names:
        if (root / name).exists():
            log(f"{name}: starting over; the old run moved to {move_aside(root / name, dest / name)}")
    staged = sorted(d.name for d in folders if is_stage_run(d.name)) if decision else []
    for record in [AUDITION_FILE, JOURNAL_FILE, *staged] if decision else ():
        if (root / record).exists():            # a decision over runs moved away would be read again
            dest.mkdir(parents=True, exist_ok=True)
            os.replace(root / record, dest / record)
    if staged:
        log(f"the stages' runs ({', '.join(staged)}) moved to {dest} with them")


def check_members(root: Path, names: list[str], recipe: Recipe, budget: str, data_dir: Path, store,
                  log: Callable[[str], None], auditioning: bool = False) -> None:
    """Refuse, before any training, a member another process is training, one whose run was made
    from other data, settings or budget, and one that cannot resume (last.pt gone). A member whose
    [infer] table the recipe has changed since is kept, and predicted again the new way. `auditioning`:
    names are an audition's candidates; those its decision on record pruned are not checked (never
    trained or voted again: probe 46, a pruned one without last.pt refused the vote of the survivors)."""
    stale, configs = [], {}
    decision = _decision(root) if auditioning else None
    for name in names:
        run_dir = root / name
        if decision is not None and name in decision.pruned:
            continue
        pid = lock_holder(run_dir)
        if pid:
            raise KitError(f"{run_dir}: a trainer (pid {pid}) is working on this member now (another "
                           "`kit recipe run`?); wait for it to finish or stop it")
        configs[name] = cfg = member_config(recipe, name, budget, data_dir)
        changes = reuse_changes(run_dir, run_identity(cfg, store, budget))
        if changes:
            stale.append((run_dir, changes))
        elif holds_run(run_dir) and not (run := RunDir.of(run_dir)).finished and not run.has_checkpoint:
            again = (f"move {run_dir} aside and re-run: a twin (twin_of) trains again from its first step"
                     if name in recipe.twins else f"re-run with --fresh --only {name} to train it again (the old run "
                     "is moved aside)")            # --only never names a twin (probe 43)
            if decision is not None and name in decision.survivors and name not in recipe.twins:
                again = ("put its last.pt back, or re-run with --fresh to audition again (the members are moved aside; "
                         f"--only {name} would train it outside the audition, as a fixed member: probe 46)")
            raise KitError(f"{run_dir}/last.pt: missing, so member {name} cannot resume (its best.pt is kept); {again}")
    if stale:
        run_dir, changes = stale[0]
        others = f" (and {len(stale) - 1} other member(s))" if len(stale) > 1 else ""
        raise KitError(f"{run_dir}: not what the recipe now asks for: {describe(changes)}{others}; "
                       f"re-run with --fresh to train again (old members are moved to {root}.old-<time>), "
                       "or with --runs OTHER to keep both")
    for name, cfg in configs.items():           # after every refusal: a refused run changes nothing
        predicted = (root / name / "ids.json").is_file()
        if holds_run(root / name) and (changed := update_infer(root / name, to_dict(cfg.infer))):
            fate = "" if not predicted else "; its predictions stand (made as the new settings ask)" \
                if predictions_current(root / name) else "; its predictions made the old way are not voted"
            log(f"{name}: {', '.join(changed)} (the recipe's [infer] changed): kept{fate}")


def _decision(root: Path) -> AuditionResult | None:
    """The audition's decision on record in root; None when there is none or it cannot be read
    (kit.audition_record.decided refuses that, naming the file)."""
    try:
        return AuditionResult.read(root / AUDITION_FILE) if (root / AUDITION_FILE).is_file() else None
    except KitError:
        return None


def check_configs(recipe: Recipe, names: list[str], budget: str, here: bool = True) -> None:
    """Before any member trains: each one's model can be built, the files it starts from or learns
    from are there, its tracker's package is installed (`here`: it trains on this machine, not through
    a launcher), and the checkpoint [after] predicts from will be written -- a mistake in the last
    member must not be found after the first one has trained."""
    for name in names:
        cfg, where = member_config(recipe, name, budget), f"{recipe.path}: member {name}"
        try:
            check_model(cfg.model)
            if cfg.train.log_with and here:
                check_installed(cfg.train.log_with)
        except KitError as e:
            raise KitError(f"{where}: {e}") from None
        for key, value in (("train.init_from", cfg.train.init_from), ("train.teacher", cfg.train.teacher),
                           ("data.pseudo_labels", cfg.data.pseudo_labels)):
            if value and not Path(value).expanduser().exists():     # init_from may name a run dir
                raise KitError(f"{where}: {key} {value}: not found; nothing was trained")
        if recipe.after["predict"] and recipe.after["which"] == "avg" and cfg.train.average_last < 1:
            raise KitError(f'{where}: [after] which = "avg" predicts from the average of the last checkpoints, '
                           f"but train.average_last is {cfg.train.average_last}: set it (e.g. 5), or which = "
                           '"last"; nothing was trained')


def default_budget(data_dir: Path, elsewhere: bool, root: Path | None = None, skip=()) -> tuple[str, str]:
    """The budget kit chooses, and the line saying why: the one the recipe's members in `root` trained
    at, less those in `skip` (--fresh moves them aside; a re-run continues the others, wherever it
    runs); else quick on synthetic data; full on real data
    where a GPU trains it (here, or a launcher's); quick on real data with no GPU here (the full
    budget is hours of GPU time: days of a CPU, its models too big for minutes)."""
    runs = [d for d in (root.iterdir() if root and root.is_dir() else []) if d.name not in skip]
    trained = sorted({b for b in (_trained_identity(d).get("budget") for d in runs) if b in BUDGETS})
    if len(trained) == 1:
        return trained[0], f"the {trained[0]} budget: the members in {root} trained at it (--budget chooses)"
    if is_synthetic(data_dir):
        return "quick", f"the quick budget: {data_dir} is synthetic data (--budget chooses)"
    if elsewhere or torch.cuda.is_available():
        return "full", f"the full budget: {data_dir} is real data (--budget chooses)"
    return "quick", (f"the quick budget: {data_dir} is real data, but no GPU is here (the full budget is hours "
                     "of GPU time; --budget full chooses it)")


# Set from the data when a member trains (identity.json has them; a recipe's member config does not yet).
_FROM_DATA = ("model.n_mels", "model.n_classes")


def trained_as_members(folder: str | Path, recipe: Recipe) -> list[str]:
    """The members of `recipe` whose run dirs `folder` holds as the recipe trained them: named as the member,
    and their identity.json's settings are the member's at the budget it records (probe 55: a copy of a
    recipe's folder under another name, given as --runs, trained a second recipe inside it). A `kit train`
    run that only shares a member's name has other settings and is not listed."""
    found = []
    for name in (member[0] for member in recipe.members):
        identity = _trained_identity(Path(folder) / name)
        budget = identity.get("budget")
        if budget not in BUDGETS or not has_budget(recipe, budget):
            continue
        wanted = {k: v for k, v in config_identity(member_config(recipe, name, budget)).items() if k not in _FROM_DATA}
        if isinstance(identity.get("config"), dict) and not config_changes(identity["config"], wanted):
            found.append(name)
    return found


def _trained_identity(run_dir: Path) -> dict:
    """A member's identity.json ({}: not a run, or unreadable: its checks say so)."""
    try:
        return (read_identity(run_dir) or {}) if run_dir.is_dir() else {}
    except KitError:
        return {}
