"""The pictures kit draws, each a PNG written atomically: the ledger's public vs private scores
(`kit scores`) and an ensemble report's member accuracies and disagreement (`kit report`).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from kit.errors import KitError, path_problem
from kit.fsio import atomic_path


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib  # heavy: matplotlib, imported only when a picture is drawn

    matplotlib.use("Agg")
    # A file name in a script the font lacks (CJK) is drawn as boxes; the table beside it names it.
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from", category=UserWarning)
    import matplotlib.pyplot as plt  # deferred: after use("Agg"), pyplot picks its backend on import

    return plt


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_picture_path(png: str | os.PathLike) -> None:
    """A picture is written only to a .png name and never over a file that is not a PNG (the ledger,
    a submitted CSV or a checkpoint named by mistake): one line instead."""
    path = Path(png)
    if path.suffix.lower() != ".png":
        raise KitError(f"{path}: a picture's name must end in .png (kit writes a PNG there)")
    if path.is_dir():
        raise KitError(f"{path}: is a folder; give the picture's file name")
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            head = f.read(len(PNG_SIGNATURE))
    except OSError as e:
        raise KitError(f"{path}: cannot read the file already there ({e.strerror})") from None
    if head != PNG_SIGNATURE:
        raise KitError(f"{path}: a file that is not a PNG picture is there; kit does not write over it "
                       "(choose another name)")


def _save(fig, png, dpi: int = 100) -> Path:
    """Write the figure atomically, so a full disk leaves no partial PNG; a write that fails is
    one line naming the PNG (KitError), not PIL's traceback."""
    plt = _pyplot()
    try:
        check_picture_path(png)
        fig.tight_layout()
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    except OSError as e:
        raise KitError(path_problem(e) or f"{png}: could not write the picture ({e.strerror or e})") from None
    finally:
        plt.close(fig)
    return Path(png)


def plot_scores(table, png) -> Path | None:
    """Public vs private accuracy per scored submission, as grouped bars; None if nothing is scored."""
    plt = _pyplot()
    scored = table[pd.to_numeric(table["public"], errors="coerce").notna()]
    if scored.empty:
        return None
    several = len(scored.groupby(["competition", "target"], dropna=False)) > 1     # whose row is whose (probe 57)
    where = [f" ({c or '-'}, {w or '-'})" if several else "" for c, w in zip(scored["competition"], scored["target"],
                                                                          strict=True)]
    labels = [f"{Path(f).stem}{w}\n{t[:16]}" for f, w, t in zip(scored["file"], where, scored["time"], strict=True)]
    y = range(len(scored))
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.5 * len(scored)))
    ax.barh([i - 0.2 for i in y], pd.to_numeric(scored["public"]), height=0.4, label="public")
    ax.barh([i + 0.2 for i in y], pd.to_numeric(scored["private"], errors="coerce"), height=0.4, label="private")
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy")
    ax.set_title("public vs private score per submission (sorted by public)")
    ax.legend(loc="lower right")
    return _save(fig, png)


def plot_report(report: dict, png: str | os.PathLike) -> Path:
    """Bars of member vs ensemble validation accuracy with the oracle as a line, and the
    pairwise disagreement heatmap; written atomically to `png`."""
    plt = _pyplot()
    rows, ens = report["members"], report["ensemble"]
    labels = [r["member"] for r in rows]
    values = [r["val_acc"] or 0.0 for r in rows]
    colours = ["tab:blue"] * len(rows)
    if ens is not None:
        for kind, key, colour in (("in-sample", "val_acc", "tab:orange"), ("out-of-fold", "oof_acc", "tab:green")):
            if ens.get(key) is not None:
                labels.append(f"ensemble\n{kind}")
                values.append(ens[key])
                colours.append(colour)
    m = len(rows)
    fig, (bars, heat) = plt.subplots(1, 2, figsize=(11, 1.6 + 0.35 * max(len(labels), m)),
                                     gridspec_kw={"width_ratios": [1.2, 1]})
    y = np.arange(len(labels))
    bars.barh(y, values, color=colours)
    bars.set_yticks(y, labels, fontsize=7)
    bars.invert_yaxis()
    if report["oracle"] is not None:
        bars.axvline(report["oracle"], color="black", linestyle="--", label=f"oracle {report['oracle']:.3f}")
        bars.legend(loc="lower right", fontsize=7)
    low = min(values + [report["oracle"] or 1.0])
    bars.set_xlim(max(0.0, low - 0.05), 1.0)
    bars.set_xlabel("validation accuracy")
    bars.set_title("members vs ensemble")
    matrix = np.asarray(report["disagreement"])
    image = heat.imshow(matrix, cmap="viridis", vmin=0)
    heat.set_xticks(range(m), [r["member"] for r in rows], rotation=90, fontsize=7)
    heat.set_yticks(range(m), [r["member"] for r in rows], fontsize=7)
    if m <= 12:
        for i in range(m):
            for j in range(m):
                dark = matrix[i, j] < 0.5 * max(matrix.max(), 1e-12)       # viridis: dark low, bright high
                heat.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6,
                          color="white" if dark else "black")
    heat.set_title("pairwise disagreement (argmax differs)")
    fig.colorbar(image, ax=heat, fraction=0.046)
    return _save(fig, png)
