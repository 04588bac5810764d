"""What an ensemble is made of: member accuracies, the honest ensemble gain, the oracle and
how often members disagree, as a table, a dict and a PNG (bars + disagreement heatmap).

`report_runs` computes, `format_report` turns the result into text; `kit report` prints it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.audition_record import AUDITION_FILE, AuditionResult
from kit.budget import lost_time_note
from kit.ensemble.calibration import calibrate, fit_temperature, log_probs, mean_nll
from kit.ensemble.crossfit import DEFAULT_POOL, METHODS, auto_ensemble
from kit.ensemble.members import check_compatible, load_member, member_speakers
from kit.env import note_line
from kit.errors import KitError
from kit.fsio import sha256_file
from kit.plots import check_picture_path, plot_report
from kit.records import SubmissionManifest
from kit.rundir import RunDir
from kit.submission import read_answer_key, score_predictions, score_submission, stale_vote


# ---------------------------------------------------------------- pure numbers
def oracle_accuracy(preds, labels) -> float | None:
    """Fraction of utterances that at least one member gets right. preds (M, N), labels (N,)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    if labels.size == 0:
        return None
    return float((preds == labels[None, :]).any(axis=0).mean())


def disagreement_matrix(preds) -> np.ndarray:
    """(M, M): fraction of utterances on which members i and j predict different classes."""
    preds = np.asarray(preds)                                          # (M, N)
    if preds.shape[1] == 0:
        return np.zeros((len(preds), len(preds)))
    return (preds[:, None, :] != preds[None, :, :]).mean(axis=2)


def mean_disagreement(matrix) -> float | None:
    """Mean over member pairs i < j of the disagreement matrix (None for one member)."""
    matrix = np.asarray(matrix)
    if len(matrix) < 2:
        return None
    return float(matrix[np.triu_indices(len(matrix), k=1)].mean())


def _short_names(run_dirs) -> list[str]:
    names = [Path(d).name for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def _public_private(scores: dict) -> dict:
    """score_predictions' result as the report's two numbers (None for a half with no utterances)."""
    return {half: scores[half]["acc"] if scores[half]["n"] else None for half in ("public", "private")}


def _load_ensemble(ensemble_result, run_dirs) -> SubmissionManifest:
    """The ensemble manifest, from ensemble_runs' result dict or a NAME.json path."""
    path = ensemble_result.get("manifest") if isinstance(ensemble_result, dict) else ensemble_result
    if path is None:
        return SubmissionManifest.from_dict(ensemble_result)
    manifest = SubmissionManifest.load(path, whole=True)
    members = manifest.members
    if members and [str(Path(m).resolve()) for m in members] != [str(Path(d).resolve()) for d in run_dirs]:
        raise KitError(f"{path}: made from other runs ({len(members)} members) than the ones given; "
                       "give the same run dirs in the same order")
    manifest.csv = _voted_csv(Path(path), manifest)
    for change in stale_vote(manifest):
        note_line(f"note: {path}'s vote is older than its members ({change}): its figures are the vote's, "
                  "the members' rows are theirs now")
    return manifest


def _voted_csv(path: Path, manifest: SubmissionManifest) -> str | None:
    """The CSV that holds the vote a manifest records (its csv_sha256): a manifest kept aside as
    NAME.json.old-<time> holds the vote of NAME.csv.old-<time>, not the NAME.csv it names (probe 36:
    the report scored the newer vote, and drew over its picture). KitError when neither holds it."""
    if not manifest.csv or not manifest.csv_sha256:         # an older kit's manifest: as it says
        return manifest.csv
    stem, dot, suffix = path.name.partition(".json.old-")
    kept = path.with_name(f"{stem}.csv.old-{suffix}") if dot else None
    for csv in (kept, Path(manifest.csv)):
        if csv is not None and csv.is_file() and sha256_file(csv) == manifest.csv_sha256:
            return str(csv)
    raise KitError(f"{path}: no CSV holds the vote it records ({manifest.csv} has other bytes now, or is gone); "
                   "report it without --ensemble, or vote again with `kit ensemble`")


# ---------------------------------------------------------------- the report
def report_runs(run_dirs, ensemble_result=None, png=None, answers=None, pool: str = DEFAULT_POOL,
                folds: int = 5, audition: bool = True) -> dict:
    """Numbers that say whether an ensemble of predicted run dirs helps.

    ensemble_result: the dict ensemble_runs returned, or the path of its NAME.json; None:
    the calibrated cross-fitted ensemble is computed on validation here (nothing is written).
    png: where to draw the report; None: beside the ensemble CSV (NAME_report.png) if there is
    one; False: no picture. answers: a Kaggle-style key (Id,Category,Usage) to add each
    member's and the ensemble's public/private test accuracy. audition: the cut the members came from
    (_audition) in the report; False where it is printed already (`kit recipe run`'s table).

    Returns {"members": [{member, run_dir, mode, temperature, val_acc, val_nll, val_acc_centre,
    val_acc_full, val_acc_sliding, public, private}], "ensemble": {name, method, val_acc,
    oof_acc, gain_in_sample, gain_oof, candidates, public, private} | None, "best_member_acc",
    "oracle", "mean_disagreement", "disagreement" (M x M lists), "n_val", "png"}.
    """
    if not run_dirs:
        raise KitError("no run dirs given to report on")
    if png:
        check_picture_path(png)             # before the work: never over the ledger or a checkpoint
    members = [load_member(d) for d in run_dirs]
    check_compatible(members)
    labels = members[0].val_labels
    preds = np.stack([m.val_probs.argmax(axis=1) for m in members])        # (M, N)
    names = _short_names([m.run_dir for m in members])
    rows = [_member_row(m, name, labels) for m, name in zip(members, names, strict=True)]
    if answers is not None:
        _score_members(rows, members, answers)
    accs = [r["val_acc"] for r in rows if r["val_acc"] is not None]
    best = max(accs) if accs else None
    ens = _ensemble_summary(members, ensemble_result, run_dirs, answers, pool, folds)
    if ens is not None:
        for kind, acc in (("gain_in_sample", ens["val_acc"]), ("gain_oof", ens["oof_acc"])):
            ens[kind] = None if acc is None or best is None else acc - best
    matrix = disagreement_matrix(preds)
    report = {"members": rows, "ensemble": ens, "best_member_acc": best, "oracle": oracle_accuracy(preds, labels),
              "mean_disagreement": mean_disagreement(matrix), "disagreement": matrix.tolist(),
              "n_val": int(len(labels)), "png": None, "audition": _audition(run_dirs) if audition else None}
    if png is None and ens is not None and ens.get("csv"):
        csv = Path(ens["csv"])          # NAME.csv.old-<time>: NAME.csv.old-<time>_report.png, not NAME's
        png = csv.with_name(f"{csv.stem if csv.suffix == '.csv' else csv.name}_report.png")
    if png:
        report["png"] = str(plot_report(report, png))
    return report


def _audition(run_dirs) -> list[str] | None:
    """The cut of the audition the members came from (its table, with any lost-steps line): from audition.json
    in their recipe's folder, when they share one and some of them are its candidates or survivors; None else."""
    parents = {Path(d).resolve().parent for d in run_dirs}
    if len(parents) != 1 or not (path := parents.pop() / AUDITION_FILE).is_file():
        return None
    try:
        cut = AuditionResult.read(path)
    except KitError as e:
        return [f"audition: not shown: {e}"]
    names = {Path(d).resolve().name for d in run_dirs}
    return cut.lines() if names & (set(cut.candidates) | set(cut.survivors)) else None


def _member_row(member, name: str, labels) -> dict:
    """A member's validation numbers: accuracy, temperature and calibrated NLL, and the accuracy
    of each way of predicting that `kit predict` recorded."""
    lp = log_probs(member.val_probs)
    t = fit_temperature(lp, labels) if len(labels) else None
    return {"member": name, "run_dir": str(member.run_dir), "mode": member.ids.inference_mode, "temperature": t,
            "val_acc": float((member.val_probs.argmax(axis=1) == labels).mean()) if len(labels) else None,
            "val_nll": mean_nll(calibrate(lp, t), labels) if t is not None else None,
            "val_acc_centre": member.ids.val_acc_centre, "val_acc_full": member.ids.val_acc_full,
            "val_acc_sliding": member.ids.val_acc_sliding, "note": _lost_steps(member.run_dir)}


def _lost_steps(run_dir: Path) -> str:
    """The run's lost-steps note (kit.budget.lost_time_note: steps lost to a shared machine, or a run
    well past its minutes), as the recipe's table shows it."""
    run = RunDir.of(run_dir)
    summary = run.summary()
    return lost_time_note(summary, run.planned_minutes) if summary else ""


def _score_members(rows: list[dict], members, answers) -> None:
    """Add each member's public/private test accuracy against the answer key to its row."""
    key = read_answer_key(answers)
    speakers = member_speakers(members[0])[0]
    for row, m in zip(rows, members, strict=True):
        predicted = dict(zip(m.ids.test, (speakers[k] for k in m.test_probs.argmax(axis=1)), strict=True))
        row.update(_public_private(score_predictions(predicted, key, str(m.run_dir), str(answers))))


def _ensemble_summary(members, ensemble_result, run_dirs, answers, pool: str, folds: int) -> dict | None:
    """The written ensemble's numbers (from its manifest, its CSV scored with the key), or
    without one the calibrated cross-fitted ensemble computed here; None when there is neither."""
    labels = members[0].val_labels
    if ensemble_result is not None:
        manifest = _load_ensemble(ensemble_result, run_dirs)
        ens = {"name": manifest.label, "method": manifest.description, "val_acc": manifest.val_acc,
               "oof_acc": manifest.oof_acc, "candidates": manifest.candidates, "csv": manifest.csv}
        if answers is not None and manifest.csv:
            ens.update(_public_private(score_submission(manifest.csv, answers)))
        return ens
    if len(labels) < 2:
        return None
    fit = auto_ensemble([m.val_probs for m in members], labels, None, METHODS, pool, folds)
    return {"name": "auto (not written)", "method": fit["method"], "val_acc": fit["val_acc"],
            "oof_acc": fit["oof_acc"], "candidates": fit["candidates"], "csv": None}


def _pct(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def format_report(report: dict) -> str:
    """The report as a plain-text table (what `kit report` prints)."""
    rows = report["members"]
    width = max([len("member")] + [len(r["member"]) for r in rows])
    scored = any("public" in r for r in rows)
    head = f"{'member':<{width}}  {'mode':<7} {'T':>6} {'val acc':>8} {'val NLL':>8}"
    head += f" {'centre':>7} {'full':>7} {'sliding':>7}" + (f" {'public':>7} {'private':>7}" if scored else "")
    lines = [f"validation: {report['n_val']} utterances; NLL after temperature scaling", head]
    for r in rows:
        t = "-" if r["temperature"] is None else f"{r['temperature']:.2f}"
        line = (f"{r['member']:<{width}}  {r['mode']:<7} {t:>6} {_pct(r['val_acc']):>8} {_pct(r['val_nll']):>8}"
                f" {_pct(r['val_acc_centre']):>7} {_pct(r['val_acc_full']):>7} {_pct(r['val_acc_sliding']):>7}")
        if scored:
            line += f" {_pct(r.get('public')):>7} {_pct(r.get('private')):>7}"
        lines.append(line)
    lines += [f"{r['member']}: {r['note']}" for r in rows if r.get("note")]
    lines += report.get("audition") or []
    ens = report["ensemble"]
    if ens is not None:
        lines.append(f"ensemble {ens['name']}: {ens['method']}")
        lines.append(f"  val acc in-sample {_pct(ens['val_acc'])}   out-of-fold (honest) {_pct(ens['oof_acc'])}")
        gains = [f"{kind} {ens[key]:+.4f}" for kind, key in (("in-sample", "gain_in_sample"),
                                                              ("out-of-fold", "gain_oof")) if ens[key] is not None]
        lines.append(f"  gain over the best member ({_pct(report['best_member_acc'])}): {', '.join(gains) or '-'}")
        if ens.get("candidates"):
            lines.append("  candidates (out-of-fold / in-sample val acc): " + "   ".join(
                f"{m} {_pct(c['oof_acc'])}/{_pct(c['val_acc'])}" for m, c in ens["candidates"].items()))
        if "public" in ens:
            lines.append(f"  test public {_pct(ens['public'])}   private {_pct(ens['private'])}")
    lines.append(f"oracle (some member right): {_pct(report['oracle'])}   "
                 f"mean pairwise disagreement: {_pct(report['mean_disagreement'])}")
    if len(rows) > 1:
        lines.append("disagreement (fraction of validation utterances where two members' argmax differ):")
        short = [r["member"][:7] for r in rows]
        lines.append(" " * width + "  " + " ".join(f"{s:>7}" for s in short))
        for r, values in zip(rows, report["disagreement"], strict=True):
            lines.append(f"{r['member']:<{width}}  " + " ".join(f"{v:7.3f}" for v in values))
    if report.get("png"):
        lines.append(f"picture: {report['png']}")
    return "\n".join(lines)
