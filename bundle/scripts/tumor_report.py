"""The per-image "tumor / possible tumor / no tumor found" report every front end writes.

:class:`~scripts.transforms.TumorProbabilityToMaskd` gives each prediction a tumor score
and the components it kept; this module turns those into one row per image (or per slice),
one CSV layout (:data:`TUMOR_REPORT_FIELDS`) and one sentence ("tumor found on 7 of 24
slices"), so ``python -m monai.bundle run`` inference, ``brainseg segment``, ``brainseg
evaluate`` and the Slicer module say the same thing in the same words. A volume also gets a
report of its own, one row per slice (:data:`SLICE_REPORT_FIELDS`, ``<stem>_slices.csv``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .csv_files import read_csv, write_csv
from .io import mask_output_path
from .verdict import NO_TUMOR, POSSIBLE_TUMOR, TUMOR, verdict_of, volume_verdict

__all__ = [
    "SLICE_REPORT_FIELDS",
    "SLICE_REPORT_SUFFIX",
    "TUMOR_REPORT_FIELDS",
    "TUMOR_REPORT_FILE",
    "UNUSUAL_INPUT_WARNING",
    "TumorReportWriter",
    "is_volume_row",
    "read_tumor_report",
    "row_summary",
    "slice_report_path",
    "slice_rows",
    "tumor_count_summary",
    "tumor_row",
    "tumor_summary",
    "volume_row",
    "write_slice_report",
    "write_tumor_report",
]

#: The report's file name, in the folder the masks are written to.
TUMOR_REPORT_FILE = "tumor_report.csv"

#: Columns: the input; its verdict ("tumor", "possible tumor", "no tumor found", :mod:`scripts.verdict`);
#: whether a tumor was found (the verdict is "tumor") and whether a possible tumor is shown; the
#: highest component confidence (0 when nothing passed the pixel threshold); the tumor components
#: kept and their pixel count; the possible tumors and their pixel count (in the input's own pixels: for a
#: slice given square pixels, :mod:`scripts.square_pixels`, counted there and scaled back); whether the input looks
#: unlike the training slices (:mod:`scripts.input_check`; True/False for images and volumes alike);
#: and for a volume segmented slice by slice (empty for a 2D image) its number of slices, how many of
#: them look unlike the training slices, and how many hold a tumor and a possible tumor (a slice with
#: both counts as a tumor slice only).
TUMOR_REPORT_FIELDS = (
    "file_name",
    "verdict",
    "tumor_found",
    "possible_tumor",
    "tumor_score",
    "n_components",
    "tumor_area_px",
    "n_possible",
    "possible_area_px",
    "input_unusual",
    "n_slices",
    "unusual_slices",
    "slices_with_tumor",
    "slices_with_possible_tumor",
)

#: A volume's per-slice report, beside its mask and named after it: ``<mask stem>_slices.csv``.
SLICE_REPORT_SUFFIX = "_slices.csv"

#: Columns of a volume's per-slice report, one row per slice in slice order: the slice's index along the
#: axis the volume was cut along (its axial slices', :func:`~scripts.volumes.axial_slicing`; K for a volume acquired
#: axially), from 0: the mask's slice of that index; the columns of :data:`TUMOR_REPORT_FIELDS`
#: for that slice, its verdict the final one, after the neighbouring slices were consulted; the fraction of
#: the slice's tumor pixels that lie under a tumor or possible tumor on an adjacent slice
#: (``neighbour_support``, :class:`~scripts.verdict.NeighbourSupport`; empty where the slice alone found no
#: tumor); and whether too little support made its tumor a possible tumor (``demoted_by_neighbours``).
SLICE_REPORT_FIELDS = (
    "slice",
    *TUMOR_REPORT_FIELDS[1 : TUMOR_REPORT_FIELDS.index("input_unusual") + 1],
    "neighbour_support",
    "demoted_by_neighbours",
)

UNUSUAL_INPUT_WARNING = "looks unlike the T1 contrast MRI slices the model was trained on: the result may mean nothing"


def tumor_row(
    file_name: str,
    score: float,
    components: Sequence[Mapping[str, Any]],
    input_unusual: bool = False,
    possible_components: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One report row from a prediction's tumor score, kept components and possible tumors.

    Args:
        file_name: the input's name.
        score: ``<key>_tumor_score`` from :class:`~scripts.transforms.TumorProbabilityToMaskd`.
        components: ``<key>_components`` from the same transform.
        input_unusual: ``image_unusual`` from :class:`~scripts.input_check.InputLikenessd`.
        possible_components: ``<key>_possible_components`` from the same transform.
    """
    return {
        "file_name": file_name,
        "verdict": verdict_of(components, possible_components),
        "tumor_found": bool(components),
        "possible_tumor": bool(possible_components),
        "tumor_score": round(float(score), 4),
        "n_components": len(components),
        "tumor_area_px": int(sum(int(c["area"]) for c in components)),
        "n_possible": len(possible_components),
        "possible_area_px": int(sum(int(c["area"]) for c in possible_components)),
        "input_unusual": bool(input_unusual),
    }


def volume_row(
    file_name: str, slice_reports: Sequence[Mapping[str, Any]], input_unusual: bool | None = None
) -> dict[str, Any]:
    """The report row of a volume from its slices' reports (:func:`~scripts.volumes.predict_volume`).

    Its verdict is the most certain of its slices' (a tumor on any slice: "tumor"); its components
    are all its slices'.

    Args:
        file_name: the volume's name.
        slice_reports: one per slice.
        input_unusual: whether the volume as a whole is unlike the training data; None: more than
            half its slices are.
    """
    components = [c for r in slice_reports for c in r["components"]]
    possible = [c for r in slice_reports for c in r.get("possible_components", ())]
    unusual_slices = sum(bool(r["input_unusual"]) for r in slice_reports)
    if input_unusual is None:
        input_unusual = unusual_slices > len(slice_reports) / 2
    row = tumor_row(
        file_name, max((r["tumor_score"] for r in slice_reports), default=0.0), components, input_unusual, possible
    )
    verdicts = [r.get("verdict", verdict_of(r["components"], r.get("possible_components", ()))) for r in slice_reports]
    row["verdict"] = volume_verdict(verdicts)
    row["n_slices"] = len(slice_reports)
    row["unusual_slices"] = unusual_slices
    row["slices_with_tumor"] = verdicts.count(TUMOR)
    row["slices_with_possible_tumor"] = verdicts.count(POSSIBLE_TUMOR)
    return row


def is_volume_row(row: Mapping[str, Any]) -> bool:
    """Whether a report row is a volume's (it counts its slices) rather than a 2D image's."""
    return row.get("n_slices") not in (None, "")


def row_summary(row: Mapping[str, Any]) -> str:
    """One report row in a phrase: its verdict and, for a volume, its slices with a tumor and with a possible tumor.

    "tumor (tumor found on 7 of 24 slices; possible tumor on 2 of 24 slices)".
    """
    said = str(row["verdict"])
    if is_volume_row(row):
        n, found, possible = int(row["n_slices"]), int(row["slices_with_tumor"]), int(row["slices_with_possible_tumor"])
        if found == 0 and possible:
            said = f"{said} ({tumor_count_summary(found, n, 'slices', possible)})"
        else:
            said = f"{said} ({tumor_count_summary(found, n, 'slices')}; possible tumor on {possible} of {n} slices)"
    return said


def slice_rows(slice_reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-slice report's rows (:data:`SLICE_REPORT_FIELDS`) from a volume's slice reports
    (:func:`~scripts.volumes.predict_volume`, after its volume rule)."""
    rows = []
    for report in slice_reports:
        row = tumor_row(
            "",
            report["tumor_score"],
            report["components"],
            report["input_unusual"],
            report.get("possible_components", ()),
        )
        del row["file_name"]
        row["verdict"] = report.get("verdict", row["verdict"])  # as the volume row counts it
        support = report.get("support")
        row.update(
            neighbour_support="" if support is None else support,
            demoted_by_neighbours=bool(report.get("unsupported", False)),
        )
        rows.append({"slice": int(report["index"]), **row})
    return rows


def slice_report_path(mask_path: str | os.PathLike) -> str:
    """Where the per-slice report of the volume whose mask is ``mask_path`` goes: beside it, ``<stem>_slices.csv``."""
    return mask_output_path(mask_path, os.path.dirname(os.fspath(mask_path)), SLICE_REPORT_SUFFIX)


def tumor_summary(rows: Sequence[Mapping[str, Any]], unit: str = "images") -> str:
    """One sentence: "tumor found on N of M images" (or slices), and how many more show a possible tumor."""
    found = sum(r.get("verdict", TUMOR if r["tumor_found"] else NO_TUMOR) == TUMOR for r in rows)
    possible = sum(r.get("verdict") == POSSIBLE_TUMOR for r in rows)
    return tumor_count_summary(found, len(rows), unit, possible)


def tumor_count_summary(found: int, total: int, unit: str = "images", possible: int = 0) -> str:
    """:func:`tumor_summary` from the counts.

    "tumor found on 2 of 24 slices; possible tumor on 1 more"; with no tumor, "possible tumor on 1 of 24 slices,
    tumor on none" (never "no tumor found", the verdict of a slice with nothing shown, beside a possible tumor).
    """
    if found == 0 and possible:
        return f"possible tumor on {possible} of {total} {unit}, tumor on none"
    said = f"no tumor found on any of {total} {unit}" if found == 0 else f"tumor found on {found} of {total} {unit}"
    return f"{said}; possible tumor on {possible} more" if possible else said


def write_tumor_report(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Write the rows as CSV (:data:`TUMOR_REPORT_FIELDS`), atomically; returns the path."""
    return write_csv(rows, path, TUMOR_REPORT_FIELDS)


def write_slice_report(slice_reports: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Write a volume's per-slice report (:func:`slice_rows`, :data:`SLICE_REPORT_FIELDS`) as CSV, atomically;
    returns the path."""
    return write_csv(slice_rows(slice_reports), path, SLICE_REPORT_FIELDS)


def read_tumor_report(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a report written by :func:`write_tumor_report` (values as text, ``tumor_found`` and
    ``possible_tumor`` as bool; a report from before the possible-tumor level gets its verdict from ``tumor_found``).

    Raises:
        ValueError: the file is not a tumor report (named, with its header).
    """
    fields, rows = read_csv(path)
    if "file_name" not in fields or "tumor_found" not in fields:
        raise ValueError(f"{path}: not a tumor report (header {fields or None})")
    return [
        {
            **row,
            "tumor_found": row["tumor_found"] == "True",
            "possible_tumor": row.get("possible_tumor") == "True",
            "verdict": row.get("verdict") or (TUMOR if row["tumor_found"] == "True" else NO_TUMOR),
        }
        for row in rows
    ]


class TumorReportWriter:
    """Ignite handler: collect each inference output's tumor score and write :data:`TUMOR_REPORT_FILE`.

    Attached to the bundle's inference evaluator, it reads ``<key>_tumor_score`` and
    ``<key>_components`` from every decollated output, names each row after the input's
    ``filename_or_obj``, and when the run completes writes the report (atomically) into
    ``output_dir`` and logs the one-line summary.

    A run that adds rows after the evaluator (``inference.json``: its volumes, :meth:`add_rows`)
    sets ``final_summary`` and calls :meth:`finish` last: the report is still written at each step,
    but the summary is logged once, over every input, instead of once for the images and again,
    with other counts, for images and volumes together.

    A report already in ``output_dir`` (an earlier run) keeps its rows of the inputs this run does
    not segment: a second run into the folder adds to the report. A file there that is not a tumor
    report stops the run at its start, before anything is written.

    Args:
        output_dir: the folder of the report (the masks' folder).
        key: the prediction key the post-processing filled.
        source_key: the key whose metadata names the input.
        filename: the report's file name.
        final_summary: log the summary only in :meth:`finish`, not when the evaluator completes
            nor when rows are added.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        key: str = "pred",
        source_key: str = "image",
        filename: str = TUMOR_REPORT_FILE,
        final_summary: bool = False,
    ) -> None:
        self.path = os.path.join(os.fspath(output_dir), filename)
        self.key = key
        self.source_key = source_key
        self.final_summary = bool(final_summary)
        self.rows: list[dict[str, Any]] = []
        self._earlier: list[dict[str, Any]] | None = None  # read on first use
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Any) -> None:
        """Collect after every iteration, write when the run completes."""
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.rows = []
        self._earlier = None
        self._report_rows()  # an unreadable earlier report stops the run here, before any output

    def _report_rows(self) -> list[dict[str, Any]]:
        """The earlier report's rows of inputs not in this run, then this run's rows."""
        if self._earlier is None:
            self._earlier = read_tumor_report(self.path) if os.path.isfile(self.path) else []
        names = {r["file_name"] for r in self.rows}
        return [r for r in self._earlier if r["file_name"] not in names] + self.rows

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
            components = item.get(f"{self.key}_components") or []
            possible = item.get(f"{self.key}_possible_components") or []
            self.rows.append(tumor_row(name, float(score), components, unusual, possible))

    def add_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Add rows made outside the evaluator (the run's volumes, :mod:`scripts.volumes`); write the report again."""
        self.rows.extend(dict(r) for r in rows)
        self._write(None)

    def finish(self) -> str:
        """Write the report and log its one summary, over every input of the run; returns the summary."""
        write_tumor_report(self._report_rows(), self.path)
        said = self.summary()
        self.logger.info(said)
        return said

    def summary(self) -> str:
        """The one-line summary of the rows so far.

        "tumor found on 2 of 3 inputs (2 images, 1 volume); 1 input(s) unlike the training data; report: <path>".
        """
        volumes = sum(is_volume_row(r) for r in self.rows)
        images = len(self.rows) - volumes
        if not volumes:
            said = tumor_summary(self.rows)
        elif not images:
            said = tumor_summary(self.rows, "volumes")
        else:
            kinds = f"{images} image{'s' * (images != 1)}, {volumes} volume{'s' * (volumes != 1)}"
            said = tumor_summary(self.rows, f"inputs ({kinds})")
        unusual = sum(bool(r["input_unusual"]) for r in self.rows)
        odd = f"; {unusual} input(s) unlike the training data" if unusual else ""
        return f"{said}{odd}; report: {self.path}"

    def _write(self, engine: Any) -> None:
        write_tumor_report(self._report_rows(), self.path)
        if not self.final_summary:
            self.logger.info(self.summary())
