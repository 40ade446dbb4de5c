"""Evaluation figures: qualitative grid, Dice bars with CIs, Bland-Altman plots, confusion matrices, training curves.

Colours follow the paper (``plaque.classes.CLASS_COLOURS``): background black, vessel wall white,
lumen blue, calcified plaque yellow, non-calcified plaque red. Rows of the qualitative grid that
show a hard case are framed in orange (``HARD_FRAME_COLOUR``), a colour that is not a class colour.

Row selection for the qualitative grid (``select_rows``), from the per-slice macro Dice of the
reference method (NaN marks a slice with no foreground in truth or prediction; such slices are
never chosen):

* representative rows: the ``n_representative`` slices whose Dice is closest to the median Dice of
  all finite slices (exact ties broken by the lower slice index), ordered from closest to farthest;
* hard rows: among the remaining finite slices, the ``n_hard`` with the lowest Dice (exact ties
  broken by the lower index), ordered from lowest upwards.

Every function takes plain numpy arrays, dicts and DataFrames, so the figures do not depend on how
the metrics were computed. Figures are built on matplotlib's Agg canvas without pyplot, so building
them changes no global state; ``save_figure`` writes PNG and PDF atomically.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from plaque.classes import CLASS_NAMES, FOREGROUND, NUM_CLASSES, colourize
from plaque.errors import InputError
from plaque.viz import legend_handles

__all__ = [
    "HARD_FRAME_COLOUR",
    "PNG_DPI",
    "bland_altman_plots",
    "confusion_plot",
    "dice_bars",
    "display_name",
    "qualitative_grid",
    "dvclive_curve_path",
    "read_dvclive_curve",
    "row_normalise",
    "save_figure",
    "select_rows",
    "training_curves",
    "learning_curves",
]

HARD_FRAME_COLOUR = "#ff8c00"  # dark orange: distinct from every class colour
PNG_DPI = 150

_DISPLAY = {"vessel_wall": "vessel wall", "non_calcified": "non-calcified"}


def display_name(name: str) -> str:
    """Human-readable form of a class or volume key (``non_calcified`` -> ``non-calcified``)."""
    return _DISPLAY.get(name, name.replace("_", " "))


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _method_colours(n: int) -> list[tuple[float, float, float, float]]:
    """Stable per-method colours (``tab10`` order), identical across figures for the same method order."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


# ----------------------------------------------------------------------------------------- rows


def select_rows(slice_dice: np.ndarray, n_representative: int = 4, n_hard: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Choose the slices shown in the qualitative grid (rule in the module docstring).

    Args:
        slice_dice: ``(N,)`` per-slice macro Dice of the reference method; NaN = no foreground.
        n_representative: how many slices near the median to take.
        n_hard: how many lowest-Dice slices to take from the rest.

    Returns:
        ``(indices, is_hard)``, both ``(K,)`` with ``K <= n_representative + n_hard``: slice indices
        (representative first, then hard) and a bool flag that is True for the hard rows. Fewer rows
        are returned when fewer finite slices exist.

    Raises:
        ValueError: ``slice_dice`` is not 1-D, a count is negative, or no slice has a finite Dice.
    """
    dice = np.asarray(slice_dice, dtype=np.float64)
    if dice.ndim != 1:
        raise ValueError(f"slice_dice must be 1-D, got shape {dice.shape}")
    if n_representative < 0 or n_hard < 0:
        raise ValueError("n_representative and n_hard must be non-negative")
    candidates = np.flatnonzero(np.isfinite(dice))
    if candidates.size == 0:
        raise ValueError("no slice has a finite Dice (no foreground in any slice)")
    values = dice[candidates]
    distance = np.abs(values - np.median(values))
    order = np.lexsort((candidates, distance))  # by distance, then index
    representative = candidates[order[:n_representative]]
    rest = np.setdiff1d(candidates, representative)  # sorted by index
    hard = rest[np.lexsort((rest, dice[rest]))[:n_hard]]
    indices = np.concatenate([representative, hard]).astype(np.intp)
    is_hard = np.concatenate([np.zeros(representative.size, bool), np.ones(hard.size, bool)])
    return indices, is_hard


# ------------------------------------------------------------------------------- qualitative grid


def qualitative_grid(
    images: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    hard: np.ndarray,
    *,
    row_labels: Sequence[str] | None = None,
) -> Figure:
    """The paper's Figure 1: per row the input, the ground truth and each method's prediction.

    Args:
        images: ``(R, H, W)`` grey inputs scaled to [0, 1].
        truth: ``(R, H, W)`` ground-truth class ids.
        predictions: method display name -> ``(R, H, W)`` predicted class ids; columns follow the
            dict's order (e.g. ``"Ours"``, ``"CAT-SAM"``, ``"SAM+LoRA"``, ``"nnU-Net"``).
        hard: ``(R,)`` bool; rows flagged True get an orange frame around the whole row.
        row_labels: ``R`` labels written left of each row (e.g. patient and slice).

    Returns:
        A figure with ``R * (2 + len(predictions))`` image axes (row-major), a class legend and,
        for each hard row ``r``, a ``Rectangle`` with gid ``"hard-frame-{r}"`` in ``fig.artists``.
    """
    images = np.asarray(images)
    truth = np.asarray(truth)
    hard = np.asarray(hard, dtype=bool)
    if images.ndim != 3 or images.shape[0] == 0:
        raise ValueError(f"images must be (R, H, W) with R >= 1, got shape {images.shape}")
    rows, height, width = images.shape
    if truth.shape != images.shape:
        raise ValueError(f"truth has shape {truth.shape}, images {images.shape}")
    for name, pred in predictions.items():
        if np.shape(pred) != images.shape:
            raise ValueError(f"prediction {name!r} has shape {np.shape(pred)}, images {images.shape}")
    if hard.shape != (rows,):
        raise ValueError(f"hard must have shape ({rows},), got {hard.shape}")
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels has {len(row_labels)} entries for {rows} rows")

    titles = ["Input", "Ground truth", *predictions]
    cols = len(titles)
    # Exact geometry in inches: cells keep the image aspect so the axes boxes are the image boxes.
    cell_w = 1.5
    cell_h = cell_w * height / width
    gap_w, gap_h = 0.06, 0.22
    left, right = (0.35 if row_labels is not None else 0.12), 0.12
    top, bottom = 0.35, 0.55
    fig_w = left + cols * cell_w + (cols - 1) * gap_w + right
    fig_h = top + rows * cell_h + (rows - 1) * gap_h + bottom
    fig = _new_figure(fig_w, fig_h)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(
        left=left / fig_w,
        right=1 - right / fig_w,
        bottom=bottom / fig_h,
        top=1 - top / fig_h,
        wspace=gap_w / cell_w,
        hspace=gap_h / cell_h,
    )

    maps = [truth, *predictions.values()]
    for r in range(rows):
        axes[r, 0].imshow(images[r], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        for c, labels in enumerate(maps, start=1):
            axes[r, c].imshow(colourize(np.asarray(labels[r])), interpolation="nearest")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=7)
    for c, title in enumerate(titles):
        axes[0, c].set_title(title, fontsize=9)

    pad_w, pad_h = 0.04 / fig_w, 0.04 / fig_h  # frame padding, well inside the row gap
    if row_labels is not None:
        pad_left = (left - 0.04) / fig_w  # include the row label
    else:
        pad_left = pad_w
    for r in np.flatnonzero(hard):
        first, last = axes[r, 0].get_position(), axes[r, -1].get_position()
        x0, y0 = first.x0 - pad_left, first.y0 - pad_h
        frame = Rectangle(
            (x0, y0),
            last.x1 + pad_w - x0,
            first.y1 + pad_h - y0,
            transform=fig.transFigure,
            fill=False,
            edgecolor=HARD_FRAME_COLOUR,
            linewidth=2.0,
            gid=f"hard-frame-{r}",
        )
        fig.add_artist(frame)

    handles = legend_handles()
    for h in handles:
        h.set_label(display_name(h.get_label()))
    if hard.any():
        handles.append(Patch(fill=False, edgecolor=HARD_FRAME_COLOUR, linewidth=2.0, label="hard case"))
    fig.legend(
        handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False, bbox_to_anchor=(0.5, 0.0)
    )
    return fig


# -------------------------------------------------------------------------------------- Dice bars


def dice_bars(table: Mapping[str, Mapping[str, tuple[float, float, float]]]) -> Figure:
    """Grouped bars of per-class Dice with 95 % confidence intervals.

    Args:
        table: method -> foreground class name (``"vessel_wall"``, ``"lumen"``, ``"calcified"``,
            ``"non_calcified"``) -> ``(estimate, low, high)``. A NaN estimate is drawn as a missing bar
            labelled "n/a" with a note; a NaN bound drops that whisker.

    Returns:
        A one-axes figure: per method a ``BarContainer`` labelled with the method (NaN height for a
        missing estimate) followed, where any CI is finite, by an ``ErrorbarContainer``.
    """
    if not table:
        raise ValueError("table has no methods")
    classes = [CLASS_NAMES[k] for k in FOREGROUND]
    methods = list(table)
    values = np.full((len(methods), len(classes), 3), np.nan)
    for m, method in enumerate(methods):
        for c, cls in enumerate(classes):
            if cls not in table[method]:
                raise ValueError(f"method {method!r} has no entry for class {cls!r}")
            est, low, high = (float(v) for v in table[method][cls])
            if np.isfinite(est) and ((np.isfinite(low) and low > est) or (np.isfinite(high) and high < est)):
                raise ValueError(f"{method!r}/{cls!r}: CI ({low}, {high}) does not contain the estimate {est}")
            values[m, c] = est, low, high

    fig = _new_figure(max(6.0, 1.2 + 0.45 * len(methods) * len(classes)), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    centres = np.arange(len(classes), dtype=float)
    missing = False
    for m, (method, colour) in enumerate(zip(methods, _method_colours(len(methods)))):
        x = centres - 0.4 + width * (m + 0.5)
        est, low, high = values[m].T
        ax.bar(x, est, width * 0.92, color=colour, label=method, edgecolor="black", linewidth=0.4)
        ok = np.isfinite(est) & np.isfinite(low) & np.isfinite(high)
        if ok.any():
            ax.errorbar(
                x[ok],
                est[ok],
                yerr=np.stack([est[ok] - low[ok], high[ok] - est[ok]]),
                fmt="none",
                ecolor="black",
                elinewidth=1.0,
                capsize=2.5,
            )
        for xi in x[~np.isfinite(est)]:
            missing = True
            ax.text(xi, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="dimgrey")
    ax.set_xticks(centres, [display_name(c) for c in classes])
    ax.set_ylabel("Dice")
    ax.set_ylim(0.0, 1.05)
    ax.grid(axis="y", linewidth=0.3, alpha=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, ncol=min(len(methods), 4), loc="upper center", bbox_to_anchor=(0.5, 1.16), frameon=False)
    if missing:
        fig.text(0.01, 0.01, "n/a: no estimate (Dice undefined for this class)", fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.04 if missing else 0, 1, 1))
    return fig


# ---------------------------------------------------------------------------------- Bland-Altman


def bland_altman_plots(volumes: Mapping[str, tuple[np.ndarray, np.ndarray]], *, method: str) -> Figure:
    """Bland-Altman agreement of predicted and true plaque volumes, one panel per volume kind.

    Args:
        volumes: kind (e.g. ``"calcified"``, ``"non_calcified"``, ``"total"``) -> ``(pred, true)``,
            each ``(P,)`` in mm³; pairs with a non-finite value are dropped.
        method: display name of the method, used in the panel titles.

    Returns:
        A figure with one axes per kind, in the dict's order: x = mean of the pair, y = pred - true,
        a solid bias line (gid ``"bias"``) and dashed limits of agreement bias ± 1.96 SD (sample SD,
        gids ``"loa-upper"``/``"loa-lower"``; only with at least two pairs).
    """
    if not volumes:
        raise ValueError("volumes is empty")
    fig = _new_figure(3.6 * len(volumes), 3.4)
    axes = fig.subplots(1, len(volumes), squeeze=False)[0]
    for ax, (kind, (pred, true)) in zip(axes, volumes.items()):
        pred = np.asarray(pred, dtype=np.float64).ravel()
        true = np.asarray(true, dtype=np.float64).ravel()
        if pred.shape != true.shape:
            raise ValueError(f"{kind!r}: pred has {pred.size} values, true {true.size}")
        keep = np.isfinite(pred) & np.isfinite(true)
        pred, true = pred[keep], true[keep]
        ax.set_title(f"{method}: {display_name(kind)}", fontsize=9)
        ax.set_xlabel("mean of predicted and true (mm³)", fontsize=8)
        ax.set_ylabel("predicted − true (mm³)", fontsize=8)
        ax.tick_params(labelsize=7)
        if pred.size == 0:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="dimgrey")
            continue
        mean, diff = (pred + true) / 2, pred - true
        face = colourize(np.array(CLASS_NAMES.index(kind))) if kind in CLASS_NAMES else (0.6, 0.6, 0.6)
        ax.scatter(mean, diff, s=14, c=[face], edgecolors="black", linewidths=0.4, zorder=3)
        bias = float(diff.mean())
        ax.axhline(bias, color="black", linewidth=1.0, gid="bias")
        text = [f"bias {bias:.1f}"]
        if diff.size >= 2:
            half = 1.96 * float(diff.std(ddof=1))
            ax.axhline(bias + half, color="black", linewidth=0.8, linestyle="--", gid="loa-upper")
            ax.axhline(bias - half, color="black", linewidth=0.8, linestyle="--", gid="loa-lower")
            text.append(f"±1.96 SD [{bias - half:.1f}, {bias + half:.1f}]")
        ax.text(0.02, 0.98, "\n".join(text), transform=ax.transAxes, ha="left", va="top", fontsize=7)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- confusion


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """``(C, C)`` counts (rows = truth) -> row fractions; a row with no counts becomes all NaN."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), np.nan)


def confusion_plot(matrices: Mapping[str, np.ndarray]) -> Figure:
    """Row-normalised confusion matrices as annotated heat maps, one panel per method.

    Args:
        matrices: method -> ``(C, C)`` non-negative counts with ``C = NUM_CLASSES``; rows are the
            true class, columns the predicted class.

    Returns:
        A figure with one heat-map axes per method (the ``AxesImage`` holds the row fractions, NaN
        for rows without counts, drawn blank) and a shared colour bar.
    """
    if not matrices:
        raise ValueError("matrices is empty")
    names = [display_name(n) for n in CLASS_NAMES]
    fig = _new_figure(3.3 * len(matrices) + 0.8, 3.5)
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    import matplotlib

    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="white")
    image = None
    for ax, (method, counts) in zip(axes, matrices.items()):
        counts = np.asarray(counts)
        if counts.shape != (NUM_CLASSES, NUM_CLASSES):
            raise ValueError(f"{method!r}: expected a ({NUM_CLASSES}, {NUM_CLASSES}) matrix, got {counts.shape}")
        if (counts < 0).any():
            raise ValueError(f"{method!r}: counts must be non-negative")
        frac = row_normalise(counts)
        image = ax.imshow(frac, cmap=cmap, vmin=0.0, vmax=1.0)
        for i in range(NUM_CLASSES):
            for j in range(NUM_CLASSES):
                if np.isfinite(frac[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{frac[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        color="white" if frac[i, j] > 0.6 else "black",
                    )
        ax.set_xticks(range(NUM_CLASSES), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(NUM_CLASSES), names, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_title(method, fontsize=9)
    axes[0].set_ylabel("true", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    cax = fig.add_axes((0.94, 0.25, 0.015, 0.6))
    fig.colorbar(image, cax=cax).ax.tick_params(labelsize=7)
    return fig


# ------------------------------------------------------------------------------- training curves


def _metric_column(frame: pd.DataFrame, metric: str) -> str | None:
    """The column holding ``metric``: its full name or, as DVCLive writes it, the last path part."""
    for column in (metric, metric.rsplit("/", 1)[-1]):
        if column in frame.columns:
            return column
    return None


def dvclive_curve_path(live_dir: Path, name: str) -> Path:
    """``live_dir/plots/metrics/<name>.tsv``: where DVCLive writes metric ``name`` (slashes become folders)."""
    if not name or name.startswith("/") or ".." in Path(name).parts:
        raise ValueError(f"invalid metric name {name!r}")
    return Path(live_dir) / "plots" / "metrics" / f"{name}.tsv"


def read_dvclive_curve(live_dir: Path, name: str) -> pd.DataFrame:
    """Read the DVCLive metric file ``live_dir/plots/metrics/<name>.tsv``.

    ``name`` may contain slashes (``val/macro_dice``): DVCLive stores those as sub-folders and names
    the value column after the last part (``macro_dice``), next to ``step`` (and ``timestamp``).

    Returns:
        The file as a DataFrame, columns as written (``step`` and the value column at least).

    Raises:
        InputError: the file is missing, unreadable, or lacks the ``step`` or value column.
    """
    path = dvclive_curve_path(live_dir, name)
    if not path.is_file():
        raise InputError(path, f"no DVCLive metric file for {name!r} (was it logged under this name?)")
    try:
        frame = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read as a TSV file: {err}") from err
    value = _metric_column(frame, name)
    if "step" not in frame.columns or value is None:
        raise InputError(path, f"expected columns 'step' and {name.rsplit('/', 1)[-1]!r}, found {list(frame.columns)}")
    return frame


def training_curves(
    curves: Mapping[str, Mapping[str, pd.DataFrame]], metrics: Sequence[str], *, xlabel: str = "epoch"
) -> Figure:
    """One panel per metric of ``metrics`` (e.g. the training loss and the validation macro Dice), one line per
    method, against the epoch (DVCLive's ``step``), so that a reader sees whether each run had converged.

    Args:
        curves: method -> metric -> DataFrame with a ``step`` column and a column named after the metric or its
            last path part (``val/macro_dice`` -> ``macro_dice``, as DVCLive writes it); rows in any order. A
            method without a metric has no line in that panel.
        metrics: the metric names, also the panels' y-axis labels.
        xlabel: what ``step`` counts, the x-axis label.

    Returns:
        A figure with one axes per metric and one ``Line2D`` per method that has it, labelled with the
        method, sorted by epoch.
    """
    if not curves:
        raise ValueError("curves is empty")
    fig = _new_figure(4.6 * len(metrics), 3.4)
    colours = dict(zip(curves, _method_colours(len(curves))))
    for k, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), k + 1)
        for method, frames in curves.items():
            if metric not in frames:
                continue
            frame = frames[metric]
            column = _metric_column(frame, metric)
            if "step" not in frame.columns or column is None:
                raise ValueError(f"{method!r}: expected columns 'step' and {metric!r}, found {list(frame.columns)}")
            data = frame[["step", column]].sort_values("step", kind="stable")
            ax.plot(
                data["step"].to_numpy(),
                data[column].to_numpy(dtype=float),
                color=colours[method],
                label=method,
                linewidth=1.2,
                marker="o" if len(data) <= 30 else None,
                markersize=3,
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(linewidth=0.3, alpha=0.6)
    fig.axes[-1].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


IMAGES = "images"  # the curve of training images seen at the end of each epoch (Stage-2 trainer, nnU-Net)


def learning_curves(curves: Mapping[str, Mapping[str, pd.DataFrame]], metrics: Sequence[str]) -> Figure:
    """`training_curves` of ``metrics`` (e.g. the validation Dice of each class) against the training images
    seen, so that methods with different batches and epoch lengths share one axis and a reader sees where each
    would reach a target if it trained on.

    Args:
        curves: method -> metric -> DataFrame as for `training_curves`; each method also needs the curve
            `IMAGES` (``step`` and ``images``), which maps its epochs to images seen. A method without it is
            left out.
        metrics: the metric names, one panel each.
    """
    remapped: dict[str, dict[str, pd.DataFrame]] = {}
    for method, frames in curves.items():
        if IMAGES not in frames:
            continue
        seen = frames[IMAGES].set_index("step")[IMAGES]
        remapped[method] = {}
        for metric in metrics:
            if metric in frames:
                frame = frames[metric]
                column = _metric_column(frame, metric)
                if column is None:
                    raise ValueError(f"{method!r}: expected a column {metric!r}, found {list(frame.columns)}")
                joined = frame[["step", column]].join(seen, on="step", how="inner")
                remapped[method][metric] = pd.DataFrame({"step": joined[IMAGES], column: joined[column]})
    if not remapped:
        raise ValueError(f"no method has the {IMAGES!r} curve")
    return training_curves(remapped, metrics, xlabel="training images seen")


# ------------------------------------------------------------------------------------------ save


def save_figure(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``out_dir/name.png`` (dpi 150) and ``out_dir/name.pdf``, each atomically, then close ``fig``.

    Each file is written under a temporary name in ``out_dir`` and renamed into place, so readers
    never see a half-written figure; the PDF carries no creation date, so reruns are byte-stable.

    Returns:
        ``[png_path, pdf_path]``.
    """
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise ValueError(f"invalid figure name {name!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        for fmt, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
            final = out_dir / f"{name}.{fmt}"
            tmp = out_dir / f".{name}.{uuid.uuid4().hex[:8]}.partial.{fmt}"
            try:
                fig.savefig(tmp, format=fmt, dpi=PNG_DPI, metadata=metadata, bbox_inches="tight", pad_inches=0.03)
                os.replace(tmp, final)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            paths.append(final)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return paths
