"""Inferers: the network run on a plain tensor (no metadata bookkeeping), and test-time flip averaging."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer

__all__ = ["FlipAveragingInferer", "PlainTensorInferer"]


class PlainTensorInferer(SimpleInferer):
    """MONAI's ``SimpleInferer``, run on the input's plain tensor.

    On a ``MetaTensor`` every operation of the network goes through MONAI's ``__torch_function__``,
    which carries the metadata over to each intermediate result: about a fifth of a 256x256 U-Net
    forward pass on CPU. The network's output needs none of it: ``Invertd`` takes the geometry
    from the input image's own key, and the image keeps its metadata.
    """

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        plain = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        return super().__call__(plain, network, *args, **kwargs)


class FlipAveragingInferer(Inferer):
    """Run the network on the input and on its flips along ``flip_dims``, and average the scores.

    A brain slice is as much a brain slice mirrored left-right, so the network's disagreement
    with itself across a flip is noise; averaging removes some of it (specks, ragged edges) at
    the cost of one more forward pass per flip. Each flipped output is flipped back before
    averaging. Scores are averaged as they come out of the network (logits), which is what
    the bundle's ``Activationsd`` then turns into probabilities.

    Args:
        flip_dims: each entry is a tuple of spatial dims (counted in the (B, C, H, W) input, so
            2 is rows, 3 is columns) to flip together; ``[[3]]`` adds the left-right mirror.
    """

    def __init__(self, flip_dims: Sequence[Sequence[int]] = ((3,),)) -> None:
        super().__init__()
        self.flip_dims = [tuple(int(d) for d in dims) for dims in flip_dims]
        for dims in self.flip_dims:
            if not dims or any(d < 2 for d in dims):
                raise ValueError(f"flip_dims: each entry must name spatial dims (>= 2), got {dims}")

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        total = network(inputs, *args, **kwargs)
        for dims in self.flip_dims:
            total = total + torch.flip(network(torch.flip(inputs, dims), *args, **kwargs), dims)
        return total / (1 + len(self.flip_dims))
