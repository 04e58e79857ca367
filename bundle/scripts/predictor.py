"""The bundle's in-process inference: load the bundle once, turn images (files, arrays, slices) into masks.

:class:`SlicePredictor` runs the network and the config's transforms on 2D images;
:class:`BundlePredictor` builds one from a bundle folder. It reads the bundle's
``configs/inference.json`` (network, image transforms, probability and mask transforms)
instead of restating sizes or normalisation,
so ``brainseg segment``, the 3D Slicer module and ``python -m monai.bundle run`` give the
same pixels. It needs nothing but the bundle and the packages its metadata declares.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from .handlers import load_weights
from .inference_network import prepare_for_inference
from .verdict import label_map, verdict_of

__all__ = ["BundlePredictor", "SlicePredictor", "TumorPrediction"]

INFERENCE_CONFIG = os.path.join("configs", "inference.json")
METADATA = os.path.join("configs", "metadata.json")
BUNDLE_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class TumorPrediction:
    """One image's prediction with what the post-processing decided about it.

    Args:
        mask: (H, W) uint8 0/1 at the input's size.
        probability: (H, W) float32 tumor probability.
        tumor_score: the highest component confidence (0 when nothing passed the threshold).
        components: the kept components, ``{"bbox", "area", "confidence"}`` each; empty when no
            tumor was found.
        input_unusual: the input looks unlike the training slices
            (:class:`~scripts.input_check.InputLikenessd`): the mask may mean nothing.
        input_distance: how far its intensity histogram lies from the training slices'.
        input_other_sequence: the probability that it is another MRI sequence than T1 contrast
            (:class:`~scripts.sequence_check.OtherSequenced`); None for bundles without the sequence check.
        possible_mask: (H, W) uint8 0/1, the possible tumors (candidates between the bundle's
            ``possible_min_confidence`` and ``min_confidence``); None for bundles without them.
        possible_components: the possible tumors, as ``components``.
    """

    mask: np.ndarray
    probability: np.ndarray
    tumor_score: float
    components: list[dict[str, Any]] = field(default_factory=list)
    input_unusual: bool = False
    input_distance: float | None = None
    possible_mask: np.ndarray | None = None
    possible_components: list[dict[str, Any]] = field(default_factory=list)
    input_other_sequence: float | None = None

    @property
    def tumor_found(self) -> bool:
        """True when a component passed the bundle's operating point (``min_confidence``)."""
        return bool(self.components)

    @property
    def verdict(self) -> str:
        """ "tumor", "possible tumor" or "no tumor found" (:mod:`scripts.verdict`)."""
        return verdict_of(self.components, self.possible_components)

    @property
    def labels(self) -> np.ndarray:
        """The (H, W) uint8 label map: 1 tumor, 2 possible tumor (:func:`scripts.verdict.label_map`)."""
        return label_map(self.mask, self.possible_mask)


class SlicePredictor:
    """Segment 2D images (files, arrays, the slices of a volume) with a network and the bundle's transforms.

    Built from the inference config's ids, so the in-process front ends and ``monai.bundle run``
    share them: ``inference.json``'s ``slice_predictor`` gives it to
    :class:`~scripts.volumes.VolumeSegmentation`, and :class:`BundlePredictor` builds one from
    a bundle folder.

    Args:
        network: the loaded network (eval mode).
        image_transforms: the per-slice transforms (``slice_transforms``: grey, resize, scale).
        probability_transforms: softmax and the inverse of the resize.
        mask_transforms: probability to mask (and the cascade's outline network).
        inferer: calls the network (default: MONAI's ``SimpleInferer``).
        device: where the network runs.
        amp: autocast on CUDA.
        input_checks: the input likeness check (:class:`~scripts.input_check.InputLikenessd`).
        preprocessing: the file loader plus ``image_transforms``, for :meth:`predict_file`.
        volume_rule: how a volume's slices are decided with their neighbours
            (:class:`~scripts.verdict.NeighbourSupport`); :func:`~scripts.volumes.predict_volume` applies it.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        image_transforms: Sequence[Any] | Compose,
        probability_transforms: Sequence[Any] | Compose,
        mask_transforms: Sequence[Any] | Compose,
        inferer: Any = None,
        device: str | torch.device = "cpu",
        amp: bool = False,
        input_checks: Sequence[Any] | Compose = (),
        preprocessing: Sequence[Any] | Compose | None = None,
        volume_rule: Any = None,
    ) -> None:
        from monai.inferers import SimpleInferer

        self.network = network.eval()
        self.image_transforms = _compose(image_transforms)
        self.probability_transforms = _compose(probability_transforms)
        self.mask_transforms = _compose(mask_transforms)
        self.input_checks = _compose(input_checks)
        self.preprocessing = None if preprocessing is None else _compose(preprocessing)
        self.inferer = inferer if inferer is not None else SimpleInferer()
        self.device = torch.device(device)
        self.amp = bool(amp)
        self.volume_rule = volume_rule

    @property
    def name(self) -> str:
        """What a report names as the model."""
        return type(self.network).__name__

    @property
    def input_reference(self) -> dict[str, Any] | None:
        """The training slices' reference of the input check (:mod:`scripts.input_check`), None without one."""
        for transform in self.input_checks.transforms:
            reference = getattr(transform, "reference", None)
            if reference is not None:
                return reference
        return None

    @property
    def other_sequence_threshold(self) -> float | None:
        """The sequence check's threshold (:class:`~scripts.sequence_check.OtherSequenced`), None without one."""
        from .sequence_check import OtherSequenced

        for transform in self.input_checks.transforms:
            if isinstance(transform, OtherSequenced):
                return transform.threshold
        return None

    def predict_file(self, path: str | os.PathLike, with_probability: bool = False, details: bool = False):
        """Segment a JPEG/PNG file with the bundle's own loader.

        Returns:
            the (H, W) uint8 mask (0/1) at the file's size, and with ``with_probability`` also the
            (H, W) float32 tumor probability; with ``details`` a :class:`TumorPrediction` instead.
        """
        if self.preprocessing is None:
            raise ValueError("this predictor has no preprocessing (file loader): give it arrays")
        item = self.preprocessing({"image": os.fspath(path)})
        return self._predict_items([item], with_probability, details)[0]

    def predict_array(self, image: np.ndarray, with_probability: bool = False, details: bool = False):
        """Segment one 2D image given as an array: (H, W), or (H, W, C) with C in 1..4 (RGB(A) → grey).

        Returns:
            as :meth:`predict_file`.
        """
        return self.predict_arrays([image], with_probability, details=details)[0]

    def predict_arrays(
        self, images: Sequence[np.ndarray], with_probability: bool = False, batch_size: int = 8, details: bool = False
    ):
        """Segment several 2D images (e.g. the slices of a volume), ``batch_size`` at a time."""
        items = [self.image_transforms({"image": _as_channel_first(img)}) for img in images]
        results: list[Any] = []
        for start in range(0, len(items), batch_size):
            results.extend(self._predict_items(items[start : start + batch_size], with_probability, details))
        return results

    def _predict_items(self, items: list[dict], with_probability: bool, details: bool = False) -> list[Any]:
        batch = torch.stack([torch.as_tensor(it["image"]) for it in items]).to(self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.amp and self.device.type == "cuda"):
            logits = self.inferer(batch, self.network).float().cpu()
        out = []
        for it, pred in zip(items, logits):
            d = self.probability_transforms({**it, "pred": pred})
            prob = np.asarray(d["pred"][1], dtype=np.float32)
            d = self.mask_transforms(d)
            mask = np.asarray(d["pred"][0]).astype(np.uint8)
            if details:
                d = self.input_checks(d)  # only its callers read the flag
                possible = d.get("pred_possible")
                out.append(
                    TumorPrediction(
                        mask,
                        prob,
                        float(d["pred_tumor_score"]),
                        list(d["pred_components"]),
                        bool(d.get("image_unusual", False)),
                        d.get("image_distance"),
                        None if possible is None else np.asarray(possible[0]).astype(np.uint8),
                        list(d.get("pred_possible_components") or []),
                        d.get("image_other_sequence"),
                    )
                )
            else:
                out.append((mask, prob) if with_probability else mask)
        return out

    def predict_files(self, paths: Iterable[str | os.PathLike]):
        """Yield ``(path, mask)`` for each file, one at a time (constant memory)."""
        for path in paths:
            yield path, self.predict_file(path)


class BundlePredictor(SlicePredictor):
    """A :class:`SlicePredictor` from a bundle folder's ``configs/inference.json``.

    It reads the network, image transforms, probability and mask transforms from the config
    instead of restating sizes or normalisation, so ``brainseg segment``, the 3D Slicer module
    and ``python -m monai.bundle run`` give the same pixels.

    Args:
        bundle_dir: the bundle folder (default: the bundle this code belongs to).
        ckpt_path: weights to load (default: the config's ``ckpt_path``, ``models/model.pt``).
        device: ``"cpu"``, ``"cuda"``... (default: the config's ``device``).
        config_files: override JSON files layered on ``inference.json`` (as ``monai.bundle run``
            layers ``--config_file`` lists), e.g. the network of a non-default training run.
        overrides: config ids to override last, e.g. ``{"spatial_size": [128, 128]}``.

    Raises:
        FileNotFoundError: the bundle or its weights are missing.
        ValueError: the weights are unsafe or do not fit.
    """

    def __init__(
        self,
        bundle_dir: str | os.PathLike | None = None,
        ckpt_path: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        config_files: Sequence[str | os.PathLike] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        config_files = list(config_files or ())
        self.bundle_dir = os.path.abspath(os.fspath(bundle_dir or BUNDLE_ROOT))
        config_file = os.path.join(self.bundle_dir, INFERENCE_CONFIG)
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"{config_file}: not a bundle (no configs/inference.json)")
        for extra in config_files:
            if not os.path.isfile(extra):
                raise FileNotFoundError(f"{extra}: config file not found")
        parser = ConfigParser()
        parser.read_config([config_file, *map(os.fspath, config_files)])
        parser["bundle_root"] = self.bundle_dir
        for key, value in (overrides or {}).items():
            parser[key] = value
        if device is not None:
            parser["device"] = torch.device(device)  # an object: text never becomes a $ expression
        self.parser = parser
        if "bundle_scripts" in parser:
            parser.get_parsed_content("bundle_scripts")  # the bundle's root on sys.path before any _target_
        device = parser.get_parsed_content("device")
        self.ckpt_path = os.fspath(ckpt_path) if ckpt_path else parser.get_parsed_content("ckpt_path")
        if "network_def" in parser:  # the bare network: inference.json's "network" loads the config's weights
            network = parser.get_parsed_content("network_def").to(device)
        else:
            network = parser.get_parsed_content("network")
        load_weights(network, self.ckpt_path, device)
        # as inference.json's "network" does; bundles made before it have no optimize_networks id
        if "optimize_networks" in parser:
            network = prepare_for_inference(network, parser.get_parsed_content("optimize_networks"))
        # slice_transforms: image_transforms plus what inference keeps beside them (the full-size grey slice
        # for the cascade); bundles made before the cascade have image_transforms only
        slice_id = "slice_transforms" if "slice_transforms" in parser else "image_transforms"
        super().__init__(
            network,
            parser.get_parsed_content(slice_id),
            parser.get_parsed_content("probability_transforms"),
            parser.get_parsed_content("mask_transforms"),
            inferer=parser.get_parsed_content("inferer"),
            device=device,
            amp=bool(parser.get_parsed_content("use_amp")),
            # bundles made before the input check have no input_checks id
            input_checks=parser.get_parsed_content("input_checks") if "input_checks" in parser else (),
            preprocessing=parser.get_parsed_content("preprocessing"),
            # bundles made before the three-level verdict decide each slice alone
            volume_rule=parser.get_parsed_content("volume_rule") if "volume_rule" in parser else None,
        )
        meta_file = os.path.join(self.bundle_dir, METADATA)
        self.metadata: dict[str, Any] = (
            json.load(open(meta_file, encoding="utf-8")) if os.path.isfile(meta_file) else {}
        )

    @property
    def name(self) -> str:
        """The bundle's name and version from its metadata."""
        return (
            f"{self.metadata.get('name', os.path.basename(self.bundle_dir))} {self.metadata.get('version', '')}".strip()
        )


def _as_channel_first(image: np.ndarray) -> MetaTensor:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] <= 4:
        arr = np.moveaxis(arr, -1, 0)  # (H, W, C) -> (C, H, W)
    elif arr.ndim != 3 or arr.shape[0] > 4:
        raise ValueError(f"expected a 2D image (H, W) or (H, W, C), got array of shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("image contains NaN or infinite values")
    return MetaTensor(torch.from_numpy(np.array(arr, dtype=np.float32)))  # a writable copy: read-only input is fine


def _compose(transforms: Sequence[Any] | Compose) -> Compose:
    return transforms if isinstance(transforms, Compose) else Compose(list(transforms))
