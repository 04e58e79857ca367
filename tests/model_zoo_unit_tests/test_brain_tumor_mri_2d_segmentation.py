"""Model Zoo's per-bundle unit test for this bundle, in the form of its ``ci/unit_tests/test_<bundle>.py``.

Train one epoch, train + evaluate, then inference, each through ``ConfigWorkflow`` with
``check_properties``, on a small random COCO split. It imports nothing but what the bundle's
``configs/metadata.json`` lists, so it runs where only the bundle and those packages exist:
``BUNDLE_ROOT=/path/to/bundle python -m unittest discover -s tests/model_zoo_unit_tests``.
"""

import json
import os
import shutil
import tempfile
import unittest

import numpy as np
from monai.bundle import ConfigWorkflow
from PIL import Image

BUNDLE_ROOT = os.path.abspath(
    os.environ.get("BUNDLE_ROOT", os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "bundle"))
)
# a small network and 64 px images keep the run short on a CPU
SMALL_NETWORK = {
    "spatial_size": [64, 64],
    "network_def#channels": [8, 16, 32],
    "network_def#strides": [2, 2],
    "network_def#num_res_units": 1,
    "device": "$torch.device('cpu')",
    "use_amp": False,
    "cascade": False,  # the shipped outline stage belongs to the shipped network, not to this small one
}


def write_random_coco_split(split_dir, n, rng):
    """``n`` random JPEGs and a Roboflow-style ``_annotations.coco.json`` with one random box each."""
    os.makedirs(split_dir)
    images, annotations = [], []
    for i in range(n):
        h, w = int(rng.integers(96, 160)), int(rng.integers(96, 160))
        name = f"{i}_jpg.rf.{i:032x}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(os.path.join(split_dir, name))
        bw, bh = float(rng.integers(8, w // 2)), float(rng.integers(8, h // 2))
        x, y = float(rng.integers(0, w - bw)), float(rng.integers(0, h - bh))
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        annotations.append(
            {"id": i, "image_id": i, "category_id": 1, "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0}
        )
    coco = {"categories": [{"id": 1, "name": "tumor"}], "images": images, "annotations": annotations}
    with open(os.path.join(split_dir, "_annotations.coco.json"), "w") as f:
        json.dump(coco, f)


def check_workflow(workflow):
    """As Model Zoo's ``ci/unit_tests/utils.py``: initialize, check the properties, run, finalize."""
    workflow.initialize()
    missing = workflow.check_properties()
    if missing:
        raise ValueError(f"missing properties: {missing}")
    workflow.run()
    workflow.finalize()


class RandomCocoDataset:
    """A temporary dataset folder with random ``train`` and ``valid`` splits, for each test."""

    n_train, n_valid, seed = 6, 4, 0

    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        rng = np.random.default_rng(self.seed)
        self.dataset_dir = os.path.join(self.tmp, "data")
        write_random_coco_split(os.path.join(self.dataset_dir, "train"), self.n_train, rng)
        write_random_coco_split(os.path.join(self.dataset_dir, "valid"), self.n_valid, rng)

    def tearDown(self):
        shutil.rmtree(self.tmp)


class TestBrainTumorMri2dSegmentation(RandomCocoDataset, unittest.TestCase):

    def _configs(self, *names):
        return [os.path.join(BUNDLE_ROOT, "configs", n) for n in names]

    def _common(self):
        return {
            "bundle_root": BUNDLE_ROOT,
            "meta_file": os.path.join(BUNDLE_ROOT, "configs", "metadata.json"),
            "logging_file": os.path.join(BUNDLE_ROOT, "configs", "logging.conf"),
            "dataset_dir": self.dataset_dir,
            "ckpt_dir": os.path.join(self.tmp, "models"),
            "output_dir": os.path.join(self.tmp, "eval"),
            **SMALL_NETWORK,
        }

    def test_train_evaluate_infer(self):
        train = {"train#trainer#max_epochs": 1, "batch_size": 2, "progress_bar": False, **self._common()}
        check_workflow(ConfigWorkflow(workflow_type="train", config_file=self._configs("train.json"), **train))
        model = os.path.join(self.tmp, "models", "model.pt")
        self.assertTrue(os.path.isfile(model))

        # train + evaluate, as Model Zoo runs it: evaluate.json layered on train.json
        files = self._configs("train.json", "evaluate.json")
        check_workflow(ConfigWorkflow(workflow_type="train", config_file=files, **train))
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "eval", "metrics.csv")))

        masks = os.path.join(self.tmp, "masks")
        infer = {**self._common(), "dataset_dir": os.path.join(self.dataset_dir, "valid")}
        infer.update(ckpt_path=model, output_dir=masks)
        check_workflow(ConfigWorkflow(workflow_type="infer", config_file=self._configs("inference.json"), **infer))
        for name in sorted(os.listdir(os.path.join(self.dataset_dir, "valid"))):
            if name.endswith(".jpg"):
                with Image.open(os.path.join(self.dataset_dir, "valid", name)) as im:
                    with Image.open(os.path.join(masks, name[: -len(".jpg")] + ".png")) as mask:
                        self.assertEqual(mask.size, im.size)


if __name__ == "__main__":
    unittest.main()
