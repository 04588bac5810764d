"""The audition's decision (kit.audition): what the cut chose, kept in RUNS/<recipe>/audition.json and
read back by a re-run (refused when the recipe changed under it), and Optuna's record of it in
RUNS/<recipe>/audition.optuna.journal."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from kit.errors import KitError
from kit.fsio import read_json
from kit.rundir import RunDir

AUDITION_FILE = "audition.json"
# CPU seconds per wall second (a session's, set-up included) under which a candidate lost steps in the rung:
# 0.975-0.981 for two side by side on a quiet 2-core machine, 0.65 beside one busy loop, 0.68-0.70 (the loop's
# figure) beside a test (bench-results/cpu-views-2026-12-07/).
RUNG_CORES = 0.85
JOURNAL_FILE = "audition.optuna.journal"


@dataclass
class AuditionResult:
    """The cut: candidates, each one's validation accuracy and step at it, the survivors (best first)."""
    candidates: list[str]
    keep: int
    rung: float
    minutes: float                               # each candidate's planned training minutes (0: step-based)
    scores: dict[str, float | None] = field(default_factory=dict)   # None: diverged or never evaluated
    steps: dict[str, int] = field(default_factory=dict)
    survivors: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)         # the kind of network (kit.config.ENCODER_KINDS)
    spec: dict = field(default_factory=dict)     # the recipe's [audition] as the cut was taken ({}: an older kit's)
    n_val: int = 0                               # validation utterances each score was taken on (0: not said)
    cores: dict[str, float] = field(default_factory=dict)      # CPU cores each had in the rung ({}: a GPU's)

    @property
    def pruned(self) -> list[str]:
        return [n for n in self.candidates if n not in self.survivors]

    @property
    def twins(self) -> dict[str, str]:
        """The survivors that are another seed of a candidate (kit.audition.twinned): {twin: candidate}."""
        return {t: o for t, o in self.spec.get("twins", {}).items() if t in self.survivors}

    @classmethod
    def read(cls, path: Path) -> AuditionResult:
        """The decision kit wrote to `path`; KitError naming the file when it is anything else (an
        older kit's, or damaged), rather than a decision half read."""
        value = read_json(path, "the audition's decision")
        problem = _shape_problem(value, [f.name for f in fields(cls)])
        if problem:
            raise KitError(f"{path}: not an audition decision kit can read ({problem}); re-run with --fresh to "
                           "audition again (or delete it, while no survivor has trained past the cut)")
        # every key is a field (_shape_problem refuses others); "cores", shown only, is read leniently
        return cls(**{**value, "cores": _cores_read(value.get("cores"), value["candidates"])})

    def lines(self) -> list[str]:
        """The rung, one line per candidate, best first: what the CLI and the report print."""
        of = f"{self.minutes:.2f} min each" if self.minutes else "their steps"
        head = (f"audition: {len(self.candidates)} candidates trained {self.rung:.0%} of {of}; "
                f"{len(self.survivors)} kept (at most {self.keep}; validation accuracy at the cut, centre crops):")
        order = sorted(self.candidates, key=lambda n: -(self.scores.get(n) or -1.0))
        rows = [f"  {n:16s} {_fmt(self.scores.get(n))}  step {self.steps.get(n, 0):>6}  "
                f"{self.kinds.get(n, ''):11s}  {'kept' if n in self.survivors else 'pruned'}" for n in order]
        rows += [f"  {t:16s}   -     not in the rung: another seed of {o}, trained from scratch in the place of the "
                 "last other survivor" for t, o in self.twins.items()]
        rows += [f"  {t:16s}   -     not trained: {o} {self._no_twin(o)}"
                 for t, o in self.spec.get("twins", {}).items() if t not in self.survivors and o in self.candidates]
        tie, top = float(self.spec.get("tie", 0.0)), max((v for v in self.scores.values() if v is not None), default=0)
        if tie > 0 and self.n_val:
            band = tie * difference_error(top, top, self.n_val)
            rows.append(f"  (scores within {tie:g} standard error(s) of their difference, {band:.3f} at the best here, "
                        "are a tie: the candidate listed first in the recipe ranks first)")
        return [head, *rows, *self._shared()]

    def _shared(self) -> list[str]:
        """The warning when another process took CPU from some candidates in the rung: the cut then compared
        them on fewer steps than the others had in the same minutes (session 36: a test beside the rung cost
        10-16% of its steps and changed hard's cut, without a word)."""
        short = {n: c for n, c in self.cores.items() if c < RUNG_CORES}     # numbers only (_cores_read)
        if not short:
            return []
        had = ", ".join(f"{n} {c:.2f}" for n, c in sorted(short.items(), key=lambda item: item[1]))
        return [f"  lost steps in the rung: {had} of a CPU core (CPU time / wall time; each has one of its own "
                "on a quiet machine): another process shared the machine, so the cut compared these on fewer steps "
                "than their minutes give; re-run with --fresh on a quiet machine to audition again"]


    def _no_twin(self, of: str) -> str:
        """Why the twin of candidate `of` did not go on (kit.audition.twinned)."""
        if of not in self.survivors:
            return "was pruned"
        if self.survivors == [of]:
            return "is the only survivor"
        return (f"scored under {float(self.spec.get('within', 1.0)):g} x the best at the cut (a twin goes on only "
                "beside a candidate close enough to go on by itself)")


def _shape_problem(value: dict, names: list[str]) -> str | None:
    """What is wrong with a decision read from JSON, or None."""
    missing = [k for k in ("candidates", "keep", "rung", "minutes", "survivors") if k not in value]
    if missing:
        return "missing " + ", ".join(missing)
    unknown = sorted(set(value) - set(names))
    if unknown:
        return "unknown " + ", ".join(unknown)
    names_ok = all(isinstance(value[k], list) and all(isinstance(n, str) for n in value[k])
                   for k in ("candidates", "survivors"))
    numbers_ok = all(isinstance(value[k], (int, float)) and not isinstance(value[k], bool)
                     for k in ("keep", "rung", "minutes"))
    maps_ok = all(isinstance(value.get(k, {}), dict) for k in ("scores", "steps", "kinds", "spec"))
    if not (names_ok and numbers_ok and maps_ok):
        return "a value of the wrong type"
    twins = value.get("spec", {}).get("twins", {})
    if not isinstance(twins, dict) or not all(isinstance(o, str) for o in twins.values()):
        return "a value of the wrong type"
    if not value["survivors"] or set(value["survivors"]) - set(value["candidates"]) - set(twins):
        return "survivors that are not among its candidates"
    return None


def _cores_read(cores, candidates: list[str]) -> dict[str, float]:
    """The decision's "cores" as read: only it is shown, never decided on, so a damaged value is dropped (a
    non-number, one outside 0-64 cores, a name that is no candidate) rather than refuse the decision
    (probe 56: "cores": "abc" stopped a finished recipe, whose only way out was to audition again)."""
    if not isinstance(cores, dict):
        return {}
    return {n: float(c) for n, c in cores.items() if n in candidates and isinstance(c, (int, float))
            and not isinstance(c, bool) and math.isfinite(c) and 0 <= c <= 64}


def _fmt(score: float | None) -> str:
    return "  -   " if score is None else f"{score:.4f}"


def difference_error(a: float, b: float, n: int) -> float:
    """The standard error of the difference of accuracies a and b, each on n utterances (0: n unknown)."""
    return math.sqrt((a * (1 - a) + b * (1 - b)) / n) if n > 0 else 0.0


# the [audition] settings a cut depends on, and the twins (kit.recipe.Recipe.audition_for)
SPEC_KEYS = ("keep", "rung", "within", "kinds", "per_slot", "tie", "twins")


def decided(root: Path, candidates: list[str], spec: dict) -> AuditionResult | None:
    """The decision of an earlier run, when every survivor's run dir is still there (--fresh moves
    them aside: the audition runs again; some gone and some still here is refused). Refused (KitError)
    when it was taken over other candidates or [audition] settings than the recipe's now: its
    survivors have trained past the cut, so a new cut would rank their later scores against a new
    candidate's early one."""
    path = root / AUDITION_FILE
    if not path.is_file():
        return None
    result = AuditionResult.read(path)
    ran = [n for n in result.survivors if n not in result.twins]       # a twin starts after the cut: maybe not yet
    gone = [n for n in ran if not (root / n).is_dir()]
    if gone:
        here = [n for n in result.survivors if (root / n).is_dir()]
        if here:            # a new cut beside members trained under this one (probe 45: a --fresh stopped part way)
            raise KitError(f"{path}: survivor(s) {', '.join(gone)} of this decision are gone while {', '.join(here)} "
                           "are still here (a --fresh stopped part way, or a folder moved?), so a new cut would be "
                           "voted beside members of the old one; put them back, or re-run with --fresh to audition "
                           "again")
        return None
    # a survivor with no summary but its checkpoint resumes from it (probe 45); with neither, it never
    # trained under this decision (probe 42: the folder made again), so where it stands is unknown
    lost = [n for n in ran if RunDir(root / n).summary() is None and not RunDir(root / n).has_checkpoint]
    if lost:
        raise KitError(f"{path}: survivor(s) {', '.join(lost)} have neither a readable summary.json nor a checkpoint "
                       "(last.pt), so kit cannot tell where they stand against the cut; put them back, or re-run "
                       "with --fresh to audition again")
    added, gone = sorted(set(candidates) - set(result.candidates)), sorted(set(result.candidates) - set(candidates))
    changes = ([f"candidate(s) added: {', '.join(added)}"] if added else []) + \
        ([f"candidate(s) gone: {', '.join(gone)}"] if gone else []) + \
        [f"[audition] {k} {result.spec[k]!r} -> {spec[k]!r}" for k in SPEC_KEYS
         if k in result.spec and result.spec[k] != spec.get(k)]
    if changes:
        raise KitError(f"{path}: the audition was decided before the recipe changed ({'; '.join(changes)}), and "
                       f"its survivors ({', '.join(result.survivors)}) have trained on since the cut; re-run with "
                       f"--fresh to audition again (old members are moved to {root}.old-<time>), with "
                       "--no-audition for the fixed members, or with --runs OTHER to keep both")
    return result


def record(root: Path, recipe: str, result: AuditionResult) -> None:
    """The candidates as Optuna trials in RUNS/<recipe>/audition.optuna.journal: the rung score
    reported at its step; kept trials COMPLETE with it, pruned ones PRUNED, diverged ones FAIL."""
    # deferred: optuna (and its sqlalchemy) loads in about a second: only when a cut is recorded
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = root / JOURNAL_FILE
    path.unlink(missing_ok=True)                    # one decision, one record
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name=f"{recipe}-audition", storage=storage, direction="maximize")
    study.set_user_attr("keep", result.keep)
    study.set_user_attr("rung_minutes", result.rung * result.minutes)
    for name in result.candidates:
        trial = study.ask()
        trial.set_user_attr("member", name)
        score = result.scores.get(name)
        if score is None:
            study.tell(trial, state=TrialState.FAIL)
            continue
        trial.report(score, step=max(result.steps.get(name, 0), 0))
        if name in result.survivors:
            study.tell(trial, score)
        else:
            study.tell(trial, state=TrialState.PRUNED)
