"""A run dir as a type: what kit asks of one member's (or fine-tune's, or student's) folder,
answered in one place: has it finished training, did it stop at a time limit or diverge, was it
predicted from the checkpoint now on disk.

"Finished" means summary.json is there and the run did not stop at a session's time limit (it
finished its steps, its time budget, or diverged); a summary.json that cannot be read counts as not
finished, so the member resumes from last.pt rather than being voted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kit.config import from_dict, load_toml
from kit.errors import KitError
from kit.records import predictions_current
from kit.written import CHECKPOINT_FILES, SUMMARY, check_own_record, read_summary


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def of(cls, path: str | Path) -> RunDir:
        return cls(Path(path))

    @property
    def name(self) -> str:
        return self.path.name

    def summary(self) -> dict | None:
        """summary.json (written when a training session ends), or None when absent or unreadable."""
        try:
            return read_summary(self.path / SUMMARY)
        except KitError:
            return None

    def summary_problem(self) -> str | None:
        """Why a summary.json that is there cannot be read (the run then counts as not finished and
        resumes); None when it reads, or is absent. KitError when the reason is the run's record, not its
        summary: checkpoints.json written by another run (probe 54 F5: the summary was blamed and said to
        resume before the record was refused), or unreadable."""
        if not (self.path / SUMMARY).exists():
            return None
        try:
            read_summary(self.path / SUMMARY)
        except KitError as e:
            check_own_record(self.path)
            return str(e)
        return None

    @property
    def stopped_reason(self) -> str | None:
        """budget | time | diverged | ... (summary.json), or None before any session has ended."""
        summary = self.summary()
        return None if summary is None else summary.get("stopped_reason")

    @property
    def finished(self) -> bool:
        """Done training: it will not train again unless moved aside (--fresh)."""
        summary = self.summary()
        return summary is not None and summary.get("stopped_reason") != "time"

    @property
    def stopped_at_time_limit(self) -> bool:
        return self.stopped_reason == "time"

    @property
    def diverged(self) -> bool:
        return self.stopped_reason == "diverged"

    @property
    def diverged_at(self) -> int | None:
        """The step at which its training diverged, or None when it did not."""
        summary = self.summary()
        return summary["step"] if summary is not None and summary.get("stopped_reason") == "diverged" else None

    @property
    def has_checkpoint(self) -> bool:
        """last.pt is there: a re-run resumes it."""
        return (self.path / "last.pt").is_file()

    @property
    def planned_minutes(self) -> float:
        """The training minutes its config.toml gave it (train.minutes), 0.0 for a run without a time
        budget or a config that cannot be read."""
        path = self.path / "config.toml"
        try:
            return from_dict(load_toml(path), where=str(path)).train.minutes    # as kit.train.results reads it
        except (KitError, OSError):
            return 0.0

    def not_done(self) -> str | None:
        """Why a run with a checkpoint has not finished training, in words (probe 57: one stopped at a session's
        time limit, or killed before its summary, was predicted, voted and submitted by hand without a word);
        None when it has finished, holds no checkpoint, or its summary.json cannot be read (summary_problem)."""
        if self.finished or not any((self.path / n).is_file() for n in CHECKPOINT_FILES):
            return None
        summary = self.summary()
        if summary is not None:             # not finished: stopped at a session's time limit
            total = summary.get("total_steps")
            of = f" of {total:,}" if isinstance(total, int) and not isinstance(total, bool) else ""
            return f"its training stopped at a session's time limit at step {summary['step']:,}{of} (summary.json)"
        if (self.path / SUMMARY).exists():
            return None
        return "its training has not finished (checkpoints, no summary.json: a session still training it, or killed)"

    def predicted(self, which: str | None = None) -> bool:
        """Its val/test probabilities came from the checkpoint <which>.pt now on disk (kit.records)."""
        return predictions_current(self.path, which)

    def progress(self) -> str:
        """A few words on where it stands, for the launchers' log lines."""
        if self.finished:
            return "finished"
        return "checkpointed, not finished" if self.has_checkpoint else "not started"


def warn_not_done(run_dirs, log, done: str = "voted") -> None:
    """One line for each of run_dirs that a recipe would not vote as it stands, `done` (voted, predicted,
    reported) by hand: its training diverged (summary.json): its predictions are of its last good checkpoint, where
    a recipe leaves such a member out (probe 51: said nothing); its summary.json is there but not one its training
    wrote (probe 53: "{}" said nothing); or its training has not finished (RunDir.not_done; probe 57)."""
    for run_dir in run_dirs:
        run = RunDir.of(run_dir)
        if run.diverged:
            log(f"warning: {run_dir}: its training diverged at step {run.diverged_at} (summary.json); it is {done} "
                "from its last good checkpoint, where a recipe leaves such a member out of the vote")
        elif problem := run.summary_problem():
            log(f"warning: {problem}; it is {done} from its checkpoint as it stands, where a recipe would resume "
                "its training")
        elif why := run.not_done():
            log(f"warning: {run_dir}: {why}; it is {done} from its checkpoint as it stands, where a recipe trains it "
                "to the end first (re-run its training with --resume)")
