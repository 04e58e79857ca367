"""Slices whose pixels are not square, given to the network with square ones and their results turned back.

The network learnt heads of their true proportions. A volume acquired in thick coronal or sagittal
slices (a post-contrast T1 often is: 0.5 mm in the plane, 3-6 mm apart) is cut into its axial
slices (:func:`~scripts.volumes.axial_slicing`), and their pixels are then as long as the slices
are apart: a 512 x 24 slice of a head squeezed six times. Some scanners also store rectangular
pixels in the acquired plane. :func:`resample_linear` interpolates the coarser axis of such a
plane to the finer one's spacing (linearly; the finer axis is never thinned), and
:func:`resample_nearest` takes the result back to the plane's own pixels (each pixel gets the
value at its centre), so masks keep the input's grid. ``benchmarks/thick_slices.py`` measures it.

Only numpy is imported here: the Slicer module's main process uses this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "MAX_SIDE",
    "SQUARE_TOLERANCE",
    "plane_spacing",
    "resample_linear",
    "resample_nearest",
    "scale_components",
    "square_shape",
    "volume_spacing",
]

#: Pixels whose sides differ by at most this share are square enough: they are left as they are.
SQUARE_TOLERANCE = 0.02
#: A plane's interpolated side is at most this long (or its own length, if longer): a spacing far
#: coarser than the other must not make a slice too large to segment.
MAX_SIDE = 2048


def volume_spacing(spacing: Any) -> tuple[float, float, float]:
    """Check and return a volume's voxel spacing, one positive finite number per IJK axis (I, J, K).

    Raises:
        ValueError: not three positive finite numbers (the message starts with ``spacing:``).
    """
    try:
        values = np.asarray(spacing, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"spacing: expected three numbers (I, J, K), got {spacing!r}") from None
    if values.shape != (3,) or not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(f"spacing: expected three positive finite numbers (I, J, K), got {values.tolist()}")
    return float(values[0]), float(values[1]), float(values[2])


def plane_spacing(spacing: Sequence[float], ijk_axis: int, transpose: bool = False) -> tuple[float, float]:
    """The ``(row, column)`` pixel spacing of a plane cut along IJK axis ``ijk_axis``
    (:func:`~scripts.volumes.slice_plane`, whose array is in ``(k, j, i)`` order), transposed or not."""
    rows, columns = sorted((a for a in range(3) if a != ijk_axis), reverse=True)
    pair = (float(spacing[rows]), float(spacing[columns]))
    return (pair[1], pair[0]) if transpose else pair


def square_shape(shape: Sequence[int], pixel: Sequence[float]) -> tuple[int, int]:
    """The ``(rows, columns)`` a plane of ``shape`` gets with square pixels of its finer spacing.

    ``shape`` itself when its ``pixel`` spacing ``(row, column)`` is square within :data:`SQUARE_TOLERANCE`;
    otherwise the coarser axis is lengthened by the ratio, to at most :data:`MAX_SIDE` (or its own length).
    """
    rows, columns = int(shape[0]), int(shape[1])
    row_mm, column_mm = float(pixel[0]), float(pixel[1])
    ratio = max(row_mm, column_mm) / min(row_mm, column_mm)
    if ratio <= 1.0 + SQUARE_TOLERANCE:
        return rows, columns
    if row_mm > column_mm:
        return max(rows, min(MAX_SIDE, int(round(rows * ratio)))), columns
    return rows, max(columns, min(MAX_SIDE, int(round(columns * ratio))))


def _source_positions(n_in: int, n_out: int) -> np.ndarray:
    """Where the centres of ``n_out`` pixels spanning the same extent as ``n_in`` lie, in input pixel units."""
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def resample_linear(plane: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``plane`` ((H, W) or (H, W, C)) linearly interpolated to ``shape`` ((rows, columns), each at least the
    plane's own: :func:`square_shape`), as float32; the plane itself when the shape is its own."""
    arr = np.asarray(plane)
    out = arr
    for axis, n_out in enumerate((int(shape[0]), int(shape[1]))):
        n_in = out.shape[axis]
        if n_out == n_in:
            continue
        position = np.clip(_source_positions(n_in, n_out), 0.0, n_in - 1)
        low = np.floor(position).astype(np.intp)
        high = np.minimum(low + 1, n_in - 1)
        weight = (position - low).astype(np.float32)
        weight = weight.reshape((-1,) + (1,) * (out.ndim - axis - 1))
        lower = np.take(out, low, axis=axis).astype(np.float32)
        upper = np.take(out, high, axis=axis).astype(np.float32)
        out = lower + weight * (upper - lower)
    return out


def resample_nearest(result: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``result`` ((H, W...): labels, a mask or a probability) on a grid of ``shape`` spanning the same extent,
    each pixel the value at its centre, so labels stay labels: a result on the square-pixel grid back on the
    plane's own pixels, or a mask on the square-pixel grid of its image."""
    out = np.asarray(result)
    for axis, n_out in enumerate((int(shape[0]), int(shape[1]))):
        n_in = out.shape[axis]
        if n_out != n_in:
            centre = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp)
            out = np.take(out, np.minimum(centre, n_in - 1), axis=axis)
    return out


def scale_components(
    components: Sequence[Mapping[str, Any]], square: Sequence[int], shape: Sequence[int]
) -> list[dict[str, Any]]:
    """Components (``{"bbox": [x, y, w, h], "area", "confidence"}``) found on the ``square`` grid, in the
    pixels of the plane's own ``shape``: boxes and areas scaled, a component never smaller than a pixel; as they
    are where the two shapes are one."""
    if tuple(square) == tuple(shape):
        return list(components)
    row_scale = int(shape[0]) / int(square[0])
    column_scale = int(shape[1]) / int(square[1])
    scaled = []
    for component in components:
        c = dict(component)
        if c.get("bbox") is not None:
            x, y, w, h = (float(v) for v in c["bbox"])
            x0, y0 = int(np.floor(x * column_scale)), int(np.floor(y * row_scale))
            x1, y1 = int(np.ceil((x + w) * column_scale)), int(np.ceil((y + h) * row_scale))
            c["bbox"] = [x0, y0, max(1, x1 - x0), max(1, y1 - y0)]
        if c.get("area") is not None:
            c["area"] = max(1, int(round(float(c["area"]) * row_scale * column_scale)))
        scaled.append(c)
    return scaled
