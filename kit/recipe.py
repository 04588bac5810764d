"""Recipes as data: a base config, members, two budgets (full / quick) and what to do after
(predict, ensemble, the stages after the vote, submit). kit.zoo.run_recipe runs one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kit.config import CHECKPOINTS, RunConfig, layered, load_toml
from kit.env import kaggle_data_dir
from kit.errors import KitError
from kit.names import check_member_name, check_recipe_name, folded
from kit.rounds import STAGE_DEFAULTS, STAGES, enabled, parse_stage, stages_share
from kit.synth import generate

TOP_KEYS = {"name", "description", "base", "members", "budget", "after", "audition"}
AFTER_DEFAULTS = {"predict": True, "ensemble": "hard", "weights": "equal", "submit": False, "message": "",
                  "which": "best", "pseudo": None, "distill": None, "refit": None, "lmft": None}
BUDGETS = ("full", "quick")
# [audition] (kit.audition): off unless a recipe turns it on; the budgets it runs in, how many
# candidates are kept as members at most, the share of a candidate's minutes it trains before the cut,
# how close to the best score at the cut a candidate must be to go on, and whether the best of each
# kind of network (attention, convolution) goes on first (kit.audition.survivors_of), and whether
# survivors that share the recipe's minutes are at most one per slot (kit.audition).
# `tie`: scores at the cut that many standard errors apart are a tie, and the candidate listed first
# in the recipe goes on (kit.audition.tie_ranked; 0: by score alone).
AUDITION_DEFAULTS = {"enabled": False, "budgets": ["quick"], "keep": 4, "rung": 0.3, "within": 0.5, "kinds": True,
                     "per_slot": True, "tie": 0.0}


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
    audition: dict = field(default_factory=lambda: dict(AUDITION_DEFAULTS))
    candidates: set = field(default_factory=set)  # members with `candidate = true`: in an audition only
    auditions_in: dict = field(default_factory=dict)   # member -> the budgets it is a candidate in (absent: all)
    twins: dict = field(default_factory=dict)     # member -> the candidate it is another seed of (`twin_of`)

    def audition_for(self, budget: str) -> dict:
        """[audition] in `budget`: the table, its [audition.<budget>] keys over it, and `twins`: the members
        training in `budget` as another seed of a candidate there (kit.audition.twinned; _check_twins)."""
        spec = {**self.audition, **self.audition.get(budget, {})}
        twins = {t: o for t, o in self.twins.items() if budget in self.only_in.get(t, BUDGETS)}
        return {**{k: v for k, v in spec.items() if k not in BUDGETS}, "twins": twins}

    def members_for(self, budget: str, audition: bool = False) -> list[str]:
        """The members that train in `budget`: the fixed zoo, or with `audition` every candidate (the
        `candidate = true` members and the fixed ones whose `audition` allows that budget; never a twin,
        which trains only after the cut, kit.audition.twinned)."""
        return [m[0] for m in self.members if budget in self.only_in.get(m[0], BUDGETS) and m[0] not in self.twins
                and (budget in self.auditions_in.get(m[0], BUDGETS) if audition else m[0] not in self.candidates)]

    def only_trains(self, budget: str, only: list[str] | None, chosen: list[str], log) -> None:
        """--only naming some members trains and predicts those; the vote and its submission wait for a run
        without --only (a vote of the few would replace NAME.csv and spend a submission on what the recipe
        never meant): [after] ensemble is "none" for this run, said in a line naming whose vote it is."""
        members, spec = self.members_for(budget), self.audition_for(budget)
        if not only or chosen == members or not self.after["predict"] or self.after["ensemble"] == "none":
            return
        whose = (f"the audition's survivors (of {', '.join(self.members_for(budget, audition=True))}; with "
                 f"--no-audition, {', '.join(members)})" if spec["enabled"] and budget in spec["budgets"] else
                 f"the recipe's members ({', '.join(members)})")
        log(f"--only {' '.join(chosen)}: trains and predicts {'it' if len(chosen) == 1 else 'them'} only; the vote "
            f"and its submission are of {whose}: run it again without --only for them (finished members are "
            "kept), or vote these yourself with `kit ensemble`")
        self.after["ensemble"] = "none"


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
    names, what = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))), "a folder, not a recipe file"
    raise KitError(f"{name}: {what if path.is_dir() else 'file not found'} (recipes shipped with kit: {names})")


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe TOML; every member's config is checked before any training."""
    path = resolve_recipe(path)
    raw = load_toml(path)
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise KitError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(TOP_KEYS))}")
    base = raw.get("base", {})
    if not isinstance(base, dict):
        raise KitError(f"{path}: [base] and [budget.*] must be tables")
    budgets, minutes = _budgets(path, raw.get("budget", {}))
    members, recipe_only, candidates, auditions_in = _members(path, raw.get("members", []))
    twins = _twins(path, members)
    name = _recipe_name(path, raw.get("name", path.stem))
    if not isinstance(raw.get("description", ""), str):
        raise KitError(f"{path}: description {raw['description']!r}: expected a string")
    recipe = Recipe(path, name, base, members, budgets, _after(path, raw.get("after", {})),
                    raw.get("description", ""), minutes, recipe_only, _audition(path, raw.get("audition", {})),
                    candidates | set(twins), auditions_in, twins)
    for member, _, _ in members:                 # refuse typos now, not after an hour of training
        for budget in BUDGETS:
            member_config(recipe, member, budget)
    _check_twins(recipe)
    return recipe


def _check_twins(recipe: Recipe) -> None:
    """A twin that could never train, or would train its candidate's very model, is refused (probe 43:
    both were accepted; the second was voted as a two-member vote of one model): in every budget it
    trains in, its candidate is an audition candidate there, and the two differ in train.seed."""
    for twin, of in recipe.twins.items():
        where = f"{recipe.path}: member {twin}: twin_of {of!r}"
        if twin in recipe.auditions_in:
            raise KitError(f"{where}: a twin trains only after an audition's cut; leave out its `audition`")
        for budget in recipe.only_in.get(twin, BUDGETS):
            if of not in recipe.members_for(budget, audition=True):
                raise KitError(f"{where}: {of} is no audition candidate in the {budget} budget, where this twin "
                               f"trains, so it would never train; give it `budgets` where {of} is a candidate")
            seed = member_config(recipe, of, budget).train.seed
            if member_config(recipe, twin, budget).train.seed == seed:
                raise KitError(f"{where}: its train.seed is {of}'s ({seed}) in the {budget} budget, so it would "
                               "train the same model; a twin is another seed: set train.seed")


def _recipe_name(path: Path, name) -> str:
    """The recipe's name: its folder RUNS/NAME and its submissions NAME.csv, so a plain file name
    that is not one kit uses in submissions/."""
    try:
        return check_recipe_name(name)
    except KitError as e:
        raise KitError(f"{path}: {e}") from None


def _budgets(path: Path, budgets) -> tuple[dict, dict]:
    """[budget.full] / [budget.quick] overrides, and their `minutes = M` (the whole recipe's wall time)."""
    _check_budget_tables(path, budgets, "")
    budgets = {b: dict(table) for b, table in budgets.items()}
    minutes = {}
    for b, table in budgets.items():
        if "minutes" in table:
            m = table.pop("minutes")
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0 < m < float("inf"):
                raise KitError(f"{path}: [budget.{b}] minutes {m!r}: expected a positive number")
            minutes[b] = float(m)
    return budgets, minutes


def _after(path: Path, after) -> dict:
    """The [after] table with its defaults, checked (the stages through kit.rounds.parse_stage)."""
    if not isinstance(after, dict):
        raise KitError(f"{path}: after = {after!r}: expected a table, [after]")
    bad = sorted(set(after) - set(AFTER_DEFAULTS))
    if bad:
        raise KitError(f"{path}: [after] unknown key(s) {', '.join(bad)}; known: {', '.join(AFTER_DEFAULTS)}")
    after = {**AFTER_DEFAULTS, **after}
    _check_after_types(path, after)
    _check_after_agrees(path, after)
    if after["ensemble"] not in ("auto", "hard", "soft", "none"):
        raise KitError(f"{path}: [after] ensemble {after['ensemble']!r}: choose auto, hard, soft or none")
    if after["weights"] not in ("equal", "auto"):
        raise KitError(f"{path}: [after] weights {after['weights']!r}: choose equal or auto "
                       "(auto = weights fitted on the validation split)")
    for key in STAGES:
        after[key] = parse_stage(str(path), key, after[key], STAGE_DEFAULTS[key])
    if any(enabled(after, k) for k in STAGES) and (after["ensemble"] == "none" or not after["predict"]):
        raise KitError(f"{path}: [after] lmft, pseudo, refit and distill need the members predicted and ensembled")
    if stages_share(after) >= 0.9:
        raise KitError(f"{path}: [after] the stages' shares add up to {stages_share(after):g}: leave the "
                       "members most of the time (< 0.9)")
    return after


def _check_after_agrees(path: Path, after: dict) -> None:
    """A submission that the table's other settings rule out (`predict = false`, `ensemble = "none"`)
    is refused: it would be skipped without a word, found only at the end of the training. (An
    ensemble left in the table beside `predict = false` is not: the members train, nothing is lost.)"""
    if after["submit"] and (not after["predict"] or after["ensemble"] == "none"):
        why = "predict = false" if not after["predict"] else 'ensemble = "none"'
        raise KitError(f"{path}: [after] submit = true with {why}: only a vote is submitted; set submit = false, "
                       "or predict = true and an ensemble")


def _check_after_types(path: Path, after: dict) -> None:
    """predict and submit are true or false (a string "false" would read as yes and spend a Kaggle
    submission), message is text, which a checkpoint kit predicts from: refused at load, before any
    member trains."""
    for key in ("predict", "submit"):
        if not isinstance(after[key], bool):
            raise KitError(f"{path}: [after] {key} = {after[key]!r}: expected true or false (no quotes)")
    if not isinstance(after["message"], str):
        raise KitError(f"{path}: [after] message = {after['message']!r}: expected a string")
    if after["which"] not in CHECKPOINTS:
        raise KitError(f"{path}: [after] which {after['which']!r}: choose {', '.join(CHECKPOINTS)}")


def _audition(path: Path, table) -> dict:
    """The [audition] table with its defaults, checked; an [audition.full] or [audition.quick] table
    in it sets keep, rung, within, kinds, per_slot or tie for that budget (Recipe.audition_for)."""
    if not isinstance(table, dict) or set(table) - set(AUDITION_DEFAULTS) - set(BUDGETS):
        known = ", ".join(AUDITION_DEFAULTS)
        unknown = f"unknown key(s) {', '.join(sorted(set(table) - set(AUDITION_DEFAULTS) - set(BUDGETS)))}; " \
            if isinstance(table, dict) else ""
        raise KitError(f"{path}: [audition] {unknown}must be a table of {known} (and [audition.full], "
                       "[audition.quick])")
    out = {**AUDITION_DEFAULTS, **table}
    _check_audition(path, out, "[audition]")
    for budget in set(BUDGETS) & set(table):
        own = table[budget]
        if not isinstance(own, dict) or set(own) - (set(AUDITION_DEFAULTS) - {"enabled", "budgets"}):
            unknown = f"unknown key(s) {', '.join(sorted(set(own) - set(AUDITION_DEFAULTS)))}; " \
                if isinstance(own, dict) and set(own) - set(AUDITION_DEFAULTS) else ""
            raise KitError(f"{path}: [audition.{budget}] {unknown}must be a table of keep, rung, within, kinds, "
                           "per_slot, tie")
        _check_audition(path, {**out, **own}, f"[audition.{budget}]")
    return out


def _check_audition(path: Path, out: dict, where: str) -> None:
    for key in ("enabled", "kinds", "per_slot"):
        if not isinstance(out[key], bool):
            raise KitError(f"{path}: {where} {key} {out[key]!r}: true or false")
    if not _budget_list(out["budgets"]):
        raise KitError(f"{path}: {where} budgets {out['budgets']!r}: a list of {', '.join(BUDGETS)}")
    if isinstance(out["keep"], bool) or not isinstance(out["keep"], int) or out["keep"] < 1:
        raise KitError(f"{path}: {where} keep {out['keep']!r}: the number of members kept, at least 1")
    rung = out["rung"]
    if isinstance(rung, bool) or not isinstance(rung, (int, float)) or not 0 < rung < 1:
        raise KitError(f"{path}: {where} rung {rung!r}: the share of a candidate's minutes before the cut, "
                       "between 0 and 1")
    within = out["within"]
    if isinstance(within, bool) or not isinstance(within, (int, float)) or not 0 <= within <= 1:
        raise KitError(f"{path}: {where} within {within!r}: the share of the best score at the cut a "
                       "survivor needs, between 0 and 1")
    tie = out["tie"]
    if isinstance(tie, bool) or not isinstance(tie, (int, float)) or not 0 <= tie <= 10:
        raise KitError(f"{path}: {where} tie {tie!r}: how many standard errors apart scores at the cut are a tie, "
                       "between 0 and 10")


def _members(path: Path, raw_members) -> tuple[list, dict, set, dict]:
    """[(name, config override, per-member budgets)], {member: the budgets it trains in}, the
    members that train only in an audition (`candidate = true`) and {member: the budgets it is a
    candidate in} for those whose `audition` is not true."""
    members, seen, recipe_only, candidates, auditions_in = [], set(), {}, set(), {}
    if not isinstance(raw_members, list) or not raw_members:
        raise KitError(f"{path}: needs at least one [[members]] entry with a name")
    for i, m in enumerate(raw_members):
        if not isinstance(m, dict):
            raise KitError(f"{path}: members[{i}] = {m!r}: expected a table, [[members]]")
        m = dict(m)
        name = m.pop("name", None)
        if name is None:
            raise KitError(f"{path}: members[{i}] needs a name")
        try:
            check_member_name(name)                # it becomes the run dir RUNS/<recipe>/NAME
        except KitError as e:
            raise KitError(f"{path}: members[{i}]: {e}") from None
        if folded(name) in seen:         # probe 51, 52: a and A (é and e + ´) are one folder on macOS's disks
            raise KitError(f"{path}: member name {name!r} is used twice (names that differ only in case count once)")
        seen.add(folded(name))
        member_budgets = m.pop("budget", {})
        candidate = m.pop("candidate", False)
        if not isinstance(candidate, bool):
            raise KitError(f"{path}: member {name}: candidate {candidate!r}: true or false")
        if candidate:
            candidates.add(name)
        auditions = _auditions(path, name, m.pop("audition", True), candidate)
        if set(auditions) != set(BUDGETS):
            auditions_in[name] = auditions
        trains_in = m.pop("budgets", list(BUDGETS))       # the budgets this member trains in
        if not _budget_list(trains_in) or not trains_in:
            raise KitError(f"{path}: member {name}: budgets {trains_in!r}: a list of {', '.join(BUDGETS)}")
        if trains_in != list(BUDGETS):
            recipe_only[name] = trains_in
        _check_budget_tables(path, member_budgets, f"member {name}: ")
        if unknown := sorted(set(m) - set(RunConfig.__dataclass_fields__) - {"twin_of"}):   # probe 46: its own too
            raise KitError(f"{path}: member {name}: unknown key(s) {', '.join(unknown)}; known: name, candidate, "
                           "audition, budgets, budget, twin_of, data, model, augment, train, infer")
        members.append((name, m, member_budgets))
    return members, recipe_only, candidates, auditions_in


def _twins(path: Path, members: list) -> dict[str, str]:
    """{member: the candidate it is another seed of}, from the members' `twin_of` (taken out of their
    config overrides): a twin never trains in the audition's rung; when its candidate goes on, the twin
    goes on beside it, from scratch, in place of the last other survivor (kit.audition.twinned)."""
    names, twins = {m[0] for m in members}, {}
    for name, override, _ in members:
        if "twin_of" not in override:
            continue
        of = override.pop("twin_of")
        if not isinstance(of, str) or of not in names or of == name:
            raise KitError(f"{path}: member {name}: twin_of {of!r}: the name of another member, a candidate of "
                           "the audition whose second seed this member is")
        twins[name] = of
    for name, of in twins.items():
        if of in twins:
            raise KitError(f"{path}: member {name}: twin_of {of!r}: that member is itself a twin; name the candidate")
    return twins


def _check_budget_tables(path: Path, budgets, where: str) -> None:
    """The recipe's [budget] (where "") or a member's `budget` (where "member NAME: "): a table of
    [budget.full] / [budget.quick] tables, of the known budgets only."""
    if not isinstance(budgets, dict):
        raise KitError(f"{path}: {where}budget = {budgets!r}: expected a table of {', '.join(BUDGETS)}")
    bad = sorted(set(budgets) - set(BUDGETS))
    if bad:
        raise KitError(f"{path}: {where}unknown budget(s) {', '.join(bad)}; use budget.full and budget.quick")
    for b, table in budgets.items():
        if not isinstance(table, dict):
            raise KitError(f"{path}: {where}budget.{b} = {table!r}: expected a table, [budget.{b}]")


def _budget_list(value) -> bool:
    """Whether a recipe's `budgets` or `audition` value is a list of budget names (a TOML array may
    hold arrays or tables, which a set could not take)."""
    return isinstance(value, list) and all(isinstance(b, str) and b in BUDGETS for b in value)


def _auditions(path: Path, name: str, value, candidate: bool) -> list[str]:
    """A member's `audition`: true (a candidate whenever the recipe auditions), false (never: the
    fixed zoo only) or the budgets it is a candidate in (boss: its quick Transformer, ECAPA and
    ResNet in the full budget's audition, not in the quick one's)."""
    budgets = list(BUDGETS) if value is True else [] if value is False else value
    if not _budget_list(budgets):
        raise KitError(f"{path}: member {name}: audition {value!r}: true, false or a list of "
                       f"{', '.join(BUDGETS)}")
    if candidate and set(budgets) != set(BUDGETS):
        raise KitError(f"{path}: member {name}: `candidate = true` trains only in an audition; "
                       f"`audition = {value!r}` would keep it out of one")
    return budgets


def member_config(recipe: Recipe, member: str, budget: str, data_dir: str | Path | None = None) -> RunConfig:
    """Defaults <- base <- member <- budget <- member's own budget, validated as a RunConfig."""
    found = [m for m in recipe.members if m[0] == member]
    if not found:
        raise KitError(f"{recipe.path}: no member {member!r}; members: {', '.join(m[0] for m in recipe.members)}")
    _, override, member_budgets = found[0]
    where = f"{recipe.path}: member {member}"
    layers = [(where, override), (f"{recipe.path}: [budget.{budget}]", recipe.budgets.get(budget, {})),
              (f"{where}: budget.{budget}", member_budgets.get(budget, {}))]
    if member in recipe.twins:                  # a twin: its candidate's layers, then its own over them all
        of = recipe.twins[member]
        _, first, first_budgets = next(m for m in recipe.members if m[0] == of)
        layers = [(f"{recipe.path}: member {of}", first), layers[1],
                  (f"{recipe.path}: member {of}: budget.{budget}", first_budgets.get(budget, {})), layers[0], layers[2]]
    cfg = layered((f"{recipe.path}: [base]", recipe.base), *layers, (where, {"name": member}))
    if data_dir is not None:
        cfg.data.data_dir = str(data_dir)
    return cfg


def has_budget(recipe: Recipe, budget: str) -> bool:
    """Whether the recipe sets BUDGET up: a [budget.NAME] table, or a member's own."""
    return budget in recipe.budgets or any(budget in own for _, _, own in recipe.members)


def require_budget(recipe: Recipe, budget: str) -> str:
    """BUDGET, asked for by name, when the recipe sets it up (has_budget) and some member trains
    in it; else KitError: a budget asked for must not silently train the [base] settings. (Chosen
    by kit, quick on synthetic data and full on real, a budget the recipe lacks is [base].)"""
    if budget not in BUDGETS:
        raise KitError(f"budget {budget!r}: choose {' or '.join(BUDGETS)}")
    if not has_budget(recipe, budget):
        have = ", ".join(f"[budget.{b}]" for b in recipe.budgets) or "no [budget.*] table"
        raise KitError(f"{recipe.path}: --budget {budget}: the recipe has no [budget.{budget}] (it has {have}); "
                       f"add one, or leave out --budget")
    if not recipe.members_for(budget):
        raise KitError(f"{recipe.path}: --budget {budget}: no member trains in it (their `budgets` lists)")
    return budget


def ensure_data(data: str | None, log) -> Path:
    """--data, or the competition under /kaggle/input (in a Kaggle notebook), or data/demo
    (generated by kit.synth when missing)."""
    if data:
        return Path(data)
    found = kaggle_data_dir()
    if found is not None:
        log(f"no --data given: using the competition data found at {found}")
        return found
    demo = Path("data/demo")
    if not (demo / "metadata.json").is_file():
        log(f"no --data given and {demo} does not exist: generating the synthetic demo competition there")
        generate(str(demo), "demo", seed=0)
    return demo
