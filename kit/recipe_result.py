"""What `kit recipe run` returns (kit.zoo.run_recipe): one typed record read by the CLI's table,
the accuracy bench and the tests, instead of a dict read with `.get`.

Two validation accuracies, named for what they are: `val_acc_crop` is what training scored
(summary.json: centre crops of infer.window frames in a timed run, whole utterances otherwise: the
figure the best checkpoint was chosen by); `val_acc` is the prediction's own (ids.json: whole
utterances or windows, the mode it chose), None until the member is predicted. The table prints
the prediction's, or the crop figure marked "(crop)" when there is none yet.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.audition_record import AuditionResult
from kit.budget import lost_time_note
from kit.rundir import RunDir


@dataclass
class MemberResult:
    name: str
    run_dir: str
    params: int = 0
    step: int = 0
    minutes: float = 0.0
    note: str = ""
    diverged: bool = False
    val_acc_crop: float | None = None        # summary.json: training's centre crops (None: never evaluated)
    val_acc: float | None = None             # ids.json: the prediction's, in `mode` (None: not predicted)
    mode: str = ""                           # the prediction's mode: full, sliding or centre

    @property
    def accuracy(self) -> float | None:
        """The figure to compare members by: the prediction's, else training's crops."""
        return self.val_acc if self.val_acc is not None else self.val_acc_crop

    def accuracy_text(self) -> str:
        if self.val_acc is not None:
            return f"{self.val_acc:.4f}"
        return "-" if self.val_acc_crop is None else f"{self.val_acc_crop:.4f} (crop)"


@dataclass
class VoteResult:
    """A vote over run dirs (kit.ensemble): its CSV, validation accuracy (in-sample and out of fold)
    and, for the final vote, its manifest, weights and the per-member table."""
    val_acc: float | None
    csv: str
    vote: str = ""
    val_acc_oof: float | None = None
    manifest: str = ""
    table: Any = None
    weights_mode: str = ""
    method: str | None = None
    members: list[str] = field(default_factory=list)
    weights: list[float] | None = None

    @classmethod
    def of(cls, ens: dict, after: dict, run_dirs: list) -> VoteResult:
        """The vote kit.ensemble.ensemble_runs returned (`ens`) over `run_dirs`, as the recipe's [after] asked."""
        return cls(ens["val_acc"], str(ens["csv"]), after["ensemble"], ens.get("oof_acc"), str(ens["manifest"]),
                   ens.get("table"), after["weights"], ens.get("method"), [str(d) for d in run_dirs],
                   [float(w) for w in ens["weights"]] if ens.get("weights") is not None else None)


@dataclass
class RoundResult:
    """One pseudo-labelling round (kit.rounds.pseudo_rounds)."""
    round: int
    pseudo_labels: str
    count: int
    threshold: float
    estimated_precision: float | None
    members: list[str]                       # the run dirs voted after the round
    fine_tuned: list[str]
    diverged: dict[str, dict] = field(default_factory=dict)     # fine-tune run dir -> {step, voted}


@dataclass
class StudentResult:
    """The distilled student (kit.rounds.distill_stage): its CSV, or the step it diverged at."""
    run_dir: str
    val_acc: float | None = None
    csv: str | None = None
    diverged_at: int | None = None
    submission: dict | None = None


@dataclass
class RecipeResult:
    recipe: str
    budget: str
    data: str
    members: list[MemberResult] = field(default_factory=list)
    minutes: float = 0.0                     # the call's wall time
    vote0: VoteResult | None = None          # the vote before pseudo-labelling (with rounds only)
    before_refit: VoteResult | None = None   # the vote before the refit (with [after] refit only)
    lmft: list[str] = field(default_factory=list)   # the large-margin fine-tunes voted in their members' place
    refits: list[str] = field(default_factory=list)  # the refits (train + validation) voted in their members' place
    rounds: list[RoundResult] = field(default_factory=list)
    ensemble: VoteResult | None = None       # the vote submitted
    report: str | None = None
    student: StudentResult | None = None
    submission: dict | None = None           # kit.kaggle.recipe_submit's record: status, public, private, ...
    resume: str | None = None                # why the after stages wait, and how to continue
    audition: AuditionResult | None = None   # the cut, when the run auditioned its candidates

    def member(self, name: str) -> MemberResult:
        return next(m for m in self.members if m.name == name)

    def to_dict(self) -> dict:
        """Plain JSON-able data (bench files, `--json`)."""
        return asdict(self)


def member_result(name: str, run: RunDir, skipped: bool = False, not_started: bool = False) -> MemberResult:
    """A member's row from its run dir's summary.json (before prediction: val_acc_crop only).
    skipped: kept from an earlier run; not_started: --max-hours left it no time."""
    s = run.summary() or {}
    note = "; ".join(filter(None, [_note(s, skipped), lost_time_note(s, run.planned_minutes) if s else ""]))
    if not_started and not s:
        note = "not started (--max-hours; re-run continues)"
    acc = s.get("best_val_acc")                 # -1: never evaluated
    return MemberResult(name, str(run.path), s.get("params", 0), s.get("step", 0), s.get("seconds", 0.0) / 60,
                        note, s.get("stopped_reason") == "diverged",
                        val_acc_crop=None if acc is None or acc < 0 else acc)


def _note(summary: dict, skipped: bool) -> str:
    if summary.get("stopped_reason") == "diverged":
        return f"diverged at step {summary['step']} (not voted)"
    if skipped:
        return "finished earlier"
    reason = summary.get("stopped_reason", "not trained")
    if reason == "time":
        return "stopped at its time limit (re-run continues)"
    return "" if reason == "budget" else reason


def submission_message(template: str, recipe: str, budget: str, run_dirs: list, ens: dict) -> str:
    """A recipe's submission message: {recipe}, {budget} and {members} filled in, {members} the run dirs
    voted (" + "-joined), or, when the vote chose one of them alone (`single`), that one, said so (probe
    46: Kaggle's list named both, as if both were voted)."""
    names, weights = [Path(d).name for d in run_dirs], list(ens.get("weights") or [])
    members = " + ".join(names)
    if ens.get("method") == "single" and len(names) > 1 and len(weights) == len(names):
        one = names[max(range(len(names)), key=lambda k: weights[k])]
        members = f"{one} alone (the vote chose it over {' + '.join(n for n in names if n != one)})"
    return template.replace("{recipe}", recipe).replace("{budget}", budget).replace("{members}", members)
