"""Volumes segmented slice by slice: the one slice loop of every front end.

``python -m monai.bundle run`` inference (:class:`VolumeSegmentation`, for the NIfTI, NRRD,
MetaImage and DICOM files of ``dataset_dir``), ``brainseg segment`` and the 3D Slicer module
(its Lib and background worker) all cut a volume into 2D slices here, hand them to a
predictor (:class:`~scripts.predictor.SlicePredictor`) a batch at a time, checking for
cancellation between batches, and put each slice's mask back in its place.

Arrays are in ITK's and ``slicer.util.arrayFromVolume``'s numpy order: ``(k, j, i)`` for
scalar volumes and ``(k, j, i, c)`` for vector (RGB/RGBA) ones. Each 2D slice is given to the
predictor in ``(row, column)`` order as it lies in the array, so slice ``k`` of a volume gets the
same pixels as ``predict_array(array[k])``. Given the volume's direction matrix, a volume is cut
into its axial slices, rows front to back, wherever they lie (:func:`axial_slicing`); given its
spacing, a slice whose pixels are rectangular gets square ones (:mod:`scripts.square_pixels`).

Only numpy is imported here: the Slicer module's main process uses this module.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol, Union

import numpy as np

from .square_pixels import (
    plane_spacing,
    resample_linear,
    resample_nearest,
    scale_components,
    square_shape,
    volume_spacing,
)

__all__ = [
    "AXIS_NAMES",
    "Predictor",
    "SegmentationCancelled",
    "VolumeResult",
    "VolumeSegmentation",
    "axial_slicing",
    "is_cancelled",
    "predict_volume",
    "resolve_axis",
    "segment_medical_file",
    "slice_plane",
    "slicing",
]

#: IJK axis index -> name. ``axis=2`` (K) slices a volume the way it was acquired.
AXIS_NAMES = {0: "I", 1: "J", 2: "K"}

#: The rows of a direction matrix (one column per IJK axis) that point front to back and foot to head: the same
#: in ITK's LPS and Slicer's RAS matrices, which differ only in the signs of rows 0 and 1 (only magnitudes are read).
_ANTERIOR_POSTERIOR, _SUPERIOR_INFERIOR = 1, 2
#: How much nearer an axis must be to win over the axis a volume is stored along: a tie (a 45 degree
#: oblique volume) keeps K and the planes as they lie.
_TIE = 1e-6

# typing.Union, not X | Y: the Slicer Lib imports this module, and Slicer 5.8 runs Python 3.9
CancelSpec = Optional[Union[Callable[[], bool], threading.Event]]
ProgressCallback = Optional[Callable[[float], Any]]


class SegmentationCancelled(RuntimeError):
    """Raised when the ``cancel`` callable/event fires; nothing was written to the scene."""


class Predictor(Protocol):
    """What :func:`predict_volume` needs from a predictor (``BundlePredictor`` provides it).

    ``predict_arrays`` takes 2D images as ``(H, W)`` or ``(H, W, C)`` arrays (C = 3 or 4: RGB(A),
    turned to grey by the predictor's own transforms) and returns, per image, an ``(H, W)`` 0/1
    mask, or ``(mask, probability)`` with ``with_probability=True``.
    """

    def predict_arrays(
        self, images: Sequence[np.ndarray], with_probability: bool = False, batch_size: int = 8
    ) -> list[Any]:
        """One result per image, in order."""


def is_cancelled(cancel: CancelSpec) -> bool:
    """True if ``cancel`` (a ``threading.Event``-like object or a callable returning bool) says stop."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    if callable(cancel):
        return bool(cancel())
    raise TypeError(f"cancel must be a callable or a threading.Event, got {type(cancel).__name__}")


def _check_cancel(cancel: CancelSpec) -> None:
    if is_cancelled(cancel):
        raise SegmentationCancelled("segmentation cancelled; nothing was changed")


def axial_slicing(direction: Any) -> tuple[int, bool]:
    """How to cut a head volume into axial slices, rows running front to back, from its direction matrix.

    The network learnt what a tumor-free level of a whole volume looks like from axial slices whose
    rows run front to back (TCGA-LGG). A volume acquired sagittally or coronally (a 3D T1 often is)
    holds its axial slices along another array axis than K, and some volumes store axial slices
    whose rows run right to left; cut along K and given as they lie, their slices get false tumors
    (``benchmarks/reoriented_volumes.py``). The slicing axis is
    the IJK axis whose direction lies nearest the superior-inferior axis; the slice's plane is
    transposed when its rows' axis lies farther from the anterior-posterior axis than its columns'.
    Slices are only taken and transposed, never flipped (the network learnt both flips) nor
    resampled across the volume: an oblique volume is cut along its nearest axis. (Within a slice,
    rectangular pixels are made square: :mod:`scripts.square_pixels`.)

    Args:
        direction: the 3x3 direction matrix, one column per IJK axis: ITK's ``GetDirection()`` (LPS)
            or the direction part of Slicer's IJK-to-RAS matrix; a column's length does not matter.

    Returns:
        ``(ijk_axis, transpose)``: ``(2, False)`` for a volume stored axially (whatever its flips).

    Raises:
        ValueError: not a 3x3 matrix of finite numbers, or an axis without a direction.
    """
    try:
        m = np.asarray(direction, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"direction: expected a 3x3 matrix of numbers, got {direction!r}") from None
    if m.shape != (3, 3) or not np.isfinite(m).all():
        raise ValueError(f"direction: expected a 3x3 matrix of finite numbers, got {m.tolist()}")
    lengths = np.linalg.norm(m, axis=0)
    if not (lengths > 0).all():
        raise ValueError(f"direction: the IJK axis {AXIS_NAMES[int(np.argmin(lengths))]} has no direction")
    m = np.abs(m / lengths)
    nearness = m[_SUPERIOR_INFERIOR]
    ijk_axis = 2 if nearness[2] >= nearness.max() - _TIE else int(np.argmax(nearness))
    # the plane's rows and columns: the other two IJK axes, in the array's (k, j, i) order
    rows, columns = sorted((a for a in range(3) if a != ijk_axis), reverse=True)
    front_to_back = m[_ANTERIOR_POSTERIOR]
    return ijk_axis, bool(front_to_back[columns] > front_to_back[rows] + _TIE)


def _flat_axis(shape_kji: Sequence[int]) -> int | None:
    """The IJK axis of size 1 of a single-slice image (a 2D image is one slice, whichever axis is flat)."""
    k, j, i = (int(s) for s in shape_kji[:3])
    for ijk_axis, size in ((2, k), (1, j), (0, i)):
        if size == 1:
            return ijk_axis
    return None


def resolve_axis(shape_kji: Sequence[int], axis: int | str | None = None, direction: Any = None) -> int:
    """The IJK axis to slice along: 0 (I), 1 (J) or 2 (K) (:func:`slicing`'s axis)."""
    return slicing(shape_kji, axis, direction)[0]


def slicing(shape_kji: Sequence[int], axis: int | str | None = None, direction: Any = None) -> tuple[int, bool]:
    """How a volume is cut: the IJK axis to slice along, and whether each plane is transposed.

    ``None`` picks the axis of size 1 for a single-slice image (a 2D image is one slice,
    whichever axis is flat); for a volume, its axial slices, rows front to back, when its
    ``direction`` is given (:func:`axial_slicing`), else K. Names ``"I"``, ``"J"``, ``"K"`` are
    accepted; a chosen axis that is the axial one is cut as ``None`` cuts it, any other one
    gives its planes as they lie.

    Raises:
        ValueError: ``axis`` is not one of those, or ``direction`` is not a direction matrix.
    """
    flat = _flat_axis(shape_kji)
    chosen = None if axis is None else _named_axis(axis)
    if flat is not None and chosen is None:
        return flat, False
    if direction is None or flat is not None:
        return (2 if chosen is None else chosen), False
    axial, transpose = axial_slicing(direction)
    return (axial, transpose) if chosen in (None, axial) else (chosen, False)


def _named_axis(axis: int | str) -> int:
    if isinstance(axis, str):
        names = {v: k for k, v in AXIS_NAMES.items()}
        if axis.upper() not in names:
            raise ValueError(f"axis must be 0, 1, 2 or 'I', 'J', 'K', got {axis!r}")
        return names[axis.upper()]
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or int(axis) not in AXIS_NAMES:
        raise ValueError(f"axis must be 0 (I), 1 (J) or 2 (K, slices), got {axis!r}")
    return int(axis)


def slice_plane(volume: np.ndarray, index: int, ijk_axis: int = 2, transpose: bool = False) -> np.ndarray:
    """Slice ``index`` along IJK axis ``ijk_axis`` of a ``(k, j, i[, c])`` array, as the predictor gets it.

    ``transpose`` swaps the plane's rows and columns (:func:`axial_slicing`); applied to a slice's
    mask, it turns the mask back.
    """
    plane = np.take(volume, index, axis=2 - ijk_axis)  # numpy order is (k, j, i)
    return np.swapaxes(plane, 0, 1) if transpose else plane


def predict_volume(
    array: np.ndarray,
    predictor: Predictor,
    axis: int | str | None = None,
    batch_size: int = 8,
    with_probability: bool = False,
    progress: ProgressCallback = None,
    cancel: CancelSpec = None,
    slice_reports: list | None = None,
    direction: Any = None,
    spacing: Any = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Segment a volume array slice by slice.

    Args:
        array: ``(k, j, i)`` scalar or ``(k, j, i, c)`` vector voxels (c = 1, 3 or 4).
        predictor: a ``BundlePredictor`` or any object with its ``predict_arrays``.
        axis: IJK axis to slice along (see :func:`slicing`); ``None`` with ``direction``: the
            volume's axial slices, rows front to back (:func:`axial_slicing`).
        batch_size: slices per predictor call; ``cancel`` is checked between calls.
        with_probability: also return the tumor probability.
        progress: called with the fraction done (0.0 first, 1.0 last).
        cancel: callable or ``threading.Event``; when it fires :class:`SegmentationCancelled` is raised.
        slice_reports: a list to fill with one ``{"index", "verdict", "tumor_found", "tumor_score",
            "input_unusual", "input_distance", "input_other_sequence", "components", "possible_components"}``
            per slice (``index``: the slice's index along the axis cut; component boxes in the plane as
            the predictor saw it); the predictor must take ``details=True`` (a ``BundlePredictor`` does).
            With it, the mask is a label map (1 tumor, 2 possible tumor, :mod:`scripts.verdict`), and a
            volume of several slices is decided with its neighbouring slices by the predictor's
            ``volume_rule`` (:class:`~scripts.verdict.NeighbourSupport`), when it has one.
        direction: the volume's 3x3 direction matrix (ITK's LPS or Slicer's RAS, one column per IJK axis):
            which axis holds its axial slices, and how their planes lie (:func:`slicing`).
        spacing: the volume's voxel spacing along I, J and K (ITK's ``GetSpacing()``, Slicer's ``GetSpacing()``).
            A plane whose pixels it makes rectangular (the axial slices of a volume acquired in thick coronal
            or sagittal slices) is given to the predictor with square pixels, its coarser axis interpolated
            (:mod:`scripts.square_pixels`), and its results come back on the plane's own pixels (component
            boxes and areas too). ``None``: every plane as it lies.

    Returns:
        ``(mask, probability)``: ``(k, j, i)`` uint8 labels (0/1 without ``slice_reports``) and
        float32 (``None`` without ``with_probability``).

    Raises:
        ValueError: bad array shape, axis, spacing or batch size, or the predictor's answer does not fit.
        SegmentationCancelled: ``cancel`` fired.
    """
    arr = np.asarray(array)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"expected a (k, j, i) or (k, j, i, 3|4) volume array, got shape {arr.shape}")
    if min(arr.shape[:3]) < 1:
        raise ValueError(f"the volume is empty (shape {arr.shape})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    ijk_axis, transpose = slicing(arr.shape, axis, direction)
    np_axis = 2 - ijk_axis
    n = arr.shape[np_axis]
    plane_shape = tuple(slice_plane(arr, 0, ijk_axis, transpose).shape[:2])  # a view: nothing copied
    pixel = (1.0, 1.0) if spacing is None else plane_spacing(volume_spacing(spacing), ijk_axis, transpose)
    square = square_shape(plane_shape, pixel)

    def back(result: np.ndarray, what: str, index: int) -> np.ndarray:  # a plane's result in the array's layout
        own = resample_nearest(_fit(result, square, what, index), plane_shape)
        return np.swapaxes(own, 0, 1) if transpose else own

    mask = np.zeros(arr.shape[:3], dtype=np.uint8)
    prob = np.zeros(arr.shape[:3], dtype=np.float32) if with_probability else None
    _report(progress, 0.0)
    for start in range(0, n, int(batch_size)):
        _check_cancel(cancel)
        indices = range(start, min(n, start + int(batch_size)))
        images = [resample_linear(slice_plane(arr, index, ijk_axis, transpose), square) for index in indices]
        if slice_reports is None:
            results = predictor.predict_arrays(images, with_probability=with_probability, batch_size=int(batch_size))
        else:
            results = predictor.predict_arrays(images, batch_size=int(batch_size), details=True)
        if len(results) != len(images):
            raise ValueError(f"the predictor returned {len(results)} results for {len(images)} slices")
        for index, result in zip(indices, results):
            where = _slice_index(np_axis, index)
            if slice_reports is not None:
                slice_reports.append(
                    {
                        "index": index,
                        "verdict": result.verdict,
                        "tumor_found": bool(result.tumor_found),
                        "tumor_score": float(result.tumor_score),
                        "input_unusual": bool(result.input_unusual),
                        "input_distance": result.input_distance,
                        "input_other_sequence": getattr(result, "input_other_sequence", None),
                        "components": scale_components(result.components, square, plane_shape),
                        "possible_components": scale_components(result.possible_components, square, plane_shape),
                    }
                )
                mask[where] = back(result.labels, "mask", index)
                slice_prob = result.probability
            else:
                slice_mask, slice_prob = result if with_probability else (result, None)
                mask[where] = back(np.asarray(slice_mask) != 0, "mask", index)
            if prob is not None:
                prob[where] = back(slice_prob, "probability", index)
        _report(progress, (indices[-1] + 1) / n)
    _check_cancel(cancel)
    rule = getattr(predictor, "volume_rule", None)
    if slice_reports is not None and rule is not None:
        rule.apply(mask, slice_reports[-n:], np_axis)
    return mask, prob


def _slice_index(np_axis: int, index: int) -> tuple:
    where: list[Any] = [slice(None)] * 3
    where[np_axis] = index
    return tuple(where)


def _fit(result: Any, shape: tuple[int, ...], what: str, index: int) -> np.ndarray:
    out = np.asarray(result)
    if out.shape != tuple(shape):
        raise ValueError(f"the predictor's {what} for slice {index} has shape {out.shape}, expected {tuple(shape)}")
    return out


def _report(progress: ProgressCallback, fraction: float) -> None:
    if progress is not None:
        progress(float(fraction))


@dataclass
class VolumeResult:
    """What :func:`segment_medical_file` read and wrote.

    Attributes:
        source: the input file (or DICOM series folder).
        mask_path: the mask written, with the input's geometry.
        array: the input's voxels, ``(y, x)`` for a 2D image or ``(k, j, i)`` for a volume.
        mask: the mask, the shape of ``array``.
        slice_reports: one per slice, as :func:`predict_volume` fills them.
        row: the input's tumor report row (:func:`~scripts.tumor_report.tumor_row`); for a
            volume with ``n_slices`` and ``slices_with_tumor`` (:func:`~scripts.tumor_report.volume_row`).
        slice_report_path: a volume's per-slice report, written beside its mask
            (:func:`~scripts.tumor_report.write_slice_report`); None for a 2D image.
        slice_axis: the IJK axis the input was cut along ("K" for an axial volume and a 2D image).
        transposed: whether each slice's plane was transposed, rows front to back (:func:`axial_slicing`).
        spacing: the input's voxel spacing along I, J and K: slices with rectangular pixels were given to
            the predictor with square ones (:mod:`scripts.square_pixels`); None: as they lie.
    """

    source: str
    mask_path: str
    array: np.ndarray
    mask: np.ndarray
    slice_reports: list[dict[str, Any]] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)
    slice_report_path: str | None = None
    slice_axis: str = "K"
    transposed: bool = False
    spacing: Optional[tuple[float, float, float]] = None

    def _grid(self) -> tuple[int, tuple[float, float], tuple[int, int], tuple[int, int]]:
        """The IJK axis cut along, the slices' (row, column) pixel spacing ((1, 1) without a spacing), their own
        (rows, columns) and those the predictor got (:func:`~scripts.square_pixels.square_shape`)."""
        ijk_axis = {v: k for k, v in AXIS_NAMES.items()}[self.slice_axis]
        stack = self.array[None] if self.array.ndim == 2 else self.array
        shape = tuple(slice_plane(stack, 0, ijk_axis, self.transposed).shape[:2])
        pixel = (1.0, 1.0) if self.spacing is None else plane_spacing(self.spacing, ijk_axis, self.transposed)
        return ijk_axis, pixel, shape, square_shape(shape, pixel)

    def cut_note(self) -> str:
        """How the input was cut, for a person, where it was not as it lies: "axial slices along J",
        "0.5 x 4 mm pixels made square" (rows x columns of the slices as cut), both joined by ", "; empty
        for an axial volume with square pixels and for a 2D image with square pixels."""
        _, pixel, shape, square = self._grid()
        notes = [f"axial slices along {self.slice_axis}"] if self.slice_axis != "K" and self.array.ndim == 3 else []
        if square != shape:
            notes.append(f"{pixel[0]:.3g} x {pixel[1]:.3g} mm pixels made square")
        return ", ".join(notes)

    def planes(self, volume: np.ndarray, labels: bool = False) -> list[np.ndarray]:
        """``array`` or ``mask`` (or a volume on their grid) as the slices the predictor saw, in slice order:
        with square pixels where the spacing made them rectangular, interpolated linearly or, for ``labels``
        (a mask), each pixel the label at its place."""
        ijk_axis, _, _, square = self._grid()
        stack = volume[None] if volume.ndim == 2 else volume
        resample = resample_nearest if labels else resample_linear  # both leave a plane of that shape as it is
        return [
            resample(slice_plane(stack, k, ijk_axis, self.transposed), square) for k in range(stack.shape[2 - ijk_axis])
        ]


def segment_medical_file(
    predictor: Predictor,
    path: str | os.PathLike,
    mask_path: str | os.PathLike,
    batch_size: int = 8,
    progress: ProgressCallback = None,
    cancel: CancelSpec = None,
) -> VolumeResult:
    """Segment a NIfTI/NRRD/MetaImage/DICOM file (or DICOM series folder) and write its mask.

    A 2D image is one slice; a volume is cut into its axial slices, rows front to back, as its direction
    matrix tells them (:func:`axial_slicing`: along K for a volume acquired axially). The mask is
    written atomically with the input's spacing, origin and direction (ITK); a volume's per-slice
    report (``<mask stem>_slices.csv``, :data:`~scripts.tumor_report.SLICE_REPORT_FIELDS`) beside it.

    Args:
        predictor: a :class:`~scripts.predictor.SlicePredictor` (it must take ``details=True``).
        path: the input.
        mask_path: where the mask goes (``.nii.gz``, ``.nrrd``...: ITK picks the writer by suffix).
        batch_size: slices per network call.
        progress: called with the fraction done.
        cancel: checked between batches.

    Raises:
        ValueError: the input cannot be read or is not a 2D/3D scalar image (the message names it).
    """
    from .input_check import unusual_volume
    from .io import image_direction, image_spacing, read_medical_image, write_medical_mask
    from .tumor_report import slice_report_path, tumor_row, volume_row, write_slice_report

    array, image = read_medical_image(path)
    reports: list[dict[str, Any]] = []
    volume = array[None] if array.ndim == 2 else array
    direction, spacing = image_direction(image), image_spacing(image)
    mask, _ = predict_volume(
        volume,
        predictor,
        batch_size=batch_size,
        progress=progress,
        cancel=cancel,
        slice_reports=reports,
        direction=direction,
        spacing=spacing,
    )
    mask = mask[0] if array.ndim == 2 else mask
    # the per-slice report first: a volume whose mask is there has its report too (--skip-existing relies on it)
    slices_path = write_slice_report(reports, slice_report_path(mask_path)) if array.ndim == 3 else None
    written = write_medical_mask(mask, image, mask_path)
    name = os.path.basename(os.path.normpath(os.fspath(path)))
    reference = getattr(predictor, "input_reference", None)
    row = None
    if array.ndim == 3:  # the volume as a whole, from its slices' distances (its skull base is unusual anyway)
        distances, flags = [r["input_distance"] for r in reports], [r["input_unusual"] for r in reports]
        other = [r.get("input_other_sequence") for r in reports]
        threshold = getattr(predictor, "other_sequence_threshold", None)
        unusual = unusual_volume(distances, reference, flags, other, threshold) if reference else None
        row = volume_row(name, reports, unusual)
    if row is None:
        (report,) = reports
        row = tumor_row(
            name, report["tumor_score"], report["components"], report["input_unusual"], report["possible_components"]
        )
    ijk_axis, transposed = slicing(volume.shape, None, direction)
    return VolumeResult(
        os.fspath(path), written, array, mask, reports, row, slices_path, AXIS_NAMES[ijk_axis], transposed, spacing
    )


class VolumeSegmentation:
    """The medical files of an inference run, segmented after its 2D images.

    ``inference.json``'s ``run`` calls :meth:`run` after the evaluator: the evaluator segments
    the JPEG/PNG files of ``dataset_dir`` in batches; this segments its NIfTI, NRRD, MetaImage
    and DICOM inputs slice by slice with the same network and transforms
    (:class:`~scripts.predictor.SlicePredictor` built from the config's ids), writes each mask
    as ``<stem><output_ext>`` with the input's geometry and a volume's per-slice report as
    ``<stem>_slices.csv``, and adds one row per input to the run's tumor report. The log gets
    one line per input (its verdict, slices with a tumor and with a possible tumor, as
    ``brainseg segment`` prints it) and a warning for an input unlike the training data.

    Args:
        predictor: the slice predictor.
        files: the medical inputs (files or DICOM series folders).
        output_dir: the masks' folder.
        report: the run's :class:`~scripts.tumor_report.TumorReportWriter`, whose file gets
            these rows too.
        output_ext: the masks' suffix.
        batch_size: slices per network call.
    """

    def __init__(
        self,
        predictor: Predictor,
        files: Sequence[str | os.PathLike],
        output_dir: str | os.PathLike,
        report: Any = None,
        output_ext: str = ".nii.gz",
        batch_size: int = 8,
    ) -> None:
        self.predictor = predictor
        self.files = [os.fspath(f) for f in files]
        self.output_dir = os.fspath(output_dir)
        self.report = report
        self.output_ext = output_ext
        self.batch_size = batch_size
        self.logger = logging.getLogger(__name__)

    def run(self) -> list[VolumeResult]:
        """Segment every file; returns what was written (nothing to do without files)."""
        from .io import mask_output_path
        from .tumor_report import UNUSUAL_INPUT_WARNING, row_summary

        results = []
        for path in self.files:
            target = mask_output_path(path, self.output_dir, self.output_ext)
            results.append(segment_medical_file(self.predictor, path, target, self.batch_size))
            row, name = results[-1].row, os.path.basename(path)
            slices, note = results[-1].slice_report_path, results[-1].cut_note()
            cut = f" ({note})" if note else ""
            self.logger.info(
                f"{name}: {row_summary(row)}{cut} -> {target}" + (f", per slice: {slices}" if slices else "")
            )
            if row["input_unusual"]:
                self.logger.warning(f"{name} {UNUSUAL_INPUT_WARNING}")
        if results and self.report is not None:
            self.report.add_rows([r.row for r in results])
        return results
