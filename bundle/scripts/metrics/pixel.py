"""Pixel overlap: Dice and IoU of a mask against a COCO mask or a true tumor outline (MONAI's metric functions)."""

from __future__ import annotations

import os

import numpy as np
import torch
from monai.metrics import compute_dice, compute_iou

from ..components import _as_binary, _check_same_shape


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    """(1, 2, H, W) float one-hot of a boolean mask: channel 0 background, 1 tumor."""
    fg = torch.from_numpy(np.ascontiguousarray(mask))
    return torch.stack([~fg, fg])[None].float()


def dice_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of the tumor class with MONAI's ``compute_dice`` and ``compute_iou``.

    Convention for empty masks (MONAI's ``ignore_empty=False``): both empty gives Dice 1.0 and
    IoU 1.0, a correct true negative on a tumor-free image; exactly one empty gives 0.0.

    Args:
        pred: predicted (H, W) mask, foreground > 0.
        gt: reference (H, W) mask, foreground > 0.

    Returns:
        ``(dice, iou)``.

    Raises:
        ValueError: a mask is not 2D or the shapes differ.
    """
    p, g = _as_binary(pred, "pred"), _as_binary(gt, "gt")
    _check_same_shape(p, g, "dice_iou")
    y_pred, y = _one_hot(p), _one_hot(g)
    dice = compute_dice(y_pred, y, include_background=False, ignore_empty=False)
    iou = compute_iou(y_pred, y, include_background=False, ignore_empty=False)
    return float(dice.item()), float(iou.item())


def load_outline(path: str | os.PathLike) -> np.ndarray:
    """A true-outline PNG (0/255) as a boolean (H, W) mask, read as every 2D image is (:func:`scripts.io.open_image`).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming the file: a symbolic link (an outline folder holds its own files: a link may
            point anywhere, ``/dev/zero`` or another user's file), not a regular file, or not a readable
            single-page image.
    """
    from ..io import open_image

    p = os.fspath(path)
    if os.path.islink(p):
        raise ValueError(f"{p}: outline is a symbolic link: refused; copy the outline file itself into the folder")
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: outline mask not found")
    if not os.path.isfile(p):
        raise ValueError(f"{p}: outline is not a regular file")
    try:
        im = open_image(p)  # as every image is read: checked, decoded, turned as shown (EXIF)
    except ValueError as e:  # "<p>: image file is unreadable or truncated (...)", "...has 2 frames..."
        reason = str(e).removeprefix(f"{p}: ")
        reason = "outline mask" + reason[len("image file") :] if reason.startswith("image file") else reason
        raise ValueError(f"{p}: {reason}") from None
    with im:
        return np.asarray(im.convert("L")) > 0


def outline_dice(pred: np.ndarray, outline: np.ndarray | str | os.PathLike) -> float:
    """Dice of a prediction against a true tumor outline.

    Args:
        pred: predicted (H, W) mask, foreground > 0.
        outline: the true mask as an array or a PNG path (0/255, foreground > 0).

    Returns:
        The Dice, with the empty/empty convention of :func:`dice_iou`.

    Raises:
        FileNotFoundError: no file at the ``outline`` path.
        ValueError: the shapes differ.
    """
    if not isinstance(outline, (str, os.PathLike)):
        return dice_iou(pred, outline)[0]
    truth = load_outline(outline)
    if truth.shape != np.shape(pred):
        raise ValueError(f"{os.fspath(outline)}: outline is {truth.shape}, the prediction {np.shape(pred)}")
    return dice_iou(pred, truth)[0]
