"""Model Zoo's distributed unit test for this bundle (``ci/unit_tests/test_<bundle>_dist.py``), on the CPU.

``torchrun --nproc_per_node=2`` runs ``multi_gpu_train.json`` with the gloo backend (the
configs choose nccl only when CUDA is present), one epoch on a small random COCO split.
"""

import os
import subprocess
import sys
import unittest

from test_brain_tumor_mri_2d_segmentation import BUNDLE_ROOT, SMALL_NETWORK, RandomCocoDataset


class TestBrainTumorMri2dSegmentationMGPU(RandomCocoDataset, unittest.TestCase):
    n_train, n_valid, seed = 8, 4, 1

    def test_train_two_processes_gloo(self):
        configs = [os.path.join(BUNDLE_ROOT, "configs", n) for n in ("train.json", "multi_gpu_train.json")]
        overrides = {
            "bundle_root": BUNDLE_ROOT,
            "dataset_dir": self.dataset_dir,
            "ckpt_dir": os.path.join(self.tmp, "models"),
            "output_dir": os.path.join(self.tmp, "eval"),
            "train#trainer#max_epochs": 1,
            "batch_size": 2,
            "progress_bar": False,
            **SMALL_NETWORK,
        }
        args = []
        for key, value in overrides.items():
            args += [f"--{key}", repr(value) if isinstance(value, list) else str(value)]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
        command += ["-m", "monai.bundle", "run", "--config_file", repr(configs), *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.run(command, cwd=self.tmp, env=env, capture_output=True, text=True, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stdout[-3000:] + proc.stderr[-3000:])
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "models", "model.pt")))


if __name__ == "__main__":
    unittest.main()
