"""The MONAI Label inference task that runs the brainseg-monai bundle.

Every stage comes from the bundle: ``configs/monailabel.json`` layered on ``configs/inference.json``
defines MONAI Label's ``pre_transforms`` (read a JPEG/PNG slice or a NIfTI/NRRD/MetaImage/DICOM
image with its geometry), the ``slice_stack_inferer`` (inference.json's ``slice_predictor`` through
the bundle's one slice loop, so the pixels are ``monai.bundle run``'s) and ``post_transforms``
(the input's dimensionality, the tumor's label value). This task only adds what belongs to the
server: the requested device, the result file (the bundle's ``write_slice_stack_mask``, in the
server's temporary folder, which MONAI Label removes once sent) and HTTP errors.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import sys
import tempfile
import threading
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from fastapi import HTTPException
from monai.bundle import ConfigParser
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

__all__ = ["BrainTumorSegmentation", "bundle_labels"]

logger = logging.getLogger(__name__)

#: The bundle's configs, in layering order.
CONFIG_FILES = ("inference.json", "monailabel.json")
#: The result format when a request names none: what the input's kind is usually kept in.
DEFAULT_EXTENSION = {2: ".png", 3: ".nrrd"}


def bundle_labels(metadata: Dict[str, Any]) -> Dict[str, int]:
    """``{label name: value}`` of the post-processed output in a bundle's ``metadata.json`` (no background).

    Raises:
        ValueError: the metadata names no output labels.
    """
    formats = metadata.get("network_data_format", {})
    outputs = formats.get("post_processed_outputs") or formats.get("outputs") or {}
    channels = next(iter(outputs.values()), {}).get("channel_def", {})
    labels = {name: int(value) for value, name in channels.items() if name.lower() != "background"}
    if not labels:
        raise ValueError("metadata.json: network_data_format names no output label besides background")
    return labels


def _is_upload(path: str) -> bool:
    """Whether ``path`` is a file MONAI Label saved from an upload (its temporary folder), not a datastore image."""
    return os.path.dirname(os.path.abspath(path)) == os.path.abspath(tempfile.gettempdir())


class BrainTumorSegmentation(BasicInferTask):
    """Segment a 2D slice, or a volume slice by slice, with the bundle; the mask keeps the input's geometry.

    Args:
        bundle_dir: the bundle folder (``configs/``, ``models/model.pt``, ``scripts/``).
        batch_size: slices per network call.
    """

    def __init__(self, bundle_dir: str, batch_size: int = 8) -> None:
        self.bundle_dir = os.path.abspath(bundle_dir)
        with open(os.path.join(self.bundle_dir, "configs", "metadata.json"), encoding="utf-8") as f:
            metadata = json.load(f)
        self.weights = os.path.join(self.bundle_dir, "models", "model.pt")
        self.batch_size = int(batch_size)
        image = metadata["network_data_format"]["inputs"]["image"]
        super().__init__(
            path=self.weights,
            network=None,  # the bundle builds and loads its networks (the model and the outline cascade)
            type=InferType.SEGMENTATION,
            labels=bundle_labels(metadata),
            dimension=len(image.get("spatial_shape", (0, 0))),
            description=(
                f"{metadata.get('name', 'brainseg-monai')} {metadata.get('version', '')}: a 2D slice, or a volume "
                "axial slice by axial slice; the mask has the input's geometry"
            ),
            config={"result_extension": "", "result_dtype": "uint8"},
        )
        self.version = metadata.get("version")
        self._stages: Dict[str, Dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._slice_stack = self._parser().get_parsed_content("bundle_scripts").slice_stack  # puts it on sys.path

    def info(self) -> Dict[str, Any]:
        return {**super().info(), "version": self.version}

    def is_valid(self) -> bool:
        return os.path.isfile(self.weights)

    # the bundle's stages, parsed once per device

    def _parser(self) -> ConfigParser:
        """The bundle's inference.json with MONAI Label's layer (configs/monailabel.json), rooted at the bundle."""
        parser = ConfigParser()
        parser.read_config([os.path.join(self.bundle_dir, "configs", name) for name in CONFIG_FILES])
        parser["bundle_root"] = self.bundle_dir
        return parser

    def _bundle(self, device: str) -> Dict[str, Any]:
        try:
            target = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise HTTPException(status_code=422, detail=f"device: {device!r} is not a torch device ({e})") from None
        if target.type == "cuda" and not torch.cuda.is_available():
            target = torch.device("cpu")
        key = str(target)
        with self._lock:
            if key not in self._stages:
                parser = self._parser()
                parser["device"] = target  # an object, not an expression: request text never becomes code
                parser["label_batch_size"] = self.batch_size
                parser["tumor_label"] = self.labels.get("tumor", next(iter(self.labels.values())))
                if "possible tumor" in self.labels:  # bundles before the three-level verdict have no such label
                    parser["possible_tumor_label"] = self.labels["possible tumor"]
                self._stages[key] = {
                    "pre_transforms": parser.get_parsed_content("pre_transforms"),
                    "inferer": parser.get_parsed_content("slice_stack_inferer"),
                    "post_transforms": parser.get_parsed_content("post_transforms"),
                }
                logger.info(f"brainseg-monai bundle {self.version} loaded on {key}")
        return self._stages[key]

    # MONAI Label's stages

    def __call__(self, request, callbacks=None) -> Tuple[Optional[str], Dict]:
        image = request.get("image")
        upload = isinstance(image, str) and _is_upload(image)
        try:
            self._check_result_fields({**self._config, **request})  # before the model runs
            return super().__call__(request, callbacks)
        except ValueError as e:  # the bundle names the file or field and what is wrong with it
            detail = " ".join(str(e).split())
            raise HTTPException(
                status_code=422, detail=detail.replace(image, "the uploaded image") if upload else detail
            )
        finally:
            if upload and os.path.exists(image) and sys.exc_info()[0] is not None:
                # MONAI Label removes an upload only after a successful answer: a refused one would stay behind
                os.unlink(image)

    def _check_result_fields(self, request: Dict[str, Any]) -> None:
        """Refuse a ``result_dtype`` or ``result_extension`` the task cannot write (``ValueError`` naming the field)."""
        dtype = request.get("result_dtype") or "uint8"
        if dtype not in ("uint8", "uint16"):  # labels are written as uint8, which both hold
            raise ValueError(f"result_dtype: {dtype!r} is not a label type (use uint8)")
        ext = request.get("result_extension")
        suffixes = self._slice_stack.MASK_SUFFIXES
        if ext and str(ext).lower() not in suffixes:
            raise ValueError(f"result_extension: {ext!r} is not a mask format (use {', '.join(suffixes)})")

    def pre_transforms(self, data=None):
        return self._bundle(data["device"])["pre_transforms"]

    def post_transforms(self, data=None):
        return self._bundle(data["device"])["post_transforms"]

    def run_inferer(self, data: Dict[str, Any], convert_to_batch: bool = True, device: str = "cuda"):
        inferer = self._bundle(device)["inferer"]  # slice_index: "segment this slice" of a volume
        if hasattr(inferer, "segment"):  # with the per-slice report (bundles from 0.6.3)
            args = [data[self.input_key], data.get("slice_index")]
            parameters = inspect.signature(inferer.segment).parameters
            if "direction" in parameters:  # axial slices (bundles from 0.6.4)
                args.append(data.get(f"{self.input_key}_direction"))
            if "spacing" in parameters:  # square pixels (bundles from 0.6.5)
                args.append(data.get(f"{self.input_key}_spacing"))
            data[self.output_label_key], data["slice_report"] = inferer.segment(*args)
        else:
            data[self.output_label_key] = inferer(data[self.input_key], data.get("slice_index"))
        return data

    def _slice_axis(self, mask: Any, data: Dict[str, Any]) -> int:
        """The numpy axis a volume was cut along: its axial slices' (bundles from 0.6.4), else K's."""
        volumes = importlib.import_module(f"{self._slice_stack.__package__}.volumes")
        direction = data.get(f"{self.input_key}_direction")
        if direction is None or "direction" not in inspect.signature(volumes.resolve_axis).parameters:
            return 0
        return 2 - volumes.resolve_axis(np.shape(mask), None, direction)

    def writer(self, data: Dict[str, Any], extension=None, dtype=None) -> Tuple[Any, Any]:
        ndim = data[f"{self.input_key}_ndim"]
        suffix = str(extension or data.get("result_extension") or DEFAULT_EXTENSION[ndim]).lower()
        if suffix == ".png" and ndim == 3:
            raise ValueError(
                "result_extension: '.png' holds one slice, and this input is a volume (use .nrrd or .nii.gz)"
            )
        fd, path = tempfile.mkstemp(suffix=suffix, prefix="brainseg-")  # the server's temporary folder
        os.close(fd)
        try:
            self._slice_stack.write_slice_stack_mask(
                data[self.output_label_key], data.get(f"{self.input_key}_geometry"), path
            )
        except BaseException:
            os.unlink(path)
            raise
        mask = data[self.output_label_key]
        planes = mask[None] if ndim == 2 else np.moveaxis(mask, self._slice_axis(mask, data), 0)
        stack = planes.reshape(len(planes), -1)
        tumor = (stack == self.labels.get("tumor", 1)).any(axis=1)
        possible = (stack == self.labels.get("possible tumor", -1)).any(axis=1) & ~tumor
        verdict = "tumor" if tumor.any() else ("possible tumor" if possible.any() else "no tumor found")
        result = {
            "verdict": verdict,
            "tumor_slices": int(tumor.sum()),
            "possible_tumor_slices": int(possible.sum()),
            "slices": len(stack),
            "bundle_version": self.version,
        }
        if ndim == 3 and data.get("slice_report") is not None:
            # a volume: the rows monai.bundle run writes to <name>_slices.csv (a 2D image's one row is the above)
            result["slice_report"] = data["slice_report"]
        return path, result
