"""Recipes as data: a base config, members, two budgets (full / quick) and what to do after
(predict, ensemble, submit); `run_recipe` trains the members and chains the later stages.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kit.budget import AFTER_SECONDS, Deadline, member_minutes, predict_seconds
from kit.config import RunConfig, dump_toml, layered, load_toml, to_dict
from kit.errors import KitError
from kit.rounds import DISTILL_DEFAULTS, PSEUDO_DEFAULTS, StageContext, enabled, parse_stage, stages_share
from kit.workers import run_parallel, slots_for

TOP_KEYS = {"name", "description", "base", "members", "budget", "after"}
AFTER_DEFAULTS = {"predict": True, "ensemble": "hard", "weights": "equal", "submit": False, "message": "",
                  "which": "best", "pseudo": None, "distill": None}
BUDGETS = ("full", "quick")
SYNTH_MARKER = ".kit-synth.json"


@dataclass
class Recipe:
    path: Path
    name: str
    base: dict
    members: list[tuple[str, dict, dict]]        # (name, config override, per-member budgets)
    budgets: dict = field(default_factory=dict)   # "full"/"quick" -> override
    after: dict = field(default_factory=dict)
    description: str = ""
    minutes: dict = field(default_factory=dict)   # budget -> wall-clock minutes for the whole recipe
    only_in: dict = field(default_factory=dict)   # member -> the budgets it trains in (absent: all)

    def members_for(self, budget: str) -> list[str]:
        return [m[0] for m in self.members if budget in self.only_in.get(m[0], BUDGETS)]


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"      # shipped with the package


def resolve_recipe(name: str | Path) -> Path:
    """A recipe file: a path that exists, else a recipe shipped with kit by name ("boss" or
    "recipes/boss.toml" work from any directory after a plain install)."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / (path.stem + ".toml")
    if shipped.is_file() and path.suffix in ("", ".toml") and path.parent in (Path("."), Path("recipes")):
        return shipped
    names = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.toml")))
    raise KitError(f"{name}: file not found (recipes shipped with kit: {names})")


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe TOML; every member's config is checked before any training."""
    path = resolve_recipe(path)
    raw = load_toml(path)
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise KitError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(TOP_KEYS))}")
    base = raw.get("base", {})
    budgets = raw.get("budget", {})
    if not isinstance(base, dict) or not isinstance(budgets, dict):
        raise KitError(f"{path}: [base] and [budget.*] must be tables")
    bad = sorted(set(budgets) - set(BUDGETS))
    if bad:
        raise KitError(f"{path}: unknown budget(s) {', '.join(bad)}; use [budget.full] and [budget.quick]")
    budgets = {b: dict(table) for b, table in budgets.items()}
    minutes = {}
    for b, table in budgets.items():            # `minutes = M` in a budget: the whole recipe's wall time
        if "minutes" in table:
            m = table.pop("minutes")
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < float("inf"):
                raise KitError(f"{path}: [budget.{b}] minutes {m!r}: expected a positive number")
            minutes[b] = float(m)
    after = raw.get("after", {})
    bad = sorted(set(after) - set(AFTER_DEFAULTS))
    if bad:
        raise KitError(f"{path}: [after] unknown key(s) {', '.join(bad)}; known: {', '.join(AFTER_DEFAULTS)}")
    after = {**AFTER_DEFAULTS, **after}
    if after["ensemble"] not in ("auto", "hard", "soft", "none"):
        raise KitError(f"{path}: [after] ensemble {after['ensemble']!r}: choose auto, hard, soft or none")
    if after["weights"] not in ("equal", "auto"):
        raise KitError(f"{path}: [after] weights {after['weights']!r}: choose equal or auto "
                       "(auto = weights fitted on the validation split)")
    after["pseudo"] = parse_stage(str(path), "pseudo", after["pseudo"], PSEUDO_DEFAULTS)
    after["distill"] = parse_stage(str(path), "distill", after["distill"], DISTILL_DEFAULTS)
    if (enabled(after, "pseudo") or enabled(after, "distill")) and (after["ensemble"] == "none" or not after["predict"]):
        raise KitError(f"{path}: [after] pseudo and distill need the members predicted and ensembled")
    if stages_share(after) >= 0.9:
        raise KitError(f"{path}: [after] pseudo.share + distill.share = {stages_share(after):g}: leave the "
                       "members most of the time (< 0.9)")

    members, seen, recipe_only = [], set(), {}
    raw_members = raw.get("members", [])
    if not isinstance(raw_members, list) or not raw_members:
        raise KitError(f"{path}: needs at least one [[members]] entry with a name")
    for i, m in enumerate(raw_members):
        m = dict(m)
        name = m.pop("name", None)
        if not isinstance(name, str) or not name or "/" in name:
            raise KitError(f"{path}: members[{i}] needs a name (no slashes)")
        if name in seen:
            raise KitError(f"{path}: member name {name!r} is used twice")
        seen.add(name)
        member_budgets = m.pop("budget", {})
        trains_in = m.pop("budgets", list(BUDGETS))       # the budgets this member trains in
        if not isinstance(trains_in, list) or not trains_in or set(trains_in) - set(BUDGETS):
            raise KitError(f"{path}: member {name}: budgets {trains_in!r}: a list of {', '.join(BUDGETS)}")
        if trains_in != list(BUDGETS):
            recipe_only[name] = trains_in
        bad = sorted(set(member_budgets) - set(BUDGETS))
        if bad:
            raise KitError(f"{path}: member {name}: unknown budget(s) {', '.join(bad)}")
        members.append((name, m, member_budgets))
    recipe = Recipe(path, raw.get("name", path.stem), base, members, budgets, after, raw.get("description", ""),
                    minutes, recipe_only)
    for name, _, _ in members:                   # refuse typos now, not after an hour of training
        for budget in BUDGETS:
            member_config(recipe, name, budget)
    return recipe


def member_config(recipe: Recipe, member: str, budget: str, data_dir: str | None = None) -> RunConfig:
    """Defaults <- base <- member <- budget <- member's own budget, validated as a RunConfig."""
    found = [m for m in recipe.members if m[0] == member]
    if not found:
        raise KitError(f"{recipe.path}: no member {member!r}; members: {', '.join(m[0] for m in recipe.members)}")
    _, override, member_budgets = found[0]
    where = f"{recipe.path}: member {member}"
    cfg = layered((f"{recipe.path}: [base]", recipe.base), (where, override),
                  (f"{recipe.path}: [budget.{budget}]", recipe.budgets.get(budget, {})),
                  (f"{where}: budget.{budget}", member_budgets.get(budget, {})), (where, {"name": member}))
    if data_dir is not None:
        cfg.data.data_dir = str(data_dir)
    return cfg


def is_synthetic(data_dir: str | Path) -> bool:
    return (Path(data_dir) / SYNTH_MARKER).is_file()


def ensure_data(data: str | None, log) -> Path:
    """--data, or the competition under /kaggle/input (in a Kaggle notebook), or data/demo
    (generated by kit.synth when missing)."""
    from kit.env import kaggle_data_dir

    if data:
        return Path(data)
    found = kaggle_data_dir()
    if found is not None:
        log(f"no --data given: using the competition data found at {found}")
        return found
    demo = Path("data/demo")
    if not (demo / "metadata.json").is_file():
        from kit.synth import generate

        log(f"no --data given and {demo} does not exist: generating the synthetic demo competition there")
        generate(str(demo), "demo", seed=0)
    return demo


def _is_predicted(run_dir: Path, which: str) -> bool:
    """val/test probabilities written after the checkpoint they come from."""
    ckpt = run_dir / f"{which}.pt"
    probs = [run_dir / "val_probs.npy", run_dir / "test_probs.npy"]
    return ckpt.is_file() and all(p.is_file() and p.stat().st_mtime >= ckpt.stat().st_mtime for p in probs)


def _member_task(recipe: Recipe, job, on_cpu: bool, after: bool,
                 budget: str | None = None) -> tuple[str, Path, list[list[str]]]:
    """The commands a worker runs for one member: train it, then (when the recipe predicts) predict it."""
    from kit.fsio import write_text

    name, cfg, run_dir, resume = job
    if on_cpu:
        cfg.train.cpu_threads = 1           # one core each; more threads only fight each other
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "member.toml", dump_toml(to_dict(cfg)))
    cmds = [[sys.executable, "-m", "kit.train", "--out", str(run_dir), "--config", str(run_dir / "member.toml"),
             "--no-progress"] + (["--resume"] if resume else []) + (["--budget", budget] if budget else [])]
    if after and recipe.after["predict"]:
        fine_tune = cfg.train.init_from and cfg.infer.mode in ("full", "sliding")   # kit.rounds: source's mode
        cmds.append([sys.executable, "-m", "kit", "predict", str(run_dir), "--which", recipe.after["which"]]
                    + (["--mode", cfg.infer.mode, "--no-compare"] if fine_tune else []))
    return name, run_dir, cmds


def run_recipe(path: str | Path, data: str | None = None, budget: str | None = None, runs: str = "runs",
               only: list[str] | None = None, after: bool = True, progress: bool = True, log=None,
               workers: int | None = None, minutes: float | None = None,
               per_member_minutes: float | None = None, submit: bool | None = None,
               submissions: str | Path = "submissions", fresh: bool = False,
               max_hours: float | None = None, pseudo: bool | None = None, distill: bool | None = None,
               launcher=None, ensemble: str | None = None) -> dict:
    """Train the recipe's members (skipping finished ones, resuming half-finished ones), then
    predict, ensemble and submit as its [after] table says. Returns everything the CLI prints.

    workers: members trained at once (default: one per GPU, or one per CPU core on a CPU).
    minutes: a wall-clock allowance for the whole recipe, shared among the members left to train
    (each member's train.minutes); per_member_minutes: the same per member. Either replaces the
    members' own train.minutes; each member fits its LR schedule to its time.
    fresh: move the chosen members' old run dirs aside (RUNS/<recipe>.old-<time>/) and train
    them again. Without it, a member made from other data, settings or budget is refused.
    pseudo, distill: turn the recipe's [after] pseudo / distill stage on or off (None: as the
    recipe says; a stage the recipe does not set up gets kit.rounds' defaults).
    max_hours: a hard stop for this call, e.g. the time left in a notebook session (see Deadline):
    members are stopped with a checkpoint or not started, and the after stages wait until every
    member has finished; calling again (next session) continues from the run dirs.
    launcher: where the members train when not here (kit.launch: Kaggle kernels, Slurm jobs); their
    run dirs come back under RUNS/<recipe>/ and the after stages run here. ensemble: replaces the
    recipe's [after] ensemble ("none": train and predict only, as a launcher's job does).
    """
    from kit.data import FeatureStore
    from kit.train import read_summary, train

    log = log or (lambda message: None)
    began = time.time()
    recipe = load_recipe(path)
    if submit is not None:
        recipe.after["submit"] = submit
    if ensemble is not None:
        recipe.after["ensemble"] = ensemble
    for key, value, defaults in (("pseudo", pseudo, PSEUDO_DEFAULTS), ("distill", distill, DISTILL_DEFAULTS)):
        if value is not None:
            recipe.after[key] = {**(recipe.after[key] or defaults), "enabled": value}
    data_dir = ensure_data(data, log)
    budget = budget or ("quick" if is_synthetic(data_dir) else "full")
    if budget not in BUDGETS:
        raise KitError(f"budget {budget!r}: choose quick or full")
    names = recipe.members_for(budget)
    for name in only or []:
        if name not in names:
            raise KitError(f"{recipe.path}: --only {name}: no such member; members: {', '.join(names)}")
    chosen = [n for n in names if not only or n in only]
    store = FeatureStore.open(data_dir, member_config(recipe, chosen[0], budget).data.store_dtype, progress=progress)

    root = Path(runs) / recipe.name
    for value, flag in ((minutes, "--minutes"), (per_member_minutes, "--member-minutes"),
                        (max_hours, "--max-hours")):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise KitError(f"{flag} {value}: must be a positive number of minutes")
    if fresh:
        _start_over(root, chosen, log)
    _check_members(root, chosen, recipe, budget, data_dir, store)
    jobs, skipped = [], set()
    for name in chosen:
        run_dir = root / name
        summary = read_summary(run_dir)
        if summary is not None and summary.get("stopped_reason") != "time":   # "time": a session's limit
            log(f"{name}: already finished in {run_dir}, skipped")
            skipped.add(name)
            continue
        jobs.append((name, member_config(recipe, name, budget, data_dir), run_dir, (run_dir / "last.pt").is_file()))
    if launcher is not None and jobs:      # trained elsewhere; max_hours bounds each remote job, not this call
        launcher.train(recipe, [j[0] for j in jobs], root, budget, data_dir, log, minutes=minutes,
                       per_member_minutes=per_member_minutes, max_hours=max_hours, fresh=fresh)
        jobs, max_hours = [], None
    slots = slots_for(workers, len(jobs))
    if not per_member_minutes:
        minutes = minutes or recipe.minutes.get(budget)
    share = None          # a member's training minutes, given how many are left when it starts
    timed = bool(jobs) and bool(minutes or per_member_minutes)
    if minutes or per_member_minutes or max_hours:  # one member's prediction; no slots: a CPU's cost
        predict_s = predict_seconds(store, member_config(recipe, chosen[0], budget).data.val_fraction,
                                    bool(slots) and "GPU" in slots[0]["label"])
    stages = stages_share(recipe.after) if after else 0.0    # time the stages after the vote take

    stage_slots = slots_for(workers, len(chosen))        # fine-tunes after the vote: one per member

    def minutes_left(end: float, jobs_left: int, floor: bool = True, slots: list = stage_slots,
                     share: float | None = None) -> float:
        """Training minutes per job for a stage that must end at `end` x the recipe's minutes; with
        --member-minutes M, a stage taking `share` of the time gets M x share / (1 - stages)."""
        if per_member_minutes:
            return per_member_minutes * (1.0 if share is None else share / max(1.0 - stages, 0.1))
        return member_minutes(minutes * end, time.time() - began, jobs_left, max(len(slots), 1), predict_s, floor)

    if timed:

        def share(members_left: int, floor: bool = True) -> float:
            if per_member_minutes:
                return per_member_minutes
            # Re-shared as each member starts, so members that start late get what the earlier
            # ones left: a first round that overran (a slow prediction, a busy machine) is made up.
            return minutes_left(1.0 - stages, members_left, floor, slots)

        each = share(len(jobs), floor=False)          # refuses an allowance too small to start
        log(f"time budget: {each:.2f} training minutes per member, {len(slots)} at a time"
            + (" (re-shared as each member starts)" if not per_member_minutes else "")
            + (f"; {stages:.0%} of the time kept for pseudo-labelling/distillation" if stages else ""))
        for _, cfg, _, _ in jobs:
            cfg.train.minutes = each
    deadline = None
    if max_hours:
        deadline = Deadline(max_hours, began, {j[0]: j[1].train.max_minutes for j in jobs}, predict_s)

    def train_jobs(jobs: list, share, deadline: Deadline | None = None, slots: list = stage_slots) -> None:
        """Train (and, in worker processes, predict) jobs [(name, cfg, run_dir, resume)]."""
        if len(slots) > 1:
            on_cpu = "CPU" in slots[0]["label"]
            run_parallel([_member_task(recipe, job, on_cpu, after, budget) for job in jobs], slots, log, share,
                          deadline)
            return
        for k, (name, cfg, run_dir, resume) in enumerate(jobs):
            if deadline is not None:
                limit = deadline.member_minutes(name, log, predictions=k + 1)     # predicted at the end
                if limit is None:
                    deadline.not_started += [j[0] for j in jobs[k:]]
                    break
                cfg.train.max_minutes = limit
            if share is not None:
                cfg.train.minutes = share(len(jobs) - k)
            log(f"training {name} -> {run_dir}{' (resuming)' if resume else ''}")
            train(cfg, run_dir, resume=resume, progress=progress, store=store, budget=budget)

    train_jobs(jobs, share, deadline, slots)

    result = {"recipe": recipe.name, "budget": budget, "data": str(data_dir), "members": []}
    run_dirs = []
    for name in chosen:
        s = read_summary(root / name) or {}
        run_dirs.append(root / name)
        result["members"].append({"name": name, "run_dir": str(root / name), "params": s.get("params", 0),
                                  "val_acc": s.get("best_val_acc"), "step": s.get("step", 0),
                                  "minutes": s.get("seconds", 0.0) / 60, "note": _note(s, name in skipped)})
        if deadline is not None and name in deadline.not_started and not s:
            result["members"][-1]["note"] = "not started (--max-hours; re-run continues)"
    if deadline is not None and after:
        after = _in_time(deadline, result, run_dirs, recipe.after["which"])
    if after:
        ctx = StageContext(
            name=recipe.name, root=root, which=recipe.after["which"], budget=budget,
            config_for=lambda name: member_config(recipe, name, budget, data_dir), train_jobs=train_jobs,
            ensemble=lambda dirs, name: _ensemble(recipe, dirs, name, submissions),
            predict=lambda d: _predict(d, recipe.after["which"], store, progress, log), log=log, progress=progress,
            timed=bool(minutes or per_member_minutes), minutes_left=minutes_left)
        _after(recipe, run_dirs, store, data_dir, result, progress, log, submissions, ctx, stages)
    result["minutes"] = (time.time() - began) / 60
    return result


def _start_over(root: Path, names: list[str], log) -> None:
    """--fresh: move the members' run dirs into one <root>.old-<time>/ (nothing is deleted)."""
    from kit.runs import move_aside, old_name

    dest = old_name(root)
    for name in names:
        if (root / name).exists():
            log(f"{name}: starting over; the old run moved to {move_aside(root / name, dest / name)}")


def _check_members(root: Path, names: list[str], recipe: Recipe, budget: str, data_dir: Path, store) -> None:
    """Refuse, before any training, a member another process is training, one whose run was made
    from other data, settings or budget, and one that cannot resume (last.pt gone)."""
    from kit.runs import describe, holds_run, lock_holder, reuse_changes, run_identity

    stale = []
    for name in names:
        run_dir = root / name
        pid = lock_holder(run_dir)
        if pid:
            raise KitError(f"{run_dir}: a trainer (pid {pid}) is working on this member now (another "
                           "`kit recipe run`?); wait for it to finish or stop it")
        changes = reuse_changes(run_dir, run_identity(member_config(recipe, name, budget, data_dir), store, budget))
        if changes:
            stale.append((run_dir, changes))
        elif holds_run(run_dir) == "unfinished" and not (run_dir / "last.pt").is_file():
            raise KitError(f"{run_dir}/last.pt: missing, so member {name} cannot resume (its best.pt is kept); "
                           "re-run with --fresh to train it again (the old run is moved aside)")
    if stale:
        run_dir, changes = stale[0]
        others = f" (and {len(stale) - 1} other member(s))" if len(stale) > 1 else ""
        raise KitError(f"{run_dir}: not what the recipe now asks for: {describe(changes)}{others}; "
                       f"re-run with --fresh to train again (old members are moved to {root}.old-<time>), "
                       "or with --runs OTHER to keep both")


def _note(summary: dict, skipped: bool) -> str:
    if skipped:
        return "finished earlier"
    reason = summary.get("stopped_reason", "not trained")
    if reason == "time":
        return "stopped at its time limit (re-run continues)"
    return "" if reason == "budget" else reason


def _in_time(deadline: Deadline, result: dict, run_dirs: list[Path], which: str) -> bool:
    """--max-hours: whether predict, ensemble and submit go ahead now: only when every member has
    finished and their predictions and the end fit before the deadline; else result["resume"]
    says what the next session's re-run will do."""
    unfinished = [m["name"] for m in result["members"] if m["note"].startswith(("stopped at", "not started"))]
    if unfinished:
        result["resume"] = (f"{len(unfinished)} member(s) not finished before the --max-hours deadline "
                            f"({', '.join(unfinished)}): re-run the same command (next session) to continue "
                            "them; predict, ensemble and submit follow once every member has finished")
    else:
        needed = AFTER_SECONDS + deadline.predict * sum(not _is_predicted(d, which) for d in run_dirs)
        if deadline.time_for_after(needed):
            return True
        result["resume"] = (f"every member has finished, but predict, ensemble and submit (about "
                            f"{needed / 60:.1f} min) do not fit before the --max-hours deadline: re-run the "
                            "same command (next session) to do them")
    return False


def _predict(run_dir: Path, which: str, store, progress: bool, log) -> dict | None:
    """Predict a run dir unless its predictions are newer than its checkpoint (a fine-tune of
    kit.rounds: in its source member's mode only)."""
    from kit.infer import predict_run
    from kit.train import load_config

    if _is_predicted(run_dir, which):       # by its worker, or by an earlier run
        return None
    log(f"predicting {run_dir.name}")
    cfg = load_config(run_dir)
    fine_tune = bool(cfg.train.init_from) and cfg.infer.mode in ("full", "sliding")
    return predict_run(run_dir, store=store, which=which, progress=progress,
                       **({"mode": cfg.infer.mode, "compare": False} if fine_tune else {}))


def _ensemble(recipe: Recipe, run_dirs: list[Path], name: str, submissions) -> dict:
    from kit.ensemble import ensemble_runs

    plan = recipe.after
    weights = "auto" if plan["weights"] == "auto" else None
    vote = plan["ensemble"] if len(run_dirs) > 1 else "hard"     # one run: its own predictions
    return ensemble_runs(run_dirs, vote=vote, weights=weights, name=name, out_dir=submissions)


def _after(recipe: Recipe, run_dirs: list[Path], store, data_dir: Path, result: dict, progress: bool, log,
           submissions: str | Path = "submissions", ctx: StageContext | None = None, stages: float = 0.0) -> None:
    """predict -> ensemble -> (pseudo-labelling rounds, distillation) -> submit, as far as the
    recipe's [after] table asks."""
    from kit.kaggle import recipe_submit
    from kit.records import PredictionIds
    from kit.report import format_report, report_runs
    from kit.rounds import distill_stage, pseudo_rounds

    plan = recipe.after
    if not plan["predict"]:
        return
    for run_dir, member in zip(run_dirs, result["members"]):
        member["pred"] = _predict(run_dir, plan["which"], store, progress, log)
    for run_dir, member in zip(run_dirs, result["members"]):     # the table shows predicted accuracy
        ids = PredictionIds.load(run_dir)
        if ids.val_acc is not None:
            member["val_acc"], member["mode"] = ids.val_acc, ids.inference_mode
    if plan["ensemble"] == "none":
        return
    log(f"ensembling {len(run_dirs)} member(s) by {plan['ensemble']} vote")
    rounds = enabled(plan, "pseudo") is not None and ctx is not None
    ens = _ensemble(recipe, run_dirs, f"{recipe.name}-vote0" if rounds else recipe.name, submissions)
    if rounds:
        result["vote0"] = {"val_acc": ens["val_acc"], "val_acc_oof": ens.get("oof_acc"), "csv": str(ens["csv"])}
        names = [m["name"] for m in result["members"]]
        run_dirs = pseudo_rounds(ctx, plan["pseudo"], names, run_dirs, result, 1.0 - stages)
        if result["rounds"]:
            log(f"ensembling the {len(run_dirs)} fine-tuned member(s) by {plan['ensemble']} vote")
        ens = _ensemble(recipe, run_dirs, recipe.name, submissions)     # no round: the same vote
    result["ensemble"] = {"vote": plan["ensemble"], "val_acc": ens["val_acc"], "csv": str(ens["csv"]),
                          "manifest": str(ens["manifest"]), "table": ens.get("table"),
                          "weights_mode": plan["weights"], "method": ens.get("method"),
                          "val_acc_oof": ens.get("oof_acc"), "members": [str(d) for d in run_dirs],
                          "weights": [float(w) for w in ens["weights"]] if ens.get("weights") is not None else None}
    report = report_runs(run_dirs, ensemble_result=ens)       # also draws NAME_report.png beside the CSV
    result["report"] = format_report(report)
    if enabled(plan, "distill") is not None and ctx is not None:
        distill_stage(ctx, plan["distill"], run_dirs, result)
    if not plan["submit"]:
        return
    message = plan["message"] or f"kit recipe {recipe.name} ({result['budget']} budget)"
    log(f"submitting {ens['csv']}")
    result["submission"] = recipe_submit(ens["csv"], message, data_dir)
    if enabled(plan, "distill") and plan["distill"]["submit"] and result.get("student"):
        log(f"submitting {result['student']['csv']}")
        result["student"]["submission"] = recipe_submit(result["student"]["csv"], message + " (distilled student)",
                                                        data_dir)
