"""Figures of an evaluation and of a training run, drawn with matplotlib's Agg canvas.

No pyplot: figures are :class:`matplotlib.figure.Figure` objects on a ``FigureCanvasAgg``, so
nothing changes the process's backend (a Slicer or notebook host keeps its own), nothing is
shown, and nothing leaks into pyplot's figure registry. Every PNG is written atomically.

Coordinates: images are drawn with pixel centres at integer positions (matplotlib's
``imshow``), COCO boxes use pixel edges (pixel ``i`` spans ``[i, i + 1)``), so boxes are
shifted by half a pixel when drawn.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from scripts.io import atomic_output, image_stem

__all__ = [
    "BOX_COLOR",
    "DICE_TAGS",
    "DPI",
    "LOSS_TAG",
    "LR_TAGS",
    "OUTLINE_COLOR",
    "PANEL_INCHES",
    "POSSIBLE_COLOR",
    "PRED_COLOR",
    "ImageLike",
    "MODEL_COLORS",
    "comparison_gallery",
    "labelled_gallery",
    "overlay_gallery",
    "pick_gallery",
    "read_scalars",
    "overlay_caption",
    "single_overlay",
    "training_curves",
]

DPI = 100
#: Width and image height of one gallery panel; a caption strip adds :data:`_CAPTION_INCHES`.
PANEL_INCHES = 3.0
BOX_COLOR = "yellow"
PRED_COLOR = "red"
#: Possible tumors (:mod:`scripts.verdict`) are drawn dashed in this colour.
POSSIBLE_COLOR = "orange"
OUTLINE_COLOR = "lime"
# Contour colours of the models compared in one gallery, in order.
MODEL_COLORS = ("red", "cyan", "magenta", "orange")
LOSS_TAG = "train_loss"
DICE_TAGS = ("val_mean_dice", "val_mean_iou", "train_mean_dice")
#: A scalar tag is a learning rate when its first ``/``-part, lower-cased, is one of these
#: (``lr``, ``learning_rate``, ignite's ``lr/group_0``...).
LR_TAGS = ("lr", "learning_rate")

_CAPTION_INCHES = 0.4
_LEGEND_INCHES = 0.4
_CURVES_SIZE = (15.0, 4.0)

#: An image or mask given as an array or as the path of a file PIL reads.
ImageLike = np.ndarray | str | os.PathLike


# --------------------------------------------------------------------------- shared drawing


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, output_path: str | os.PathLike) -> str:
    """Write ``fig`` as PNG atomically; return the path."""
    path = os.fspath(output_path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _load_gray(image: ImageLike) -> np.ndarray:
    """An image as the 2D grey the network sees (:func:`scripts.io.to_grey`): a file, or an (H, W[, C]) array."""
    from scripts.io import read_grey, to_grey

    if isinstance(image, (str, os.PathLike)):
        return read_grey(image)
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = to_grey(np.moveaxis(arr, -1, 0))[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a 2D image or (H, W, C), got shape {arr.shape}")
    return arr


def _load_mask(mask: ImageLike) -> np.ndarray:
    """A mask (array or 0/255 PNG) as a boolean (H, W) array: every labelled pixel."""
    return _load_gray(mask) > 0


def _load_labels(mask: ImageLike) -> tuple[np.ndarray, np.ndarray]:
    """``(tumor, possible)`` boolean masks of a label map (:mod:`scripts.verdict`: 1 and 2, or 255 and 128 in a PNG).

    A 0/1 or 0/255 mask is all tumor.
    """
    from scripts.verdict import PNG_VALUES, POSSIBLE_TUMOR_LABEL, TUMOR_LABEL

    arr = np.rint(_load_gray(mask)).astype(np.int64)
    tumor = (arr == TUMOR_LABEL) | (arr == PNG_VALUES[TUMOR_LABEL])
    possible = (arr == POSSIBLE_TUMOR_LABEL) | (arr == PNG_VALUES[POSSIBLE_TUMOR_LABEL])
    return tumor, possible


def _draw_contour(ax: Any, mask: np.ndarray, color: str, linewidth: float, linestyle: str = "solid") -> None:
    """The mask's outline, also along the image border (the mask is padded with background)."""
    if not mask.any():
        return
    height, width = mask.shape
    padded = np.pad(mask.astype(np.float32), 1)
    xs, ys = np.arange(-1, width + 1), np.arange(-1, height + 1)
    ax.contour(xs, ys, padded, levels=[0.5], colors=[color], linewidths=linewidth, linestyles=linestyle)


def _draw_boxes(ax: Any, boxes: Sequence[Sequence[float]], linewidth: float) -> None:
    for x, y, w, h in boxes:
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=BOX_COLOR, linewidth=linewidth))


def _grey_range(image: np.ndarray) -> dict[str, float]:
    """``vmin``/``vmax`` for ``imshow``: the image's own range, or, for an image of one value, a range that shows it.

    Matplotlib maps a range of zero width to its lowest colour: an all-white slice would be drawn black.
    Such an image is drawn as an 8-bit picture shows it, its value against 0 to 255 (white for a larger
    value, black for 0 or below).
    """
    finite = image[np.isfinite(image)] if np.issubdtype(image.dtype, np.floating) else image
    if finite.size == 0:
        return {"vmin": 0.0, "vmax": 1.0}
    low, high = float(finite.min()), float(finite.max())
    if high > low:
        return {"vmin": low, "vmax": high}
    return {"vmin": 0.0, "vmax": max(high, 255.0)} if high > 0 else {"vmin": low, "vmax": low + 1.0}


def _draw_overlay(
    ax: Any,
    image: np.ndarray,
    mask: np.ndarray | None,
    boxes: Sequence[Sequence[float]] = (),
    outline: np.ndarray | None = None,
    linewidth: float = 1.0,
    possible: np.ndarray | None = None,
) -> None:
    """Greyscale image, COCO boxes, true outline, predicted contour and dashed possible tumors on one axes."""
    ax.imshow(image, cmap="gray", interpolation="bilinear", **_grey_range(image))
    _draw_boxes(ax, boxes, linewidth)
    if outline is not None:
        _draw_contour(ax, outline, OUTLINE_COLOR, linewidth)
    if possible is not None:
        _draw_contour(ax, possible, POSSIBLE_COLOR, linewidth, "dashed")
    if mask is not None:
        _draw_contour(ax, mask, PRED_COLOR, linewidth)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend_handles(with_outline: bool, with_possible: bool = False) -> list[Line2D]:
    handles = [Line2D([], [], color=BOX_COLOR, label="COCO box"), Line2D([], [], color=PRED_COLOR, label="tumor")]
    if with_possible:
        handles.append(Line2D([], [], color=POSSIBLE_COLOR, linestyle="dashed", label="possible tumor"))
    if with_outline:
        handles.append(Line2D([], [], color=OUTLINE_COLOR, label="true outline"))
    return handles


# --------------------------------------------------------------------------- gallery and overlays


def pick_gallery(rows: Sequence[Mapping[str, Any]], n_each: int = 3, key: str = "dice") -> list[tuple[str, list[int]]]:
    """Indices of the best, median and worst rows by ``key`` (``dice``), each image shown once.

    Args:
        rows: per-image rows with a ``key`` (rows where it is None are skipped).
        n_each: images per group.
        key: the figure that ranks, e.g. ``outline_dice`` when true outlines exist.

    Returns:
        ``[("best", [...]), ("median", [...]), ("worst", [...])]`` with row indices, best first
        within "best", worst first within "worst"; groups left empty (few images) are dropped.
    """
    order = sorted((i for i, r in enumerate(rows) if r.get(key) is not None), key=lambda i: (-rows[i][key], i))
    start = max(0, (len(order) - n_each) // 2)
    candidates = {"best": order[:n_each], "worst": order[::-1][:n_each], "median": order[start : start + n_each]}
    taken: set[int] = set()
    picked: dict[str, list[int]] = {}
    for name in ("best", "worst", "median"):  # extremes first, the median takes what is left
        picked[name] = [i for i in candidates[name] if i not in taken]
        taken.update(picked[name])
    return [(name, picked[name]) for name in ("best", "median", "worst") if picked[name]]


def _caption(file_name: str, row: Mapping[str, Any]) -> str:
    """The stem and the figures: outline Dice first when there is one, then Dice against the COCO boxes."""
    stem = image_stem(file_name)
    short = stem if len(stem) <= 28 else stem[:27] + "…"
    figures = [f"box Dice {row['dice']:.3f}"] if row.get("dice") is not None else []
    if row.get("outline_dice") is not None:
        figures.insert(0, f"outline Dice {row['outline_dice']:.3f}")
    return f"{short}\n{', '.join(figures)}"


def overlay_gallery(
    rows: Sequence[Mapping[str, Any]],
    image_paths: Sequence[ImageLike],
    pred_masks: Sequence[ImageLike],
    gt_boxes: Sequence[Sequence[Sequence[float]]],
    output_path: str | os.PathLike,
    outlines: Sequence[ImageLike | None] | None = None,
    n_each: int = 3,
) -> str:
    """One PNG with the best, median and worst images, one row of panels per group.

    Ranked by Dice against the true outlines when ``outlines`` are given and the rows carry
    ``outline_dice``, else by Dice against the COCO masks; captions show both figures.

    Each panel shows the greyscale image, the COCO boxes (yellow rectangles), the predicted
    mask's contour (red) and, when given, the true outline's contour (green), captioned with
    the file stem and the Dice. Only the picked images are read, so masks may be given as
    paths. The PNG is ``n_each * 300`` pixels wide and ``40 + groups * 340`` high (groups: 3,
    fewer when there are fewer than ``3 * n_each`` images).

    Args:
        rows: per-image rows with ``file_name`` and ``dice`` (:func:`brainseg_monai.metrics.evaluate_image`).
        image_paths: the images, aligned with ``rows``.
        pred_masks: predicted masks (arrays or 0/255 PNG paths), aligned with ``rows``.
        gt_boxes: each image's COCO boxes ``[x, y, w, h]``, aligned with ``rows``.
        output_path: the PNG to write.
        outlines: true outlines (arrays, PNG paths or None per image), aligned with ``rows``.
        n_each: images per group.

    Returns:
        ``output_path``.

    Raises:
        ValueError: the sequences differ in length or no row has a Dice.
    """
    lengths = {len(rows), len(image_paths), len(pred_masks), len(gt_boxes)} | ({len(outlines)} if outlines else set())
    if len(lengths) != 1:
        raise ValueError(f"rows, images, masks, boxes and outlines must align, got lengths {sorted(lengths)}")
    # with true outlines, rank by them: Dice against the loose boxes rewards box-shaped masks
    ranked_by_outline = bool(outlines) and any(r.get("outline_dice") is not None for r in rows)
    groups = pick_gallery(rows, n_each, "outline_dice" if ranked_by_outline else "dice")
    if not groups:
        raise ValueError("no image with a Dice to show")
    fig = _new_figure(n_each * PANEL_INCHES, _LEGEND_INCHES + len(groups) * (PANEL_INCHES + _CAPTION_INCHES))
    axes = fig.subplots(len(groups), n_each, squeeze=False)
    any_possible = False
    for r, (group, indices) in enumerate(groups):
        for c in range(n_each):
            ax = axes[r][c]
            if c >= len(indices):
                ax.set_axis_off()
                continue
            i = indices[c]
            outline = outlines[i] if outlines else None
            tumor, possible = _load_labels(pred_masks[i])
            any_possible |= bool(possible.any())
            _draw_overlay(
                ax,
                _load_gray(image_paths[i]),
                tumor,
                gt_boxes[i],
                None if outline is None else _load_mask(outline),
                possible=possible,
            )
            ax.set_title(_caption(str(rows[i]["file_name"]), rows[i]), fontsize=8)
            if c == 0:
                ax.set_ylabel(group, fontsize=10)
    return _save_gallery(fig, _legend_handles(outlines is not None, any_possible), output_path, left=0.04)


def _save_gallery(fig: Figure, handles: list[Line2D], output_path: str | os.PathLike, left: float) -> str:
    """Legend on top, panels laid out under it with room for their captions, then save."""
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False, fontsize=9)
    fig.subplots_adjust(
        left=left,
        right=0.99,
        bottom=0.01,
        top=1 - (_LEGEND_INCHES + _CAPTION_INCHES) / fig.get_figheight(),
        hspace=_CAPTION_INCHES / PANEL_INCHES * 1.5,
        wspace=0.05,
    )
    return _save(fig, output_path)


def labelled_gallery(
    rows: Sequence[tuple[str, Sequence[tuple[ImageLike, ImageLike, str]]]],
    output_path: str | os.PathLike,
    truths: Sequence[Sequence[ImageLike | None]] | None = None,
) -> str:
    """Rows of labelled panels: each a slice with its tumor (red) and possible tumors (orange, dashed).

    For pictures of whole volumes, e.g. one row of tumor-free skull-base slices, one of vertex slices:
    each row has a title (drawn at its left), each panel an image, its label map (:mod:`scripts.verdict`)
    and a caption (:func:`overlay_caption`).

    Args:
        rows: ``(title, [(image, labels, caption), ...])`` per row.
        output_path: the PNG to write.
        truths: optional per-panel masks drawn in green (e.g. where a tumor is known to be), aligned with rows.

    Returns:
        ``output_path``.

    Raises:
        ValueError: no panel, or ``truths`` not aligned with ``rows``.
    """
    columns = max((len(panels) for _, panels in rows), default=0)
    if not columns:
        raise ValueError("labelled_gallery: no panel to draw")
    if truths is not None and [len(t) for t in truths] != [len(p) for _, p in rows]:
        raise ValueError("labelled_gallery: truths must align with the rows' panels")
    fig = _new_figure(columns * PANEL_INCHES, _LEGEND_INCHES + len(rows) * (PANEL_INCHES + _CAPTION_INCHES))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    any_possible = any_truth = False
    for r, (title, panels) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            if c >= len(panels):
                ax.set_axis_off()
                continue
            image, labels, caption = panels[c]
            tumor, possible = _load_labels(labels)
            truth = truths[r][c] if truths is not None else None
            any_possible |= bool(possible.any())
            any_truth |= truth is not None
            _draw_overlay(
                ax, _load_gray(image), tumor, (), None if truth is None else _load_mask(truth), possible=possible
            )
            ax.set_title(caption, fontsize=8)
            if c == 0:
                ax.set_ylabel(title, fontsize=10)
    handles = [h for h in _legend_handles(any_truth, any_possible) if h.get_label() != "COCO box"]
    if any_truth:
        handles = [h if h.get_label() != "true outline" else Line2D([], [], color=OUTLINE_COLOR, label="tumor extent")
                   for h in handles]  # fmt: skip
    return _save_gallery(fig, handles, output_path, left=0.04)


def comparison_gallery(
    image_paths: Sequence[ImageLike],
    masks_by_model: Mapping[str, Sequence[ImageLike]],
    gt_boxes: Sequence[Sequence[Sequence[float]]],
    captions: Sequence[str],
    output_path: str | os.PathLike,
    outlines: Sequence[ImageLike | None] | None = None,
    columns: int = 3,
) -> str:
    """Several models' contours on the same images: one panel per image, one colour per model.

    Each panel shows the greyscale image, its COCO boxes (yellow), the true outline (green) when
    given, and each model's predicted contour in :data:`MODEL_COLORS` order, with the caption
    given for that image (e.g. each model's outline Dice).

    Args:
        image_paths: the images to show, in order.
        masks_by_model: model name -> its masks (arrays or 0/255 PNG paths), aligned with the images.
        gt_boxes: each image's COCO boxes ``[x, y, w, h]``.
        captions: one caption per image.
        output_path: the PNG to write.
        outlines: true outlines (arrays, PNG paths or None per image).
        columns: panels per row.

    Returns:
        ``output_path``.

    Raises:
        ValueError: the sequences do not align, or more models than colours.
    """
    n = len(image_paths)
    lengths = {n, len(gt_boxes), len(captions)} | {len(m) for m in masks_by_model.values()}
    if outlines is not None:
        lengths.add(len(outlines))
    if len(lengths) != 1 or n == 0:
        raise ValueError(
            f"images, masks, boxes, captions and outlines must align and be non-empty, got {sorted(lengths)}"
        )
    if len(masks_by_model) > len(MODEL_COLORS):
        raise ValueError(f"at most {len(MODEL_COLORS)} models, got {len(masks_by_model)}")
    rows = -(-n // columns)
    fig = _new_figure(columns * PANEL_INCHES, _LEGEND_INCHES + rows * (PANEL_INCHES + _CAPTION_INCHES))
    axes = fig.subplots(rows, columns, squeeze=False)
    for k in range(rows * columns):
        ax = axes[k // columns][k % columns]
        if k >= n:
            ax.set_axis_off()
            continue
        outline = outlines[k] if outlines is not None else None
        _draw_overlay(
            ax, _load_gray(image_paths[k]), None, gt_boxes[k], None if outline is None else _load_mask(outline)
        )
        for color, masks in zip(MODEL_COLORS, masks_by_model.values()):
            _draw_contour(ax, _load_mask(masks[k]), color, 1.0)
        ax.set_title(captions[k], fontsize=7)
    handles = [Line2D([], [], color=BOX_COLOR, label="COCO box")]
    if outlines is not None:
        handles.append(Line2D([], [], color=OUTLINE_COLOR, label="true outline"))
    handles += [Line2D([], [], color=c, label=name) for c, name in zip(MODEL_COLORS, masks_by_model)]
    return _save_gallery(fig, handles, output_path, left=0.01)


def single_overlay(
    image: ImageLike,
    mask: ImageLike,
    output_path: str | os.PathLike,
    boxes: Sequence[Sequence[float]] | None = None,
    outline: ImageLike | None = None,
    caption: str | None = None,
) -> str:
    """One image at its own size: the tumor's contour (red), possible tumors (orange, dashed), COCO boxes
    (yellow) and the true outline (green), with a caption that says what was found.

    The legend names the colours drawn (only those drawn); it and the caption are sized as a
    fraction of the image, so they neither cover a small image nor vanish on a large one.

    Args:
        image: the image (array (H, W) or (H, W, C), or a file), shown in the grey the model saw.
        mask: the predicted label map (array or PNG: 1 or 255 tumor, 2 or 128 possible tumor),
            same size as the image.
        output_path: the PNG to write; it is W x H pixels like the image.
        boxes: COCO boxes ``[x, y, w, h]`` to draw.
        outline: the true tumor outline (array or 0/255 PNG), same size as the image.
        caption: a line written across the image's foot, e.g. :func:`overlay_caption`'s.

    Returns:
        ``output_path``.

    Raises:
        ValueError: the mask's or the outline's size differs from the image's.
    """
    gray = _load_gray(image)
    pred, possible = _load_labels(mask)
    truth = _load_mask(outline) if outline is not None else None
    for name, other in (("mask", pred), ("outline", truth)):
        if other is not None and gray.shape != other.shape:
            raise ValueError(f"{name} {other.shape} and image {gray.shape} differ in size")
    height, width = gray.shape
    fig = _new_figure(width / DPI, height / DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    _draw_overlay(ax, gray, pred, boxes or (), outline=truth, linewidth=max(1.0, width / 400), possible=possible)
    # text about a 28th of the smaller side high (points: pixels * 72 / DPI): the same share of a 64-pixel slice
    # as of a 640-pixel one, so the legend neither covers a small image nor is cut on it
    fontsize = max(1.0, min(height, width) / 28 * 72 / DPI)
    handles = [h for h in _legend_handles(truth is not None, bool(possible.any())) if h.get_label() != "COCO box"]
    if boxes:
        handles.insert(0, Line2D([], [], color=BOX_COLOR, label="COCO box"))
    if not pred.any():
        handles = [h for h in handles if h.get_label() != "tumor"]
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize=fontsize, framealpha=0.6, borderpad=0.3, handlelength=1.5)
    if caption:
        ax.text(
            0.5,
            0.01,
            caption,
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=fontsize,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "linewidth": 0},
            wrap=True,
        )
    ax.set_axis_off()
    return _save(fig, output_path)


def overlay_caption(name: str, verdict: str, score: float, slice_index: int | None = None) -> str:
    """The caption of an overlay: the input's name, its verdict (:mod:`scripts.verdict`) and tumor score.

    Args:
        name: the input's file or folder name (its image suffix is left out; a long name is shortened).
        verdict: the slice's verdict.
        score: its tumor score.
        slice_index: for one slice of a volume, its index (0-based, as the ``slice`` column of the
            volume's per-slice report and the ``_slice<k>`` of the overlay's file name).
    """
    stem = image_stem(name)
    short = stem if len(stem) <= 40 else stem[:39] + "…"
    where = "" if slice_index is None else f" slice {int(slice_index)}"
    return f"{short}{where}: {verdict} (score {float(score):.2f})"


# --------------------------------------------------------------------------- training curves


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar of the TensorBoard event files under ``log_dir`` (searched recursively).

    Args:
        log_dir: the folder a bundle training run's ``TensorBoardStatsHandler`` wrote to.

    Returns:
        ``{tag: [(step, wall_time, value), ...]}`` sorted by wall time; where a step was
        written twice (a resumed run redoing an epoch), the later value is kept.

    Raises:
        FileNotFoundError: no event file under ``log_dir``.
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"{os.fspath(log_dir)}: no TensorBoard event files")
    by_tag: dict[str, dict[int, tuple[float, float]]] = {}
    for file in files:
        events = EventAccumulator(str(file), size_guidance={SCALARS: 0})  # 0: keep every point
        events.Reload()
        for tag in events.Tags()["scalars"]:
            steps = by_tag.setdefault(tag, {})
            for ev in events.Scalars(tag):
                if ev.step not in steps or steps[ev.step][0] <= ev.wall_time:
                    steps[ev.step] = (ev.wall_time, ev.value)
    return {
        tag: sorted(((step, t, v) for step, (t, v) in steps.items()), key=lambda p: (p[1], p[0]))
        for tag, steps in by_tag.items()
    }


def _epoch_ends(scalars: Mapping[str, list[tuple[int, float, float]]]) -> list[tuple[int, float]]:
    """``(epoch, wall_time)`` at the end of each logged epoch, from the epoch-level tag with most points."""
    epoch_tags = [t for t in scalars if t != LOSS_TAG and not _is_lr(t)]
    if not epoch_tags:
        return []
    tag = max(epoch_tags, key=lambda t: (len(scalars[t]), t))
    return [(step, t) for step, t, _ in scalars[tag]]


def _epoch_mean_loss(
    loss: Sequence[tuple[int, float, float]], epoch_ends: Sequence[tuple[int, float]]
) -> list[tuple[int, float]]:
    """Mean iteration loss of each completed epoch: iterations logged after the previous epoch's end.

    The epoch still running when the log was read has no end yet and is left out.
    """
    means = []
    previous_end = float("-inf")
    for epoch, end in epoch_ends:
        values = [v for _, t, v in loss if previous_end < t <= end]
        if values:
            means.append((epoch, float(np.mean(values))))
        previous_end = end
    return means


def _is_lr(tag: str) -> bool:
    return tag.split("/")[0].lower() in LR_TAGS


def _plot_or_note(ax: Any, curves: Mapping[str, Sequence[tuple[int, float]]], xlabel: str, note: str) -> None:
    """Plot each non-empty curve with a legend, or write ``note`` in the empty axes."""
    drawn = False
    for label, points in curves.items():
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
            drawn = True
    if drawn:
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    else:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, fontsize=9, wrap=True)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel(xlabel)


def training_curves(log_dir: str | os.PathLike, output_path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Plot a bundle training run's loss, validation Dice and learning rate per epoch in one PNG.

    Reads what ``bundle/configs/train.json`` logs to TensorBoard: ``train_loss`` per
    iteration (averaged here over each completed epoch, epochs delimited by the wall times
    of the epoch-level scalars), ``val_mean_dice``, ``val_mean_iou`` and ``train_mean_dice``
    per epoch, and a learning-rate tag (:data:`LR_TAGS`) if one is logged. The bundle's
    ``LrScheduleHandler`` only prints the rate to the log, so with that config the third
    panel says the rate was not logged. A missing tag leaves its curve out, never fails.
    Without any completed epoch, the loss is plotted per iteration. The PNG is 1500 x 400 pixels.

    Args:
        log_dir: the run's TensorBoard folder (the bundle's ``output_dir``).
        output_path: the PNG to write.

    Returns:
        The plotted curves, ``{name: [(epoch or iteration, value), ...]}``: ``train_loss``
        (per-epoch mean), each of ``val_mean_dice``, ``val_mean_iou``, ``train_mean_dice``
        found, and ``learning_rate`` when logged.

    Raises:
        FileNotFoundError: no event file under ``log_dir``.
    """
    scalars = read_scalars(log_dir)
    loss = scalars.get(LOSS_TAG, [])
    epoch_loss = _epoch_mean_loss(loss, _epoch_ends(scalars))
    per_iteration = not epoch_loss and bool(loss)
    curves: dict[str, list[tuple[int, float]]] = {
        LOSS_TAG: [(s, v) for s, _, v in loss] if per_iteration else epoch_loss
    }
    curves.update({tag: [(s, v) for s, _, v in scalars[tag]] for tag in DICE_TAGS if tag in scalars})
    lr_tags = sorted(t for t in scalars if _is_lr(t))
    if lr_tags:
        curves["learning_rate"] = [(s, v) for s, _, v in scalars[lr_tags[0]]]

    fig = _new_figure(*_CURVES_SIZE)
    ax_loss, ax_dice, ax_lr = fig.subplots(1, 3)
    _plot_or_note(ax_loss, {LOSS_TAG: curves[LOSS_TAG]}, "iteration" if per_iteration else "epoch", "no loss logged")
    ax_loss.set_title("training loss" + (" (per iteration)" if per_iteration else " (epoch mean)"))
    _plot_or_note(ax_dice, {t: curves[t] for t in DICE_TAGS if t in curves}, "epoch", "no Dice logged")
    ax_dice.set_title("Dice / IoU")
    _plot_or_note(
        ax_lr, {"learning_rate": curves.get("learning_rate", [])}, "epoch", "learning rate not logged to TensorBoard"
    )
    ax_lr.set_title("learning rate")
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.14, top=0.9, wspace=0.25)
    _save(fig, output_path)
    return curves
