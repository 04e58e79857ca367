"""Square context crops around a tumor at the image's native resolution: the cascade's geometry.

The cascade finds a tumor on the whole slice at low resolution, then outlines it again on a
square crop around it, taken from the slice at its own size and resized to the outline
network's input. More of the network's pixels then fall on the tumor. Training
(:class:`~scripts.transforms.RandTumorCropd`) and inference
(:class:`~scripts.transforms.RefineTumorOutlined`) take their crops here, so both see
the same geometry: a square ``context`` times the box's longer side, at least ``min_side``
pixels, zero outside the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["context_square", "crop_square", "paste_square"]


def context_square(
    bbox: Sequence[float], context: float, min_side: int = 48, shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[int, int, int]:
    """The square ``(x0, y0, side)`` around a box ``[x, y, w, h]``.

    Args:
        bbox: the tumor's box, COCO ``[x, y, width, height]`` in pixels.
        context: the square's side as a multiple of the box's longer side (> 0).
        min_side: the smallest side in pixels, so a tiny tumor keeps some surrounding tissue.
        shift: the square's centre moved by these fractions of its side ``(dx, dy)``.

    Raises:
        ValueError: ``context`` is not positive or the box is empty.
    """
    x, y, w, h = (float(v) for v in bbox)
    if not context > 0:
        raise ValueError(f"context: must be a positive multiple of the box side, got {context!r}")
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox: expected a non-empty [x, y, width, height], got {list(bbox)}")
    side = max(int(round(context * max(w, h))), int(min_side), 1)
    cx, cy = x + w / 2 + shift[0] * side, y + h / 2 + shift[1] * side
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


def crop_square(image: torch.Tensor, x0: int, y0: int, side: int, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Crop ``image`` (C, H, W) to the square at ``(x0, y0)`` of ``side`` pixels, zero outside, resized to ``size``.

    ``mode`` is ``"bilinear"`` (images; antialiased when shrinking) or ``"nearest"`` (labels).
    """
    img = torch.as_tensor(image)
    _, height, width = img.shape
    out = img.new_zeros((img.shape[0], side, side))
    xs, ys, xe, ye = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    if xe > xs and ye > ys:
        out[:, ys - y0 : ye - y0, xs - x0 : xe - x0] = img[:, ys:ye, xs:xe]
    if side == size:
        return out
    if mode == "nearest":
        return F.interpolate(out[None].float(), size=(size, size), mode="nearest-exact")[0].to(out.dtype)
    return F.interpolate(
        out[None].float(), size=(size, size), mode="bilinear", align_corners=False, antialias=side > size
    )[0]


def paste_square(target: np.ndarray, patch: torch.Tensor, x0: int, y0: int, side: int) -> np.ndarray:
    """Resize a (1, s, s) ``patch`` to the square ``(x0, y0, side)``; keep per pixel the larger of it and ``target``.

    The inverse of :func:`crop_square` for a probability map: the part of the square outside
    ``target`` (H, W) is dropped. Taking the maximum lets overlapping crops each keep their
    tumor. Returns ``target``, changed in place.
    """
    p = torch.as_tensor(patch, dtype=torch.float32)
    if p.shape[-1] != side:
        p = F.interpolate(p[None], size=(side, side), mode="bilinear", align_corners=False)[0]
    height, width = target.shape
    xs, ys, xe, ye = max(x0, 0), max(y0, 0), min(x0 + side, width), min(y0 + side, height)
    if xe > xs and ye > ys:
        region = p[0, ys - y0 : ye - y0, xs - x0 : xe - x0].numpy()
        np.maximum(target[ys:ye, xs:xe], region, out=target[ys:ye, xs:xe])
    return target
