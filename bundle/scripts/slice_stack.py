"""One image file of any supported format as a stack of slices: read, segment, write back.

The stages a MONAI Label server runs on the bundle (``configs/monailabel.json``, layered on
``inference.json``): a 2D JPEG/PNG slice, or a NIfTI/NRRD/MetaImage/DICOM image or volume, is read
into a ``(k, j, i)`` slice stack with its geometry (:class:`LoadSliceStackd`), segmented by the
bundle's one slice loop (:class:`SliceStackInferer`, :func:`~scripts.volumes.predict_volume` with
the ``slice_predictor`` of ``inference.json``), given back the input's own dimensionality
(:class:`SliceStackToInputd`) and written with the input's geometry (:func:`write_slice_stack_mask`).

Geometry: a medical image's mask keeps its spacing, origin and direction (ITK reads and writes
both). A JPEG/PNG has none: its mask is written on the same pixel grid, which ITK and SimpleITK
read with unit spacing, zero origin and identity direction, as they read the image itself. A
volume is cut into its axial slices as its direction tells them, as ``monai.bundle run`` cuts it
(:func:`~scripts.volumes.axial_slicing`: along K for a volume acquired axially).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .io import (
    image_direction,
    image_spacing,
    is_medical_image,
    read_grey,
    read_medical_image,
    write_mask,
    write_medical_mask,
)
from .square_pixels import plane_spacing, volume_spacing
from .tumor_report import slice_rows
from .verdict import POSSIBLE_TUMOR_LABEL, TUMOR_LABEL
from .volumes import predict_volume, slice_plane, slicing

__all__ = [
    "MASK_SUFFIXES",
    "LoadSliceStackd",
    "SliceStackInferer",
    "SliceStackToInputd",
    "mask_suffix",
    "read_slice_stack",
    "write_slice_stack_mask",
]

#: Mask formats: ITK writes the medical ones (with the input's geometry); PNG is for a 2D input only.
MASK_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha", ".png")


def read_slice_stack(path: str | os.PathLike) -> tuple[np.ndarray, Any | None, int]:
    """Read an image as the slice loop takes it.

    Args:
        path: a JPEG/PNG (read like ``inference.json``'s ``load_image``, then made grey), or a
            NIfTI/NRRD/MetaImage/DICOM file or DICOM series folder (read with ITK).

    Returns:
        ``(stack, reference, ndim)``: the ``(k, j, i)`` float32 slices, the ITK image whose
        geometry the mask is written with (``None`` for a JPEG/PNG), and the input's own
        dimensionality (2 or 3).

    Raises:
        ValueError: the file cannot be read or is not a 2D/3D image (the message names it).
    """
    if is_medical_image(path):
        array, reference = read_medical_image(path)
        return (array[None] if array.ndim == 2 else array), reference, array.ndim
    return read_grey(path)[None], None, 2


def mask_suffix(path: str | os.PathLike) -> str:
    """The mask format of ``path`` (one of :data:`MASK_SUFFIXES`).

    Raises:
        ValueError: another suffix (the message lists the ones that work).
    """
    low = os.fspath(path).lower()
    for suffix in MASK_SUFFIXES:
        if low.endswith(suffix):
            return suffix
    raise ValueError(f"{os.fspath(path)}: unsupported mask format (use {', '.join(MASK_SUFFIXES)})")


def write_slice_stack_mask(mask: np.ndarray, reference: Any | None, path: str | os.PathLike) -> str:
    """Write the label mask of :func:`read_slice_stack`'s input, atomically, with the input's geometry.

    Args:
        mask: label values, in the input's own dimensionality (see :class:`SliceStackToInputd`).
        reference: the ITK image of a medical input, ``None`` for a JPEG/PNG.
        path: ``.nrrd``, ``.nii.gz``, ``.nii``, ``.mha``, or ``.png`` (a 2D mask only).

    Raises:
        ValueError: an unsupported suffix, or a 3D mask asked for as PNG.
    """
    suffix = mask_suffix(path)
    mask = np.asarray(mask, dtype=np.uint8)
    if suffix == ".png":
        if mask.ndim != 2:
            raise ValueError(f"{os.fspath(path)}: a {mask.ndim}D mask cannot be a PNG (use .nrrd or .nii.gz)")
        return write_mask(mask, path, scale=1)  # label values, as the other formats hold them
    if reference is None:
        import itk

        reference = itk.image_from_array(np.zeros(mask.shape, dtype=np.uint8))  # the pixel grid of a JPEG/PNG
    return write_medical_mask(mask, reference, path)


class LoadSliceStackd(MapTransform):
    """Replace an image path by its ``(k, j, i)`` slice stack (:func:`read_slice_stack`).

    Adds ``<key>_geometry`` (the ITK reference, or ``None``), ``<key>_ndim`` (2 or 3) and
    ``<key>_direction`` (a volume's 3x3 direction matrix, :func:`~scripts.io.image_direction`; ``None``
    for a 2D input), which :meth:`SliceStackInferer.segment` cuts the volume by, and ``<key>_spacing``
    (a medical image's voxel spacing along I, J and K, :func:`~scripts.io.image_spacing`; ``None`` for a
    JPEG or PNG), by which it gives slices square pixels.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key], d[f"{key}_geometry"], d[f"{key}_ndim"] = read_slice_stack(d[key])
            geometry = d[f"{key}_geometry"]
            d[f"{key}_direction"] = (
                image_direction(geometry) if geometry is not None and d[f"{key}_ndim"] == 3 else None
            )
            d[f"{key}_spacing"] = image_spacing(geometry) if geometry is not None else None
        return d


class SliceStackInferer:
    """Segment a slice stack with the bundle's slice loop.

    ``inferer(stack) -> (k, j, i)`` uint8 labels (1 tumor, 2 possible); :meth:`segment` also gives the
    per-slice report.

    Args:
        predictor: the ``slice_predictor`` of ``inference.json`` (same network, transforms and
            post-processing as ``monai.bundle run``).
        batch_size: slices per network call.
    """

    def __init__(self, predictor: Any, batch_size: int = 8) -> None:
        self.predictor = predictor
        self.batch_size = int(batch_size)

    def __call__(
        self, stack: np.ndarray, slice_index: Any = None, direction: Any = None, spacing: Any = None
    ) -> np.ndarray:
        """The mask of every slice, or of slice ``slice_index`` only, the others left empty (:meth:`segment`)."""
        return self.segment(stack, slice_index, direction, spacing)[0]

    def segment(
        self, stack: np.ndarray, slice_index: Any = None, direction: Any = None, spacing: Any = None
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The mask of every slice, or of slice ``slice_index`` only, and the per-slice report of the slices
        segmented (:func:`~scripts.tumor_report.slice_rows`: the rows ``monai.bundle run`` writes to
        ``<name>_slices.csv``, each with its slice number in the stack).

        Args:
            stack: the ``(k, j, i)`` slices (:class:`LoadSliceStackd`).
            slice_index: one slice to segment: its index along the axis the volume is cut along.
            direction: the volume's direction matrix (``<key>_direction`` of :class:`LoadSliceStackd`):
                a volume is cut into its axial slices (:func:`~scripts.volumes.axial_slicing`); None: along K.
            spacing: the voxel spacing along I, J and K (``<key>_spacing``): slices whose pixels it makes
                rectangular are segmented with square ones (:mod:`scripts.square_pixels`); None: as they lie.

        Raises:
            ValueError: ``slice_index`` is not the index of one of the stack's slices, or ``spacing`` is not
                three positive numbers.
        """
        reports: list[dict[str, Any]] = []
        if slice_index is None:
            # with slice reports: the label map (tumor, possible tumor) decided with neighbouring slices
            mask, _ = predict_volume(
                stack,
                self.predictor,
                batch_size=self.batch_size,
                slice_reports=reports,
                direction=direction,
                spacing=spacing,
            )
            return mask, slice_rows(reports)
        ijk_axis, transpose = slicing(np.shape(stack), None, direction)
        n = np.shape(stack)[2 - ijk_axis]
        if isinstance(slice_index, bool) or not isinstance(slice_index, (int, np.integer)):
            raise ValueError(f"slice_index: expected a slice number, got {slice_index!r}")
        if not 0 <= slice_index < n:
            raise ValueError(f"slice_index: {slice_index} is not a slice of this image (0 to {n - 1})")
        # the one plane as a one-slice volume: its (row, column) spacing becomes that volume's J and I
        rows, columns = (1.0, 1.0) if spacing is None else plane_spacing(volume_spacing(spacing), ijk_axis, transpose)
        one, _ = predict_volume(
            slice_plane(stack, slice_index, ijk_axis, transpose)[None],
            self.predictor,
            axis=2,
            slice_reports=reports,
            spacing=(columns, rows, 1.0),
        )
        mask = np.zeros(np.shape(stack)[:3], dtype=np.uint8)
        np.moveaxis(mask, 2 - ijk_axis, 0)[slice_index] = slice_plane(one, 0, 2, transpose)  # a view: in place
        return mask, [{**row, "slice": int(slice_index)} for row in slice_rows(reports)]


class SliceStackToInputd(MapTransform):
    """Give a stack's label map the input's dimensionality (a 2D input's one slice as a 2D mask) and label values.

    Args:
        keys: the mask keys (label maps: 1 tumor, 2 possible tumor, :mod:`scripts.verdict`).
        ndim_key: where :class:`LoadSliceStackd` put the input's dimensionality.
        label: the value of a tumor pixel (the ``channel_def`` index of ``metadata.json``).
        possible_label: the value of a possible-tumor pixel.
    """

    def __init__(
        self, keys: KeysCollection, ndim_key: str = "image_ndim", label: int = 1, possible_label: int = 2
    ) -> None:
        super().__init__(keys)
        self.ndim_key = ndim_key
        self.label = int(label)
        self.possible_label = int(possible_label)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            labels = np.asarray(d[key])
            mask = np.zeros(labels.shape, dtype=np.uint8)
            mask[labels == TUMOR_LABEL] = self.label
            mask[labels == POSSIBLE_TUMOR_LABEL] = self.possible_label
            d[key] = mask[0] if d[self.ndim_key] == 2 else mask
        return d
