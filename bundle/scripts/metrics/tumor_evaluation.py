"""Every figure of a COCO split's evaluation as one ignite metric, and the files it is written to.

``evaluate.json`` attaches :class:`TumorEvaluation` to its evaluator next to MONAI's Dice and
IoU, the way Model Zoo's detection bundles wrap pycocotools' COCOeval: per image it compares
the post-processed mask with the split's COCO annotations (:func:`~.evaluation.evaluate_image`:
pixel, box, detection, containment, fill ratio, outline Dice) and at the end of the epoch it
summarises the split (:func:`~.evaluation.summarize`, COCO AP included). Every summary figure
lands in ``engine.state.metrics``; :class:`EvaluationWriter` writes the per-image rows, the
summary and the COCO results. ``brainseg evaluate`` runs this workflow and adds pictures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.metrics import Metric

from .coco_ap import records_to_coco
from .evaluation import (
    PER_IMAGE_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    check_outlines_dir,
    evaluate_image,
    outline_path,
    summarize,
    write_json,
    write_rows,
)

__all__ = ["EvaluationWriter", "TumorEvaluation", "evaluate_predictions"]


def _as_items(output: Any) -> list[Mapping[str, Any]]:
    return list(output) if isinstance(output, (list, tuple)) else [output]


class TumorEvaluation(Metric):
    """Per-image rows and the split's summary of every evaluation figure, as an ignite metric.

    Attach it under a name (``evaluate.json``: ``"validate#additional_metrics#tumor_evaluation"``);
    ``compute`` returns the summary, whose keys ignite also puts into ``engine.state.metrics``
    one by one (``detection_f1``, ``containment_f1``, ``bbox_AP50``, ``outline_dice_mean``...).

    Args:
        datalist: the split's records (:func:`~scripts.coco.coco_to_datalist`); each prediction is
            matched to its record by the image's path.
        outlines_dir: folder of true outlines ``<image stem>.png`` for ``outline_dice`` (optional).
        pred_key: the post-processed mask: one channel, or two (one-hot, tumor second).
        prob_key: the tumor probability before thresholding (two channels, or one), for the
            scores of the COCO results; optional.
        source_key: the image key whose metadata names the file, and whose ``<key>_unusual``
            the input check set.
        output_transform: ignite's; the default takes the engine's decollated output as it is.
        device: ignite's.

    Raises:
        FileNotFoundError: ``outlines_dir`` is given but is not a folder.
    """

    required_output_keys = None  # the whole decollated output: a list of dicts, one per image

    def __init__(
        self,
        datalist: Sequence[Mapping[str, Any]],
        outlines_dir: str | os.PathLike | None = None,
        pred_key: str = "pred",
        prob_key: str | None = "pred_prob",
        source_key: str = "image",
        output_transform: Callable = _as_items,
        device: str | torch.device = "cpu",
    ) -> None:
        check_outlines_dir(outlines_dir)
        self.datalist = list(datalist)
        self.records = {os.path.abspath(os.fspath(r["image"])): r for r in self.datalist}
        self.outlines_dir = outlines_dir
        self.pred_key, self.prob_key, self.source_key = pred_key, prob_key, source_key
        self.rows: list[dict[str, Any]] = []
        self.coco_results: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self.rows, self.coco_results, self.summary = [], [], {}

    def update(self, output: Sequence[Mapping[str, Any]]) -> None:
        for item in _as_items(output):
            meta = getattr(item.get(self.source_key), "meta", None) or {}
            name = os.fspath(meta.get("filename_or_obj", ""))
            record = self.records.get(os.path.abspath(name)) if name else None
            if record is None:
                raise ValueError(f"{name or 'an output'}: not an image of the evaluated datalist")
            mask = _channel(item[self.pred_key], "mask")
            prob = item.get(self.prob_key) if self.prob_key else None
            score = item.get(f"{self.pred_key}_tumor_score")
            unusual = item.get(f"{self.source_key}_unusual")
            row, results = evaluate_image(
                record,
                mask,
                None if prob is None else _channel(prob, "probability"),
                outline_path(self.outlines_dir, record["image"]),
                None if score is None else float(score),
                None if unusual is None else bool(unusual),
                bool(item.get(f"{self.pred_key}_possible_components")),
                _possible_mask(item.get(f"{self.pred_key}_possible")),
            )
            self.rows.append(row)
            self.coco_results.extend(results)

    def compute(self) -> dict[str, Any]:
        rows, results = _gathered(self.rows), _gathered(self.coco_results)
        rows.sort(key=lambda r: r["file_name"])
        seen = {int(r["image_id"]) for r in rows}
        gt = records_to_coco([r for r in self.datalist if int(r["image_id"]) in seen])
        self.rows, self.coco_results = rows, results
        self.summary = summarize(rows, gt, results)
        return dict(self.summary)


def evaluate_predictions(
    records: Sequence[Mapping[str, Any]], predictions: Iterable[Any], outlines_dir: str | os.PathLike | None = None
) -> TumorEvaluation:
    """Feed predictions made outside a workflow to :class:`TumorEvaluation`, one image at a time.

    For studies that change the inputs or the post-processing (``benchmarks/robustness.py``,
    ``benchmarks/tune_postprocessing.py``): the figures are the workflow's own.

    Args:
        records: datalist records (:func:`~scripts.coco.coco_to_datalist`).
        predictions: one per record, in order: a mask, ``(mask, probability)`` or a
            :class:`~scripts.predictor.TumorPrediction`; may be a generator.
        outlines_dir: folder of true outlines, for ``outline_dice``.

    Returns:
        the computed metric: ``rows``, ``summary``, ``coco_results``.

    Raises:
        ValueError: more or fewer predictions than records.
    """
    from monai.data import MetaTensor

    metric = TumorEvaluation(records, outlines_dir)
    metric.reset()
    iterator = iter(predictions)
    for index, record in enumerate(records):
        prediction = next(iterator, None)
        if prediction is None:
            raise ValueError(f"{index} predictions for {len(records)} records")
        item: dict[str, Any] = {"image": MetaTensor(torch.zeros(1, 1, 1), meta={"filename_or_obj": record["image"]})}
        if hasattr(prediction, "tumor_score"):  # a TumorPrediction
            mask, prob = prediction.mask, prediction.probability
            item["pred_tumor_score"], item["image_unusual"] = prediction.tumor_score, prediction.input_unusual
            item["pred_possible_components"] = prediction.possible_components
            if prediction.possible_mask is not None:
                item["pred_possible"] = torch.as_tensor(np.asarray(prediction.possible_mask)[None])
        else:
            mask, prob = prediction if isinstance(prediction, tuple) else (prediction, None)
        item["pred"] = torch.as_tensor(np.asarray(mask)[None])
        if prob is not None:
            item["pred_prob"] = torch.as_tensor(np.asarray(prob, dtype=np.float32)[None])
        metric.update([item])
    if next(iterator, None) is not None:
        raise ValueError(f"more predictions than the {len(records)} records")
    metric.compute()
    return metric


def _possible_mask(value: Any) -> np.ndarray | None:
    """The possible tumors' (H, W) mask (``<pred_key>_possible``), None when the post-processing made none."""
    return None if value is None else _channel(value, "possible tumor mask")


def _channel(value: Any, what: str) -> np.ndarray:
    """The tumor channel of a (C, H, W) array (the last of two, the only one of one) as (H, W)."""
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.ndim == 3 and arr.shape[0] in (1, 2):
        return arr[-1]
    if arr.ndim == 2:
        return arr
    raise ValueError(f"expected a (1|2, H, W) or (H, W) {what}, got shape {arr.shape}")


def _gathered(items: list[Any]) -> list[Any]:
    """Every rank's items (the rank's own when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return list(items)
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, items)
    return [x for part in parts for x in part]


class EvaluationWriter:
    """Ignite handler: write a :class:`TumorEvaluation`'s files when the run completes.

    Writes, each atomically, into ``output_dir``: ``metrics_per_image.csv`` (one row per image),
    ``metrics_summary.json`` (the summary plus ``notes``, e.g. the split and the model) and
    ``coco_results.json`` (every predicted component in COCO results format, for pycocotools).
    Only the first rank writes.

    Args:
        metric: the attached metric.
        output_dir: the folder of the files.
        notes: extra summary entries.
    """

    def __init__(
        self, metric: TumorEvaluation, output_dir: str | os.PathLike, notes: Mapping[str, Any] | None = None
    ) -> None:
        self.metric = metric
        self.output_dir = Path(output_dir)
        self.notes = dict(notes or {})

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return
        write_rows(self.metric.rows, self.output_dir / PER_IMAGE_FILE)
        write_json(self.metric.coco_results, self.output_dir / RESULTS_FILE)
        write_json({**self.metric.summary, **self.notes}, self.output_dir / SUMMARY_FILE)
