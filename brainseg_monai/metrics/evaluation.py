"""``brainseg evaluate``: run the bundle's evaluation workflow on a COCO split, then draw its pictures.

Every figure comes from the bundle (``configs/evaluate.json`` layered on ``train.json``: MONAI's
Dice and IoU and :class:`~scripts.metrics.tumor_evaluation.TumorEvaluation`), so ``brainseg
evaluate`` and ``python -m monai.bundle run`` report the same numbers. This module only points
the workflow at the split and the output folder, stages the masks so that a failed run leaves
none half-written, and adds the overlays and the gallery.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.coco import coco_to_datalist
from scripts.csv_files import read_csv
from scripts.io import mask_output_path, staged_outputs
from scripts.metrics.detection import annotation_box
from scripts.metrics.evaluation import PER_IMAGE_FILE, SUMMARY_FILE, check_outlines_dir, outline_path

__all__ = [
    "GALLERY_FILE",
    "MASKS_DIR",
    "OVERLAYS_DIR",
    "Evaluation",
    "ForeignFilesError",
    "check_replaced_folders",
    "evaluate_split",
]

GALLERY_FILE = "gallery.png"
MASKS_DIR = "masks"
OVERLAYS_DIR = "overlays"
#: Files an operating system leaves in any folder a person opened (Finder, Explorer): never a user's work.
SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
#: Foreign files named in a refusal; more are counted.
MAX_NAMED_FILES = 5


class ForeignFilesError(ValueError):
    """A folder an evaluation replaces whole holds files no evaluation wrote there."""


@dataclass
class Evaluation:
    """What :func:`evaluate_split` wrote.

    Args:
        rows: one dict per image (:data:`~scripts.metrics.evaluation.ROW_FIELDS`).
        summary: the split's figures (:func:`~scripts.metrics.evaluation.summarize`) plus
            ``split_dir`` and ``model``.
        coco_results: every predicted component in COCO results format.
    """

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    coco_results: list[dict[str, Any]]


def evaluate_split(
    split_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    bundle_dir: str | os.PathLike | None = None,
    ckpt_path: str | os.PathLike | None = None,
    config_files: Sequence[str | os.PathLike] = (),
    device: Any = None,
    outlines_dir: str | os.PathLike | None = None,
    category_map: Mapping[str | int, int] | None = None,
    gallery: bool = True,
    overlays: bool = False,
    show_progress: bool = False,
    overrides: Mapping[str, Any] | None = None,
    train_log: str | os.PathLike | None = None,
) -> Evaluation:
    """Run the bundle's evaluation on a COCO split and write its files and pictures.

    Writes into ``output_dir``: what the workflow writes (:data:`~scripts.metrics.evaluation.PER_IMAGE_FILE`,
    ``SUMMARY_FILE``, ``RESULTS_FILE``, MONAI's ``metrics.csv`` and raw Dice/IoU
    tables), the masks ``masks/<image stem>.png`` (0/255), with ``overlays`` one picture per
    image ``overlays/<image stem>.png`` (prediction, COCO boxes, true outline, legend), with
    ``gallery`` :data:`GALLERY_FILE` (best, median and worst images) and with ``train_log``
    ``training_curves.png``. Everything is written into a hidden staging folder and moved into
    ``output_dir`` only when the run succeeds, the summary last (:func:`~scripts.io.staged_outputs`):
    a run that fails or is interrupted (Ctrl-C, SIGTERM) leaves the earlier run's files as they were,
    never a summary beside missing masks; the mask and overlay folders replace earlier ones whole.

    Args:
        split_dir: the split folder holding images and ``_annotations.coco.json``.
        output_dir: where the files go (created if missing).
        bundle_dir: the bundle (default: the bundle of this code).
        ckpt_path: weights (default: the bundle's ``models/model.pt``).
        config_files: override files layered after ``evaluate.json`` (e.g. another network).
        device: a ``torch.device`` (default: the bundle's choice).
        outlines_dir: folder of true outlines ``<image stem>.png``, for ``outline_dice``.
        category_map: as in :func:`~scripts.coco.resolve_category_map`.
        gallery: also draw the overlay gallery.
        overlays: also draw one overlay per image.
        show_progress: a front end's display: a progress bar with the time left on stderr (a line now
            and then when stderr is not a terminal) instead of the workflow's own log (MONAI's
            ``StatsHandler``: one long line of every metric and a training-style "best value ... at
            epoch" line), which the caller replaces with its own summary.
        overrides: config ids set last, as objects (never parsed as config text), e.g.
            ``{"min_confidence": 0.6}``.
        train_log: a training run's TensorBoard folder: also draw its ``training_curves.png``.

    Raises:
        CocoDataError: the split has errors.
        FileNotFoundError: ``outlines_dir`` is given but is not a folder.
        ForeignFilesError: ``masks/`` (or, with ``overlays``, ``overlays/``) holds files that the last
            evaluation there did not write (:func:`check_replaced_folders`).
        ValueError: the weights do not fit the network.
    """
    from monai.bundle import ConfigWorkflow

    from brainseg_monai.bundle_code import default_bundle_dir

    check_outlines_dir(outlines_dir)
    check_replaced_folders(output_dir, overlays)
    bundle = Path(bundle_dir or default_bundle_dir()).resolve()
    split = Path(split_dir).resolve()
    out = Path(output_dir)
    records = coco_to_datalist(split, category_map)  # the split's errors, named, before any work
    configs = [bundle / "configs" / "train.json", bundle / "configs" / "evaluate.json", *map(Path, config_files)]
    with staged_outputs(out, last=(SUMMARY_FILE,), name="evaluation") as staged:
        if train_log:  # first: a log without curves fails the run before the evaluation, not after it
            from brainseg_monai.report import training_curves

            training_curves(train_log, Path(staged) / "training_curves.png")
        staged_masks = os.path.join(staged, MASKS_DIR)
        os.mkdir(staged_masks)  # an empty split's empty mask folder replaces an earlier one too
        settings: dict[str, Any] = {
            "bundle_root": str(bundle),
            "dataset_dir": str(split.parent),
            "val_split": split.name,
            "category_map": dict(category_map) if category_map else None,
            "output_dir": staged,
            "masks_dir": staged_masks,
            "outlines_dir": None if outlines_dir is None else os.path.abspath(outlines_dir),
        }
        if ckpt_path:
            settings["ckpt_path"] = os.path.abspath(ckpt_path)
        with _quiet("monai.bundle.workflows") if show_progress else contextlib.nullcontext():
            # logging_file=False makes MONAI warn that it skips logging: no news to a user of the front end
            workflow = ConfigWorkflow(
                config_file=[str(c) for c in configs], workflow_type="eval", logging_file=False, **settings
            )
        if device is not None:
            workflow.parser["device"] = device  # an object: text never becomes a $ expression
        for key, value in (overrides or {}).items():
            workflow.parser[key] = value
        notes = {"split_dir": str(split), "model": _model_name(bundle, ckpt_path)}
        workflow.parser["evaluation_notes"] = notes
        if show_progress:
            _disable_stats_handlers(workflow.parser)
            if "validate#dataset#cache_rate" in workflow.parser:
                # one pass over the split gains nothing from a cache, and filling it up front (every image
                # read and resized) would keep the screen silent before the bar starts: load in the loop
                workflow.parser["validate#dataset#cache_rate"] = 0.0
        workflow.initialize()
        progress = None
        if show_progress:
            from scripts.handlers import ProgressHandler

            progress = ProgressHandler("evaluate", "image")
            progress.attach(workflow.parser.get_parsed_content("validate#evaluator"))  # the instance run() runs
        try:
            workflow.run()
        finally:
            if progress is not None:
                progress.close()  # a failed run's error line must not land on a half-drawn bar
        workflow.finalize()
        metric = workflow.parser.get_parsed_content("tumor_evaluation")  # the instance the evaluator filled
        if overlays:
            _write_overlays(records, metric.rows, staged_masks, os.path.join(staged, OVERLAYS_DIR), outlines_dir)
        evaluation = Evaluation(rows=metric.rows, summary={**metric.summary, **notes}, coco_results=metric.coco_results)
        if gallery and records:
            _write_gallery(records, evaluation.rows, staged_masks, outlines_dir, Path(staged) / GALLERY_FILE)
    return evaluation


def check_replaced_folders(output_dir: str | os.PathLike, overlays: bool = False) -> None:
    """Refuse, before any work, to replace a mask or overlay folder holding anything but an evaluation's files.

    An evaluation replaces ``masks/`` (and, with ``overlays``, ``overlays/``) whole, so that no mask of an
    earlier split lies beside this one's. What the last evaluation wrote there is known from its
    :data:`~scripts.metrics.evaluation.PER_IMAGE_FILE`: one ``<image stem>.png`` per row. Anything else (a
    person's notes, a corrected mask saved under a new name, a folder) would be lost, so it stops the run
    instead. Files an operating system leaves behind (:data:`SYSTEM_FILES`) are not a person's work.

    Raises:
        ForeignFilesError: naming the folder, the first files (:data:`MAX_NAMED_FILES`) and how many there are.
    """
    out = Path(output_dir)
    written = _names_written(out / PER_IMAGE_FILE)
    for name in (MASKS_DIR, OVERLAYS_DIR) if overlays else (MASKS_DIR,):
        folder = out / name
        if not folder.exists() and not folder.is_symlink():
            continue
        if folder.is_symlink() or not folder.is_dir():
            raise ForeignFilesError(
                f"{folder}: not a folder an evaluation wrote; the evaluation would replace it with its {name}/ folder: "
                "move it or choose another output folder; nothing was evaluated"
            )
        foreign = sorted(
            entry.name
            for entry in os.scandir(folder)
            if entry.name not in SYSTEM_FILES and not (entry.name in written and entry.is_file(follow_symlinks=False))
        )
        if foreign:
            shown = ", ".join(n if n.isprintable() else repr(n) for n in foreign[:MAX_NAMED_FILES])
            more = f" and {len(foreign) - MAX_NAMED_FILES} more" if len(foreign) > MAX_NAMED_FILES else ""
            raise ForeignFilesError(
                f"{folder} holds {len(foreign)} {'file' if len(foreign) == 1 else 'files'} that no evaluation wrote "
                f"there ({shown}{more}); each evaluation "
                f"replaces {name}/ whole: move them or choose another output folder; nothing was evaluated"
            )


def _names_written(table: Path) -> set[str]:
    """The mask and overlay file names of the evaluation whose per-image table is ``table`` (none without one)."""
    try:
        _, rows = read_csv(table)
    except (OSError, ValueError, csv.Error):  # missing or not a table: nothing there is known to be an evaluation's
        return set()
    return {os.path.basename(mask_output_path(row["file_name"], "")) for row in rows if row.get("file_name")}


@contextlib.contextmanager
def _quiet(logger_name: str):
    """Only errors from this logger while the block runs."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _disable_stats_handlers(parser: Any) -> None:
    """Turn off the evaluator's ``StatsHandler``s (``_disabled_``), whatever their place in ``validate#handlers``.

    They log a training-style report: every metric on one line (MONAI writes a value that is not a
    number, such as an outline Dice of None without outlines, with no separator after it:
    ``outline_dice_mean: Noneoutline_dice_median``) and "best value ... at epoch 1".
    """
    handlers = parser["validate#handlers"] if "validate#handlers" in parser else []
    for index, handler in enumerate(handlers if isinstance(handlers, list) else []):
        target = handler.get("_target_", "") if isinstance(handler, dict) else ""
        if str(target).rsplit(".", 1)[-1] == "StatsHandler":
            parser[f"validate#handlers#{index}#_disabled_"] = True


def _model_name(bundle: Path, ckpt_path: str | os.PathLike | None) -> str:
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {}
    name = f"{meta.get('name', bundle.name)} {meta.get('version', '')}".strip()
    return f"{name} ({os.path.basename(ckpt_path)})" if ckpt_path else name


def _boxes(record: Mapping[str, Any]) -> list[list[float]]:
    label = record["label"]
    return [annotation_box(a, int(label["height"]), int(label["width"])) for a in label["annotations"]]


def _write_overlays(
    records: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    masks_dir: str,
    folder: str,
    outlines_dir: str | os.PathLike | None,
) -> None:
    from brainseg_monai.report import overlay_caption, single_overlay
    from scripts.verdict import verdict_of

    by_name = {row["file_name"]: row for row in rows}
    for record in records:
        row = by_name.get(os.path.basename(record["image"]), {})
        verdict = verdict_of([1] * int(row.get("n_pred") or 0), [1] if row.get("possible_tumor") else [])
        single_overlay(
            record["image"],
            mask_output_path(record["image"], masks_dir),  # the label map: tumor and possible tumor
            mask_output_path(record["image"], folder),
            boxes=_boxes(record),
            outline=outline_path(outlines_dir, record["image"]),
            caption=overlay_caption(record["image"], verdict, float(row.get("tumor_score") or 0.0)),
        )


def _write_gallery(
    records: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    masks_dir: str,
    outlines_dir: str | os.PathLike | None,
    path: Path,
) -> None:
    from brainseg_monai.report import overlay_gallery

    by_name = {os.path.basename(rec["image"]): rec for rec in records}
    ordered = [by_name[row["file_name"]] for row in rows]  # the workflow's rows, sorted by file name
    overlay_gallery(
        rows,
        image_paths=[rec["image"] for rec in ordered],
        pred_masks=[mask_output_path(rec["image"], masks_dir) for rec in ordered],
        gt_boxes=[_boxes(rec) for rec in ordered],
        output_path=path,
        outlines=None if outlines_dir is None else [outline_path(outlines_dir, rec["image"]) for rec in ordered],
    )
