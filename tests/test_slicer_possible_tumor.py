"""The Slicer Lib shows possible tumors as a second segment, from a real label map in a real MRML scene (slicer-core)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for the MRML tests")

from conftest import BUNDLE, REPO  # noqa: E402

MODULE_DIR = REPO / "slicer_extension" / "BrainTumorSegmentation"
for _folder in (MODULE_DIR, MODULE_DIR / "Testing" / "Python"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import BrainTumorSegmentationLib as btl  # noqa: E402
import scene_checks as testing  # noqa: E402
import slicer  # noqa: E402


def test_label_map_becomes_a_tumor_and_a_possible_tumor_segment(tmp_path):
    testing.check_possible_tumor_segment(slicer.vtkMRMLScene(), str(tmp_path))


def test_a_volume_segmented_by_the_bundle_shows_an_isolated_tumor_as_possible(tmp_path):
    """A tumor slice between blank slices has no support on its neighbours: Slicer shows it in "Possible tumor"."""
    from conftest import SAMPLE_SPLIT
    from PIL import Image

    from scripts.predictor import BundlePredictor

    predictor = BundlePredictor(BUNDLE, device="cpu", overrides={"volume_standalone_confidence": 1.0})
    slices = [np.asarray(Image.open(p).convert("L"), np.float32) for p in sorted(SAMPLE_SPLIT.glob("*.jpg"))]
    tumor = next(s for s in slices if predictor.predict_array(s, details=True).tumor_found)
    scene = slicer.vtkMRMLScene()
    volume = testing.add_scalar_volume(scene, np.stack([np.zeros_like(tumor), tumor, np.zeros_like(tumor)]), "v")
    segmentation = btl.segment_volume(volume, predictor=predictor)
    labels = btl.segmentation_label_map(segmentation)
    assert not (labels == 1).any() and (labels[1] == 2).any()
    assert btl.tumor_slice_summary(labels, 2, BUNDLE) == "possible tumor on 1 of 3 slices, tumor on none"
