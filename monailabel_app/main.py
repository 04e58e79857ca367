"""MONAI Label app serving the brainseg-monai bundle (inference only).

    monailabel start_server --app monailabel_app --studies STUDIES --host 127.0.0.1 --port 8000

``--conf bundle PATH`` serves another copy of the bundle (default: the repository's ``bundle/``);
``--conf batch_size N`` sets the slices per network call. The model is ``brainseg``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict

from lib.infers import BrainTumorSegmentation, bundle_labels
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask

logger = logging.getLogger(__name__)

#: The model name clients (the 3D Slicer MONAI Label plugin, OHIF, HTTP) ask for.
MODEL_NAME = "brainseg"


class BrainSegApp(MONAILabelApp):
    """One inference model, the bundle; no trainers (the bundle's own ``train.json`` trains it)."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        default = os.path.join(os.path.dirname(os.path.abspath(app_dir)), "bundle")
        self.bundle_dir = os.path.abspath(conf.get("bundle") or default)
        metadata_path = os.path.join(self.bundle_dir, "configs", "metadata.json")
        if not os.path.isfile(metadata_path):
            raise ValueError(f"--conf bundle: {self.bundle_dir} is not a MONAI bundle (no configs/metadata.json)")
        with open(metadata_path, encoding="utf-8") as f:
            metadata = json.load(f)
        batch_size = conf.get("batch_size", "8")
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ValueError(f"--conf batch_size: must be a positive integer, got {batch_size!r}")
        self.batch_size = int(batch_size)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="brainseg-monai",
            description=metadata.get("description", ""),
            version=metadata.get("version", ""),
            labels=bundle_labels(metadata),
        )

    def init_infers(self) -> Dict[str, InferTask]:
        task = BrainTumorSegmentation(self.bundle_dir, batch_size=self.batch_size)
        if not task.is_valid():
            logger.warning(f"{task.weights} is missing: the bundle has no weights to serve")
        return {MODEL_NAME: task}

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {}
