"""A network made ready for inference: eval mode, batch norms folded, weights in channels-last order.

- In eval mode a batch norm is a fixed per-channel scale and shift, so it can be merged into the
  weights and bias of the convolution that feeds it (PyTorch's :func:`torch.nn.utils.fusion.fuse_conv_bn_eval`),
  leaving the same function with one pass less over every feature map.
- On a CPU, a 2D convolution whose weights are in channels-last order takes oneDNN's faster kernels, and
  its feature maps stay in that order through the network (a one-channel slice already is). A network
  on a GPU keeps its layout.

On 2 CPU threads the two together take the bundle's 256 px U-Net to 0.77-0.85 of its time
(``network_prepared_ratio`` of ``benchmarks/cpu_speed.py``). The outputs agree with the unprepared
network's to float rounding (about 1e-5 in the logits), so a probability exactly at a threshold may
rarely land on the other side.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .config_values import switch

__all__ = ["fold_batch_norms", "prepare_for_inference"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: each batch norm and the spatial dimensions of the convolution whose statistics it can hold
_NORM_DIMS = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}


def _first_run(parent: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The ``(parent, name)`` of the module that runs first when ``parent``'s ``name`` runs, looking into nested
    :class:`~torch.nn.Sequential` ones.

    MONAI's ``Convolution`` is ``Sequential(conv, ADN)`` and its ``ADN`` is ``Sequential(N, D, A)`` in the
    default order: the norm that follows a convolution sits at the head of the next Sequential.
    """
    module = parent._modules[name]
    while isinstance(module, nn.Sequential) and len(module) > 0:
        parent, name = module, next(iter(module._modules))
        module = module[0]
    return parent, name


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, _CONVS)
        and type(norm) in _NORM_DIMS
        and norm.track_running_stats
        and norm.running_mean is not None
        and conv.out_channels == norm.num_features
        and conv.weight.dim() - 2 == _NORM_DIMS[type(norm)]  # Conv2d with BatchNorm2d, and so on
    )


def fold_batch_norms(network: nn.Module) -> int:
    """Fold each batch norm that directly follows a convolution inside a Sequential into that convolution.

    The network must be in eval mode (its norms use their running statistics). The folded norm is
    replaced by :class:`~torch.nn.Identity`; a norm with no convolution right before it stays.

    Returns:
        how many norms were folded.

    Raises:
        ValueError: the network is in training mode.
    """
    if network.training:
        raise ValueError("network: folding batch norms needs eval mode (call .eval() first)")
    folded = 0
    for sequential in [m for m in network.modules() if isinstance(m, nn.Sequential)]:
        names = list(sequential._modules)
        for name, after in zip(names, names[1:]):
            conv = sequential._modules[name]
            parent, norm_name = _first_run(sequential, after)
            norm = parent._modules[norm_name]
            if not _foldable(conv, norm):
                continue
            sequential._modules[name] = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, _TRANSPOSED))
            parent._modules[norm_name] = nn.Identity()
            folded += 1
    return folded


def prepare_for_inference(network: nn.Module, optimize: bool = True) -> nn.Module:
    """The network in eval mode; with ``optimize``, a copy with its batch norms folded (:func:`fold_batch_norms`)
    and, on a CPU, its 2D convolutions' weights in channels-last order.

    Args:
        network: a network with its weights loaded. It is left as it is when ``optimize`` is on: the copy has no
            batch norm parameters, so it cannot load or save the bundle's weights files.
        optimize: fold and reorder; off, the network itself is returned in eval mode.

    Raises:
        ValueError: ``optimize`` is not a bool.
    """
    optimize = switch(optimize, "optimize_networks")  # a command line's "false" is text: bool() would say True
    network.eval()
    if not optimize:
        return network
    inference = copy.deepcopy(network)
    fold_batch_norms(inference)
    on_cpu = all(p.device.type == "cpu" for p in inference.parameters())
    if on_cpu and any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in inference.modules()):
        inference = inference.to(memory_format=torch.channels_last)  # measured on CPUs only: GPUs keep their layout
    return inference
