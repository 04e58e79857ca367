"""The per-image "tumor found / no tumor found" report every front end writes.

:class:`~scripts.transforms.TumorProbabilityToMaskd` gives each prediction a tumor score
and the components it kept; this module turns those into one row per image (or per slice),
one CSV layout (:data:`TUMOR_REPORT_FIELDS`) and one sentence ("tumor found on 7 of 24
slices"), so ``python -m monai.bundle run`` inference, ``brainseg segment``, ``brainseg
evaluate`` and the Slicer module say the same thing in the same words.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .io import atomic_output

__all__ = [
    "TUMOR_REPORT_FIELDS",
    "TUMOR_REPORT_FILE",
    "UNUSUAL_INPUT_WARNING",
    "TumorReportWriter",
    "read_tumor_report",
    "tumor_count_summary",
    "tumor_row",
    "tumor_summary",
    "write_tumor_report",
]

#: The report's file name, in the folder the masks are written to.
TUMOR_REPORT_FILE = "tumor_report.csv"

#: Columns: the input, whether a tumor was found, the highest component confidence (0 when
#: nothing passed the threshold), the components kept, the mask's pixel count, whether the input
#: looks unlike the training slices (:mod:`scripts.input_check`; for a volume, how many of
#: its slices do), and for a volume segmented slice by slice "tumor found on N of M slices"
#: (empty for a 2D image).
TUMOR_REPORT_FIELDS = (
    "file_name",
    "tumor_found",
    "tumor_score",
    "n_components",
    "tumor_area_px",
    "input_unusual",
    "slices_with_tumor",
)

UNUSUAL_INPUT_WARNING = "looks unlike the T1 contrast MRI slices the model was trained on: the result may mean nothing"


def tumor_row(
    file_name: str, score: float, components: Sequence[Mapping[str, Any]], input_unusual: bool | int = False
) -> dict[str, Any]:
    """One report row from a prediction's tumor score and kept components.

    Args:
        file_name: the input's name.
        score: ``<key>_tumor_score`` from :class:`~scripts.transforms.TumorProbabilityToMaskd`.
        components: ``<key>_components`` from the same transform.
        input_unusual: ``image_unusual`` from :class:`~scripts.input_check.InputLikenessd`
            (for a volume, the number of unusual slices).
    """
    return {
        "file_name": file_name,
        "tumor_found": bool(components),
        "tumor_score": round(float(score), 4),
        "n_components": len(components),
        "tumor_area_px": int(sum(int(c["area"]) for c in components)),
        "input_unusual": input_unusual,
    }


def tumor_summary(rows: Sequence[Mapping[str, Any]], unit: str = "images") -> str:
    """One sentence: "tumor found on N of M images" (or slices), or "no tumor found on any of M images"."""
    return tumor_count_summary(sum(bool(r["tumor_found"]) for r in rows), len(rows), unit)


def tumor_count_summary(found: int, total: int, unit: str = "images") -> str:
    """:func:`tumor_summary` from the counts."""
    if found == 0:
        return f"no tumor found on any of {total} {unit}"
    return f"tumor found on {found} of {total} {unit}"


def write_tumor_report(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Write the rows as CSV (:data:`TUMOR_REPORT_FIELDS`), atomically; returns the path."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=TUMOR_REPORT_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in TUMOR_REPORT_FIELDS})
    return os.fspath(path)


def read_tumor_report(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a report written by :func:`write_tumor_report` (values as text, ``tumor_found`` as bool).

    Raises:
        ValueError: the file is not a tumor report (named, with its header).
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "file_name" not in reader.fieldnames or "tumor_found" not in reader.fieldnames:
            raise ValueError(f"{path}: not a tumor report (header {reader.fieldnames})")
        return [{**row, "tumor_found": row["tumor_found"] == "True"} for row in reader]


class TumorReportWriter:
    """Ignite handler: collect each inference output's tumor score and write :data:`TUMOR_REPORT_FILE`.

    Attached to the bundle's inference evaluator, it reads ``<key>_tumor_score`` and
    ``<key>_components`` from every decollated output, names each row after the input's
    ``filename_or_obj``, and when the run completes writes the report (atomically) into
    ``output_dir`` and logs the one-line summary.

    Args:
        output_dir: the folder of the report (the masks' folder).
        key: the prediction key the post-processing filled.
        source_key: the key whose metadata names the input.
        filename: the report's file name.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        key: str = "pred",
        source_key: str = "image",
        filename: str = TUMOR_REPORT_FILE,
    ) -> None:
        self.path = os.path.join(os.fspath(output_dir), filename)
        self.key = key
        self.source_key = source_key
        self.rows: list[dict[str, Any]] = []
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Any) -> None:
        """Collect after every iteration, write when the run completes."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.rows = []

    def _collect(self, engine: Any) -> None:
        outputs = engine.state.output
        for item in outputs if isinstance(outputs, list) else [outputs]:
            meta = getattr(item.get(self.source_key), "meta", None) or {}
            name = os.path.basename(str(meta.get("filename_or_obj", f"image {len(self.rows)}")))
            score = item.get(f"{self.key}_tumor_score")
            if score is None:
                raise KeyError(
                    f"{name}: no {self.key}_tumor_score in the output; the postprocessing must end with "
                    "TumorProbabilityToMaskd"
                )
            unusual = bool(item.get(f"{self.source_key}_unusual", False))
            if unusual:
                self.logger.warning(f"{name} {UNUSUAL_INPUT_WARNING}")
            self.rows.append(tumor_row(name, float(score), item.get(f"{self.key}_components") or [], unusual))

    def add_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Add rows made outside the evaluator (the run's volumes, :mod:`scripts.volumes`); write the report again."""
        self.rows.extend(dict(r) for r in rows)
        self._write(None)

    def _write(self, engine: Any) -> None:
        write_tumor_report(self.rows, self.path)
        unusual = sum(bool(r["input_unusual"]) for r in self.rows)
        odd = f"; {unusual} input(s) unlike the training data" if unusual else ""
        self.logger.info(f"{tumor_summary(self.rows)}{odd}; report: {self.path}")
