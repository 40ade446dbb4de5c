"""Evaluation figures: row selection, paper colours, CI whiskers, Bland-Altman lines, confusion rows, curves, saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.patches import Rectangle

from plaque.classes import CLASS_NAMES, FOREGROUND
from plaque.errors import InputError
from plaque.eval.figures import (
    HARD_FRAME_COLOUR,
    bland_altman_plots,
    confusion_plot,
    dice_bars,
    learning_curves,
    qualitative_grid,
    read_dvclive_curve,
    save_figure,
    select_rows,
    training_curves,
)

NAN = np.nan


# ---------------------------------------------------------------------------------- select_rows


def test_select_rows_takes_median_closest_then_lowest_of_the_rest() -> None:
    # Values in sixteenths, so distances to the median (0.4375) tie exactly: ties go to the lower index.
    dice = np.array([0.875, NAN, 0.5, 0.625, 0.125, 0.75, 0.25, NAN, 0.375, 0.0625])
    idx, is_hard = select_rows(dice, n_representative=4, n_hard=3)
    assert idx.tolist() == [2, 8, 3, 6, 9, 4, 5]
    assert is_hard.tolist() == [False] * 4 + [True] * 3
    assert is_hard.dtype == bool
    assert np.isfinite(dice[idx]).all()


def test_select_rows_never_repeats_and_never_picks_nan_when_short_of_candidates() -> None:
    dice = np.array([NAN, 0.5, NAN, 0.25, NAN])
    idx, is_hard = select_rows(dice, n_representative=4, n_hard=3)
    assert idx.tolist() == [1, 3]
    assert is_hard.tolist() == [False, False]

    idx, is_hard = select_rows(np.array([0.9, NAN, 0.1, 0.5]), n_representative=1, n_hard=5)
    assert idx.tolist() == [3, 2, 0]  # median 0.5, then the rest from lowest
    assert is_hard.tolist() == [False, True, True]


def test_select_rows_rejects_all_nan() -> None:
    with pytest.raises(ValueError, match="finite"):
        select_rows(np.array([NAN, NAN]))


# ----------------------------------------------------------------------------- qualitative_grid


def _grid_inputs() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    images = rng.random((3, 6, 8))
    truth = np.tile(np.array([0, 1, 2, 3, 4, 4, 2, 1]), (3, 6, 1))  # every class in every row, (3, 6, 8)
    ours = np.roll(truth, 1, axis=2)
    nnunet = np.zeros_like(truth)
    nnunet[:, :3] = 4
    return images, truth, {"Ours": ours, "nnU-Net": nnunet}


def test_qualitative_grid_layout_and_paper_colours() -> None:
    images, truth, preds = _grid_inputs()
    fig = qualitative_grid(images, truth, preds, np.array([False, True, False]), row_labels=["a", "b", "c"])
    assert len(fig.axes) == 3 * (2 + 2)
    axes = np.array(fig.axes).reshape(3, 4)
    assert [ax.get_title() for ax in axes[0]] == ["Input", "Ground truth", "Ours", "nnU-Net"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["a", "b", "c"]
    for r in range(3):
        grey = axes[r, 0].images[0]
        np.testing.assert_allclose(grey.get_array(), images[r])
        assert grey.get_cmap().name == "gray"
        gt = np.asarray(axes[r, 1].images[0].get_array())
        assert gt.shape == (6, 8, 3)
        np.testing.assert_allclose(gt[truth[r] == 0], 0.0)  # background black
        np.testing.assert_allclose(gt[truth[r] == 1], 1.0)  # vessel wall white
        lumen, calc, noncalc = gt[truth[r] == 2], gt[truth[r] == 3], gt[truth[r] == 4]
        assert (lumen[:, 2] > 0.9).all() and (lumen[:, 0] < 0.2).all()  # blue
        assert (calc[:, :2] > 0.8).all() and (calc[:, 2] < 0.2).all()  # yellow
        assert (noncalc[:, 0] > 0.8).all() and (noncalc[:, 1:] < 0.2).all()  # red
        # Method columns show that method's map, not the truth.
        for c, pred in enumerate(preds.values(), start=2):
            shown = np.asarray(axes[r, c].images[0].get_array())
            assert not np.array_equal(shown, gt)
            np.testing.assert_array_equal(shown[pred[r] == 4], np.broadcast_to(noncalc[0], shown[pred[r] == 4].shape))
            np.testing.assert_array_equal(shown[pred[r] == 0], 0.0)
            np.testing.assert_array_equal(shown[pred[r] == 1], 1.0)
    legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_labels[:5] == ["background", "vessel wall", "lumen", "calcified", "non-calcified"]


def test_qualitative_grid_frames_only_hard_rows_in_orange() -> None:
    images, truth, preds = _grid_inputs()
    fig = qualitative_grid(images, truth, preds, np.array([False, True, False]))
    axes = np.array(fig.axes).reshape(3, 4)
    orange = to_rgba(HARD_FRAME_COLOUR)
    frames = [a for a in fig.artists + fig.patches if isinstance(a, Rectangle) and a.get_edgecolor() == orange]
    assert len(frames) == 1
    frame = frames[0]
    assert frame.get_gid() == "hard-frame-1"
    assert not frame.get_fill()
    box = frame.get_window_extent()  # display coordinates, as every axes below
    fig.canvas.draw()
    for r in range(3):
        for ax in axes[r]:
            ext = ax.get_window_extent()
            inside = box.x0 < ext.x0 and ext.x1 < box.x1 and box.y0 < ext.y0 and ext.y1 < box.y1
            overlaps = box.y0 < ext.y1 and ext.y0 < box.y1
            assert inside if r == 1 else not overlaps


def test_qualitative_grid_rejects_mismatched_shapes() -> None:
    images, truth, preds = _grid_inputs()
    with pytest.raises(ValueError, match="Ours"):
        qualitative_grid(images, truth, {"Ours": preds["Ours"][:2]}, np.zeros(3, bool))
    with pytest.raises(ValueError, match="hard"):
        qualitative_grid(images, truth, preds, np.zeros(2, bool))


# ------------------------------------------------------------------------------------ dice_bars


def _bar_table() -> dict[str, dict[str, tuple[float, float, float]]]:
    return {
        "Ours": {
            "vessel_wall": (0.8, 0.75, 0.85),
            "lumen": (0.9, 0.88, 0.93),
            "calcified": (0.6, 0.5, 0.7),
            "non_calcified": (0.4, 0.3, 0.45),
        },
        "nnU-Net": {
            "vessel_wall": (0.7, 0.65, 0.72),
            "lumen": (0.85, 0.8, 0.9),
            "calcified": (NAN, NAN, NAN),
            "non_calcified": (0.35, NAN, NAN),
        },
    }


def test_dice_bars_whiskers_span_the_given_cis() -> None:
    table = _bar_table()
    fig = dice_bars(table)
    ax = fig.axes[0]
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert list(bars) == ["Ours", "nnU-Net"]
    segments = [seg for c in ax.containers if isinstance(c, ErrorbarContainer) for seg in c.lines[2][0].get_segments()]
    classes = [CLASS_NAMES[k] for k in FOREGROUND]
    whiskers = {}
    for method, container in bars.items():
        for cls, patch in zip(classes, container.patches):
            est, low, high = table[method][cls]
            x = patch.get_x() + patch.get_width() / 2
            found = [s for s in segments if np.isclose(s[0, 0], x)]
            if np.isnan(est):
                assert np.isnan(patch.get_height())
            else:
                assert patch.get_height() == pytest.approx(est)
            if np.isnan(low):
                assert found == []
            else:
                (seg,) = found
                assert sorted(seg[:, 1]) == pytest.approx([low, high])
                whiskers[(method, cls)] = seg
    assert len(whiskers) == len(segments) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == ["vessel wall", "lumen", "calcified", "non-calcified"]
    assert [t.get_text() for t in ax.texts] == ["n/a"]
    assert any("n/a" in t.get_text() for t in fig.texts)


def test_dice_bars_rejects_ci_not_containing_estimate() -> None:
    table = _bar_table()
    table["Ours"]["lumen"] = (0.9, 0.95, 0.99)
    with pytest.raises(ValueError, match="lumen"):
        dice_bars(table)


# -------------------------------------------------------------------------------- Bland-Altman


def test_bland_altman_bias_and_limits() -> None:
    pred = np.array([10.0, 22.0, 31.0, 39.0, NAN])
    true = np.array([12.0, 20.0, 30.0, 35.0, 50.0])
    diff = (pred - true)[:4]
    fig = bland_altman_plots({"calcified": (pred, true), "total": (pred * 2, true * 2)}, method="Ours")
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert ax.get_title() == "Ours: calcified"
    lines = {line.get_gid(): line for line in ax.get_lines()}
    assert lines["bias"].get_ydata()[0] == pytest.approx(diff.mean())
    half = 1.96 * diff.std(ddof=1)
    assert lines["loa-upper"].get_ydata()[0] == pytest.approx(diff.mean() + half)
    assert lines["loa-lower"].get_ydata()[0] == pytest.approx(diff.mean() - half)
    assert lines["loa-upper"].get_linestyle() == "--" and lines["bias"].get_linestyle() == "-"
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_allclose(offsets[:, 0], ((pred + true) / 2)[:4])
    np.testing.assert_allclose(offsets[:, 1], diff)
    total = {line.get_gid(): line for line in fig.axes[1].get_lines()}
    assert total["bias"].get_ydata()[0] == pytest.approx(2 * diff.mean())


# ------------------------------------------------------------------------------------ confusion


def test_confusion_rows_sum_to_one_and_empty_rows_are_blank() -> None:
    counts = np.array([[90, 5, 5, 0, 0], [10, 30, 0, 0, 0], [0, 0, 0, 0, 0], [1, 0, 0, 2, 1], [0, 3, 0, 0, 1]])
    fig = confusion_plot({"Ours": counts, "CAT-SAM": np.eye(5, dtype=int) * 7})
    ax = fig.axes[0]
    assert ax.get_title() == "Ours"
    frac = np.ma.filled(ax.images[0].get_array().astype(float), np.nan)
    np.testing.assert_allclose(np.delete(frac, 2, axis=0).sum(axis=1), 1.0)
    assert np.isnan(frac[2]).all()
    assert frac[3, 3] == pytest.approx(0.5)
    assert len(ax.texts) == 20  # the empty row is left unannotated
    assert [t.get_text() for t in ax.get_yticklabels()][4] == "non-calcified"
    np.testing.assert_allclose(np.ma.filled(fig.axes[1].images[0].get_array(), np.nan), np.eye(5))


# ------------------------------------------------------------------------------ training curves


def _write_tsv(live: Path, name: str, text: str) -> Path:
    path = live / "plots" / "metrics" / f"{name}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_read_dvclive_curve_and_plot(tmp_path: Path) -> None:
    _write_tsv(tmp_path / "a", "val/macro_dice", "timestamp\tstep\tmacro_dice\n1\t0\t0.1\n2\t1\t0.4\n3\t2\t0.5\n")
    _write_tsv(tmp_path / "b", "val/macro_dice", "step\tmacro_dice\n2\t0.3\n0\t0.2\n1\t0.25\n")
    a = read_dvclive_curve(tmp_path / "a", "val/macro_dice")
    b = read_dvclive_curve(tmp_path / "b", "val/macro_dice")
    assert a["macro_dice"].tolist() == [0.1, 0.4, 0.5]
    _write_tsv(tmp_path / "a", "train/loss", "step\tloss\n0\t2.0\n1\t1.0\n2\t0.8\n")
    loss = read_dvclive_curve(tmp_path / "a", "train/loss")
    fig = training_curves(
        {"Ours": {"train/loss": loss, "val/macro_dice": a}, "nnU-Net": {"val/macro_dice": b}},
        ["train/loss", "val/macro_dice"],
    )
    assert [ax.get_ylabel() for ax in fig.axes] == ["train/loss", "val/macro_dice"]
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["Ours"]  # nnU-Net has no loss curve here
    lines = {line.get_label(): line for line in fig.axes[1].get_lines()}
    assert list(lines) == ["Ours", "nnU-Net"]
    np.testing.assert_array_equal(lines["nnU-Net"].get_xdata(), [0, 1, 2])  # sorted by epoch
    np.testing.assert_allclose(lines["nnU-Net"].get_ydata(), [0.2, 0.25, 0.3])
    assert lines["Ours"].get_color() == fig.axes[0].get_lines()[0].get_color()  # one colour per method


def test_read_dvclive_curve_names_the_missing_or_bad_file(tmp_path: Path) -> None:
    missing = tmp_path / "plots" / "metrics" / "val" / "loss.tsv"
    with pytest.raises(InputError) as err:
        read_dvclive_curve(tmp_path, "val/loss")
    assert err.value.where == str(missing)
    assert str(missing) in str(err.value)
    bad = _write_tsv(tmp_path, "train/loss", "timestamp\tstep\tother\n1\t0\t0.5\n")
    with pytest.raises(InputError, match="loss") as err:
        read_dvclive_curve(tmp_path, "train/loss")
    assert err.value.where == str(bad)


def test_training_curves_rejects_frame_without_metric() -> None:
    with pytest.raises(ValueError, match="Ours"):
        training_curves({"Ours": {"val/macro_dice": pd.DataFrame({"step": [0], "loss": [1.0]})}}, ["val/macro_dice"])


# ---------------------------------------------------------------------------------- save_figure


def test_save_figure_writes_png_and_pdf_and_closes(tmp_path: Path) -> None:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    number = fig.number
    out = tmp_path / "figs"
    out.mkdir()
    (out / "curve.png").write_bytes(b"old")
    paths = save_figure(fig, out, "curve")
    assert paths == [out / "curve.png", out / "curve.pdf"]
    assert paths[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert paths[1].read_bytes().startswith(b"%PDF-")
    assert all(p.stat().st_size > 500 for p in paths)
    assert sorted(p.name for p in out.iterdir()) == ["curve.pdf", "curve.png"]  # no temporaries
    assert not plt.fignum_exists(number)


def test_save_figure_failure_keeps_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fig = confusion_plot({"Ours": np.eye(5, dtype=int)})
    (tmp_path / "cm.png").write_bytes(b"old")

    def broken(path, **kwargs) -> None:
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        save_figure(fig, tmp_path, "cm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png"]
    assert (tmp_path / "cm.png").read_bytes() == b"old"


def test_learning_curves_put_every_method_on_the_images_seen_axis() -> None:
    ours = {
        "images": pd.DataFrame({"step": [1, 2, 3], "images": [512, 1024, 1536]}),
        "val/dice_calcified": pd.DataFrame({"step": [3, 1, 2], "dice_calcified": [0.5, 0.1, 0.3]}),
    }
    nnunet = {
        "images": pd.DataFrame({"step": [1, 2], "images": [800, 1600]}),
        "val/dice_calcified": pd.DataFrame({"step": [1, 2], "dice_calcified": [0.2, 0.4]}),
    }
    no_images = {"val/dice_calcified": pd.DataFrame({"step": [1], "dice_calcified": [0.9]})}
    fig = learning_curves({"Ours": ours, "nnU-Net": nnunet, "Other": no_images}, ["val/dice_calcified"])
    (ax,) = fig.axes
    assert ax.get_xlabel() == "training images seen"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines) == ["Ours", "nnU-Net"]  # a run without the images curve is left out
    np.testing.assert_array_equal(lines["Ours"].get_xdata(), [512, 1024, 1536])
    np.testing.assert_allclose(lines["Ours"].get_ydata(), [0.1, 0.3, 0.5])
    np.testing.assert_array_equal(lines["nnU-Net"].get_xdata(), [800, 1600])
    with pytest.raises(ValueError, match="images"):
        learning_curves({"Other": no_images}, ["val/dice_calcified"])
