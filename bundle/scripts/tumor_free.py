"""Synthetic tumor-free slices: a tumor's box refilled with healthy tissue from the same slice.

The dataset has a tumor on every slice, so a network trained on it alone never learns that a
slice can be empty. :func:`remove_tumor` makes tumor-free slices out of tumor slices: the box
(widened by a margin, since some boxes are tight) is refilled from the mirror image of the
opposite hemisphere, the brain being roughly left-right symmetric. Where the mirrored region
would itself copy the box (a tumor on the midline, e.g. pituitary), the slice becomes the
largest square crop beside the box instead; where neither works, the slice is left alone and
reported as not converted. The refill is feathered, so that no seam marks the synthetic slices
apart from real ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "remove_tumor",
    "tumor_free_slice_indices",
    "tumor_source_indices",
    "window_volume",
    "write_split_annotations",
    "write_tumor_free_split",
    "write_volume_tumor_free_split",
]


def _foreground(grey: np.ndarray) -> np.ndarray:
    """The head's pixels (Otsu threshold), all False for a constant image."""
    from skimage.filters import threshold_otsu

    finite = np.nan_to_num(grey.astype(np.float32))
    if float(finite.max()) == float(finite.min()):
        return np.zeros(grey.shape, bool)
    return finite > threshold_otsu(finite)


def _mirror(foreground: np.ndarray, axis: int) -> tuple[np.ndarray, float]:
    """Source index along ``axis`` for a mirror about the head's centre, and how symmetric the slice is.

    The symmetry is the overlap (IoU) of the head's outline with its mirror: axial slices are
    symmetric about the head's left-right midline, which lies across the image or along it
    depending on how the slice was stored; pixel correlation is too noisy to tell.
    """
    n = foreground.shape[axis]
    idx = np.arange(n)
    coords = np.nonzero(foreground)[axis]
    centre = float(coords.mean()) if coords.size else (n - 1) / 2.0
    src = np.rint(2.0 * centre - idx).astype(np.int64)
    head = ndimage.binary_fill_holes(foreground)
    mirrored = np.take(head, np.clip(src, 0, n - 1), axis=axis)
    union = int((head | mirrored).sum())
    return src, (int((head & mirrored).sum()) / union if union else 0.0)


def tumor_source_indices(
    region: np.ndarray, grey: np.ndarray, avoid: np.ndarray | None = None, max_asymmetry: float = 0.05
) -> tuple[np.ndarray, np.ndarray] | None:
    """Where to take healthy tissue for ``region``: ``(rows, cols)`` source index maps, or None.

    Candidates: the mirror about the head's midline across the image and along it, the more
    symmetric first, the other only if its symmetry is within ``max_asymmetry`` of the best
    (an axial slice mirrored front to back would paste the face into the brain). The first
    whose source pixels for ``region`` lie inside the image, outside ``avoid`` and mostly on
    the head wins. Shifted copies of nearby tissue were tried and dropped: beside a large box
    they paste skull base or face into the brain.

    Args:
        region: (H, W) bool, the pixels to refill.
        grey: (H, W) the slice's intensity, to find the head and its midline.
        avoid: (H, W) bool, pixels no source may come from (the tumor boxes); default ``region``.
        max_asymmetry: how much less symmetric (head-outline IoU) the second mirror may be.
    """
    height, width = region.shape
    rows_in, cols_in = np.nonzero(region)
    if rows_in.size == 0:
        return None
    avoid = region if avoid is None else avoid
    foreground = _foreground(grey)
    row_idx, col_idx = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    mirrors = []
    for axis in (0, 1):
        src, symmetry = _mirror(foreground, axis)
        if axis == 0:
            mirrors.append((symmetry, (np.broadcast_to(src[:, None], region.shape), col_idx)))
        else:
            mirrors.append((symmetry, (row_idx, np.broadcast_to(src[None, :], region.shape))))
    best = max(symmetry for symmetry, _ in mirrors)
    # the other mirror only when the slice is about as symmetric that way (not a face into the brain)
    candidates = [m for symmetry, m in sorted(mirrors, key=lambda m: -m[0]) if symmetry >= best - max_asymmetry]
    head_fraction = float(foreground[region].mean())
    for src_rows, src_cols in candidates:
        r, c = src_rows[region], src_cols[region]
        if r.min() < 0 or c.min() < 0 or r.max() >= height or c.max() >= width:
            continue
        if avoid[r, c].any():
            continue
        if float(foreground[r, c].mean()) < 0.75 * head_fraction:
            continue  # mostly air or background: a dark patch, not tissue
        return np.clip(src_rows, 0, height - 1), np.clip(src_cols, 0, width - 1)
    return None


def remove_tumor(
    image: np.ndarray,
    boxes: np.ndarray,
    margin: float = 0.1,
    feather: float = 0.5,
    grey_channel: int = 0,
    min_crop: float = 0.5,
) -> np.ndarray | None:
    """A tumor-free version of a slice: each tumor box refilled with healthy tissue.

    Where no mirror clears the boxes (most often a tumor on the midline), the slice becomes the
    largest square crop that avoids the boxes, at least ``min_crop`` of the image's side,
    zoomed back to the image's size: a closer view of healthy tissue of the same slice.

    Args:
        image: (C, H, W) channel-first slice, any intensity range.
        boxes: (H, W) mask of the tumor boxes (nonzero inside any box).
        margin: widen the refilled region by this fraction of the box's size on each side.
        feather: the width of the blend at the region's edge, as a fraction of the margin
            (Gaussian sigma); the box itself is always fully replaced.
        grey_channel: the channel used to find the brain.
        min_crop: the smallest crop side accepted, as a fraction of the image's shorter side;
            1 switches the crop off.

    Returns:
        the tumor-free (C, H, W) float32 image, or None when neither a mirror nor a crop clears
        the boxes (the slice cannot be made tumor-free this way) or there is no box.

    Raises:
        ValueError: shapes that do not fit, or ``margin``/``feather`` out of range.
    """
    image = np.asarray(image)
    boxes = np.asarray(boxes) != 0
    if image.ndim != 3 or boxes.shape != image.shape[1:]:
        raise ValueError(f"expected a (C, H, W) image and an (H, W) box mask, got {image.shape} and {boxes.shape}")
    if not 0.0 <= margin <= 1.0 or not 0.0 <= feather <= 2.0:
        raise ValueError(f"margin must be in [0, 1] and feather in [0, 2], got {margin} and {feather}")
    if not boxes.any():
        return None
    rows, cols = np.nonzero(boxes)
    size = max(int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))
    pad = max(1, int(round(margin * size)))
    region = ndimage.binary_dilation(boxes, structure=np.ones((3, 3), bool), iterations=pad)
    source = tumor_source_indices(region, image[grey_channel].astype(np.float32), avoid=boxes)
    if source is None:
        return _crop_away(image, region, min_crop)
    src_rows, src_cols = source
    alpha = ndimage.gaussian_filter(region.astype(np.float32), sigma=max(feather * pad, 1e-3))
    alpha[boxes] = 1.0
    alpha = np.where(region, np.maximum(alpha, _interior(region, pad)), alpha)
    filled = image[:, src_rows, src_cols].astype(np.float32)
    out = image.astype(np.float32) * (1.0 - alpha) + filled * alpha
    return out


def _crop_away(image: np.ndarray, region: np.ndarray, min_crop: float) -> np.ndarray | None:
    """The largest square beside ``region`` (above, below, left or right of it), zoomed to the image's size."""
    height, width = region.shape
    rows, cols = np.nonzero(region)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    # (side, row0, col0) of the square in each free band, centred across the band
    bands = [
        (min(top, width), 0, (width - min(top, width)) // 2),
        (min(height - bottom, width), bottom, (width - min(height - bottom, width)) // 2),
        (min(left, height), (height - min(left, height)) // 2, 0),
        (min(width - right, height), (height - min(width - right, height)) // 2, right),
    ]
    side, r0, c0 = max(bands, key=lambda b: b[0])
    if side < max(1, min_crop * min(height, width)):
        return None
    crop = image[:, r0 : r0 + side, c0 : c0 + side].astype(np.float32)
    zoom = (1.0, height / side, width / side)
    return ndimage.zoom(crop, zoom, order=1, grid_mode=True, mode="nearest")[:, :height, :width]


def _interior(region: np.ndarray, pad: int) -> np.ndarray:
    """1 on the region shrunk by half the margin (fully replaced), 0 elsewhere."""
    inner = ndimage.binary_erosion(region, structure=np.ones((3, 3), bool), iterations=max(1, pad // 2))
    return inner.astype(np.float32)


def write_tumor_free_split(
    split_dir: str | os.PathLike, output_dir: str | os.PathLike, category_map: Mapping[str | int, int] | None = None
) -> dict[str, Any]:
    """Make a COCO split of synthetic tumor-free slices from a tumor split, for measuring false tumors.

    Every image whose tumor :func:`remove_tumor` can remove is written as a grey PNG
    ``<image stem>.png`` into ``output_dir``, with an ``_annotations.coco.json`` listing the
    images and no annotation (so ``brainseg evaluate`` counts any predicted component as a
    false tumor). Images it cannot convert are listed in the returned summary, not written.
    Every file is written atomically; ``output_dir`` may neither lie in the source split nor hold it
    (:func:`~scripts.io.check_output_dir`).

    Args:
        split_dir: the tumor split (images and ``_annotations.coco.json``).
        output_dir: the new split's folder (created).
        category_map: as in :func:`~scripts.coco.resolve_category_map`.

    Returns:
        ``{"n_source": N, "n_written": K, "skipped": [file names]}``.

    Raises:
        ValueError: ``output_dir`` lies in the source split or holds it.
        CocoDataError: the source split has errors.
    """
    from PIL import Image

    from .coco import coco_to_datalist
    from .io import atomic_output, check_output_dir, image_stem, open_image
    from .metrics.detection import box_masks

    check_output_dir(output_dir, {"the source split": split_dir})
    src, out = Path(split_dir).resolve(), Path(output_dir).resolve()
    records = coco_to_datalist(src, category_map)
    out.mkdir(parents=True, exist_ok=True)
    images, skipped = [], []
    for record in records:
        label = record["label"]
        height, width = int(label["height"]), int(label["width"])
        boxes = np.zeros((height, width), dtype=bool)
        for box in box_masks([ann["bbox"] for ann in label["annotations"]], height, width):
            boxes |= box
        with open_image(record["image"]) as im:  # as annotated: turned by its EXIF orientation, like every reader
            grey = np.asarray(im.convert("F"), dtype=np.float32)
        tumor_free = remove_tumor(grey[None], boxes)
        name = f"{image_stem(record['image'])}.png"
        if tumor_free is None:
            skipped.append(os.path.basename(record["image"]))
            continue
        with atomic_output(out / name) as tmp:
            Image.fromarray(np.clip(np.rint(tumor_free[0]), 0, 255).astype(np.uint8), mode="L").save(tmp, format="PNG")
        images.append({"id": len(images) + 1, "file_name": name, "height": height, "width": width})
    write_split_annotations(out, images, f"synthetic tumor-free slices made from {src.name} by scripts.tumor_free")
    return {"n_source": len(records), "n_written": len(images), "skipped": skipped}


def write_split_annotations(
    out: Path, images: list[dict[str, Any]], description: str, annotations: Sequence[Mapping[str, Any]] = ()
) -> None:
    """The ``_annotations.coco.json`` of a written split (category 1 "Tumor"), written atomically."""
    from .coco import ANNOTATION_FILE
    from .io import atomic_output

    coco = {
        "info": {"description": description},
        "images": images,
        "annotations": list(annotations),
        "categories": [{"id": 1, "name": "Tumor", "supercategory": "none"}],
    }
    with atomic_output(out / ANNOTATION_FILE) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(coco, f, indent=1)


def window_volume(volume: np.ndarray) -> np.ndarray:
    """A volume as 8-bit grey, windowed to its 0.5-99.5 percentiles (the window every written volume slice gets)."""
    low, high = np.percentile(volume, [0.5, 99.5])
    scale = 255.0 / max(float(high - low), 1e-6)
    return np.clip(np.rint((volume - low) * scale), 0, 255).astype(np.uint8)


def tumor_free_slice_indices(mask: np.ndarray, min_distance: int = 3) -> list[int]:
    """The slices of a ``(k, j, i)`` mask volume at least ``min_distance`` slices from every masked slice.

    A slice next to a masked one may still hold the edge of a tumor the mask missed; slices
    farther away are safely tumor-free. A volume without any masked slice gives all its slices.

    Raises:
        ValueError: ``mask`` is not 3D or ``min_distance`` is below 1.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise ValueError(f"expected a (k, j, i) mask volume, got shape {mask.shape}")
    if int(min_distance) < 1:
        raise ValueError(f"min_distance must be at least 1 slice, got {min_distance!r}")
    masked = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if masked.size == 0:
        return list(range(mask.shape[0]))
    return [k for k in range(mask.shape[0]) if int(np.abs(masked - k).min()) >= int(min_distance)]


def write_volume_tumor_free_split(
    cases: Sequence[tuple[str | os.PathLike, str | os.PathLike]], output_dir: str | os.PathLike, min_distance: int = 3
) -> dict[str, Any]:
    """A COCO split of the real tumor-free slices of volumes whose tumors are marked slice by slice.

    Each case is a volume and its tumor mask on the same grid (NIfTI, NRRD, MetaImage). The
    slices at least ``min_distance`` slices from every masked slice
    (:func:`tumor_free_slice_indices`) are written as 8-bit grey PNGs ``<case>_<k>.png``, in the
    order inference reads them (:func:`~scripts.io.read_medical_image`: rows, columns), windowed
    to the volume's 0.5-99.5 percentiles, with an ``_annotations.coco.json`` listing them and no
    annotation. The masks only choose slices: nothing of them is written. Every file is written
    atomically; ``output_dir`` may not hold a volume or mask, nor be one's folder
    (:func:`~scripts.io.check_output_dir`).

    Args:
        cases: ``(volume, mask)`` paths.
        output_dir: the new split's folder (created).
        min_distance: slices this close to a masked slice are left out.

    Returns:
        ``{"n_cases": N, "n_slices": S, "n_written": K, "per_case": {case: K_case}}``.

    Raises:
        ValueError: a mask that does not fit its volume, an unreadable file (named), or an ``output_dir``
            that holds what it reads.
    """
    from PIL import Image

    from .io import atomic_output, check_output_dir, image_stem, read_medical_image

    cases = [(os.fspath(v), os.fspath(m)) for v, m in cases]
    check_output_dir(output_dir, {"the volume": [v for v, _ in cases], "the mask": [m for _, m in cases]})
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    per_case: dict[str, int] = {}
    n_slices = 0
    for volume_path, mask_path in cases:
        volume, _ = read_medical_image(volume_path)
        mask, _ = read_medical_image(mask_path)
        if volume.ndim != 3 or mask.shape != volume.shape:
            raise ValueError(
                f"{mask_path}: mask of shape {mask.shape} does not fit its volume {volume_path} of shape {volume.shape}"
            )
        n_slices += volume.shape[0]
        grey_volume = window_volume(volume)
        case = image_stem(volume_path)
        keep = tumor_free_slice_indices(mask, min_distance)
        for k in keep:
            grey = grey_volume[k]
            name = f"{case}_{k:03d}.png"
            with atomic_output(out / name) as tmp:
                Image.fromarray(grey, mode="L").save(tmp, format="PNG")
            images.append({"id": len(images) + 1, "file_name": name, "height": grey.shape[0], "width": grey.shape[1]})
        per_case[case] = len(keep)
    write_split_annotations(
        out,
        images,
        f"real tumor-free slices (at least {min_distance} slices from any masked slice) of {len(cases)} volumes",
    )
    return {"n_cases": len(cases), "n_slices": n_slices, "n_written": len(images), "per_case": per_case}
