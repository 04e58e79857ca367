"""Checks of :func:`segment_volume` on a real MRML scene, shared by two test runners.

Test code, not product code: it lives in the extension's ``Testing/Python`` (Slicer's place for
tests; not installed with the module), so changing what the module ships cannot weaken them.

``tests/test_slicer_lib.py`` runs them with pytest on a ``slicer.vtkMRMLScene()`` from the
PyPI package ``slicer-core``; ``BrainTumorSegmentationTest`` in the Slicer module runs them
inside 3D Slicer on ``slicer.mrmlScene``. Each check builds its own input nodes, calls the
Lib, and raises ``AssertionError`` with a message when something is wrong, so the checks
exist once.

A predictor is passed in: a ``BundlePredictor`` (the smoke-trained or shipped model) or, in
a Slicer without torch, :class:`IntensityPredictor`, a numpy stand-in with the same
interface. Pixel checks compare against ``predictor.predict_array`` of the same 2D array.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from BrainTumorSegmentationLib.inference import bundle_module
from BrainTumorSegmentationLib.segmentation import (
    POSSIBLE_SEGMENT_COLOR,
    POSSIBLE_SEGMENT_NAME,
    POSSIBLE_TERMINOLOGY,
    PROBABILITY_REFERENCE_ROLE,
    SEGMENT_COLOR,
    SEGMENT_NAME,
    TERMINOLOGY,
    TERMINOLOGY_TAG,
    apply_prediction,
    export_segment_labelmap,
    probability_node_of,
    save_segmentation,
    segment_ids,
    segment_volume,
    segmentation_label_map,
    slice_table_node_of,
    tumor_slice_summary,
    volume_spacing,
)

#: The Slicer convention for a 2D image file: i -> left, j -> posterior (LPS image axes in RAS).
JPEG_IJK_TO_RAS_DIRECTIONS = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))
#: A non-trivial geometry for scalar volumes: anisotropic spacing, an origin, rotated axes.
TEST_SPACING = (0.7, 0.7, 3.0)
TEST_ORIGIN = (12.5, -30.25, 7.0)
TEST_DIRECTIONS = ((0.0, -1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
#: TEST_DIRECTIONS put a slice's rows (J) right to left and its columns (I) front to back: the bundle's
#: slice loop segments each axial plane transposed, rows front to back as the network learnt, and turns
#: its mask back (``scripts.volumes.axial_slicing``).
TEST_PLANES_TRANSPOSED = True


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One sample image: its file name, RGB pixels (H, W, 3) uint8 in PIL order, COCO boxes [x, y, w, h]."""

    name: str
    rgb: np.ndarray
    boxes: list[list[float]] = field(default_factory=list)

    @property
    def grey(self) -> np.ndarray:
        return self.rgb.astype(np.float32).mean(axis=-1)

    def box_mask(self) -> np.ndarray:
        mask = np.zeros(self.rgb.shape[:2], dtype=bool)
        for x, y, w, h in self.boxes:
            mask[int(math.floor(y)) : int(math.ceil(y + h)), int(math.floor(x)) : int(math.ceil(x + w))] = True
        return mask


def read_samples(split_dir: str | os.PathLike, count: int | None = None) -> list[Sample]:
    """Images of a COCO split (``_annotations.coco.json`` beside them), sorted by file name."""
    from PIL import Image

    split = os.fspath(split_dir)
    with open(os.path.join(split, "_annotations.coco.json"), encoding="utf-8") as f:
        coco = json.load(f)
    boxes: dict[int, list[list[float]]] = {}
    for ann in coco.get("annotations", []):
        boxes.setdefault(ann["image_id"], []).append([float(v) for v in ann["bbox"]])
    images = sorted(coco["images"], key=lambda im: im["file_name"])[:count]
    samples = []
    for im in images:
        with Image.open(os.path.join(split, im["file_name"])) as pil:
            rgb = np.asarray(pil.convert("RGB"))
        samples.append(Sample(im["file_name"], rgb, boxes.get(im["id"], [])))
    return samples


def synthetic_samples(count: int = 3, size: int = 96) -> list[Sample]:
    """Stand-in images (a bright disc on a darker head) for a Slicer without the sample data or PIL."""
    yy, xx = np.mgrid[:size, :size]
    samples = []
    for n in range(count):
        head = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.45 * size) ** 2) * 90.0
        cy, cx, r = size * (0.35 + 0.1 * n), size * 0.55, size * 0.1
        tumor = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) * 140.0
        grey = np.clip(head + tumor + n, 0, 255).astype(np.uint8)
        samples.append(
            Sample(f"synthetic{n}", np.repeat(grey[..., None], 3, axis=-1), [[cx - r, cy - r, 2 * r, 2 * r]])
        )
    return samples


class IntensityPredictor:
    """Numpy stand-in with ``BundlePredictor``'s interface: tumor = the brightest 2% of the slice.

    For running the scene checks where torch/brainseg-monai or trained weights are not available.
    It is not a model: do not use it for quality checks.
    """

    name = "intensity threshold (test stand-in)"

    def predict_arrays(self, images: Sequence[np.ndarray], with_probability: bool = False, batch_size: int = 8):
        out = []
        for image in images:
            grey = np.asarray(image, dtype=np.float32)
            if grey.ndim == 3:
                grey = grey[..., :3].mean(axis=-1)
            lo, hi = np.percentile(grey, [1, 99.5]) if grey.size else (0.0, 0.0)
            prob = np.clip((grey - lo) / (hi - lo), 0, 1).astype(np.float32) if hi > lo else np.zeros_like(grey)
            mask = (grey > np.percentile(grey, 98)).astype(np.uint8) if hi > lo else np.zeros(grey.shape, np.uint8)
            out.append((mask, prob) if with_probability else mask)
        return out

    def predict_array(self, image: np.ndarray, with_probability: bool = False):
        return self.predict_arrays([image], with_probability)[0]


class SeenPlanes:
    """A predictor as it is, which also records the ``(rows, columns)`` of every plane it is given: what the network
    sees. Its ``predict_arrays`` has the predictor's own signature (``details`` or not)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor
        self.shapes: list[tuple[int, int]] = []
        inner = predictor.predict_arrays

        @functools.wraps(inner)
        def predict_arrays(images: Sequence[np.ndarray], *args: Any, **kwargs: Any):
            self.shapes.extend((int(np.shape(image)[0]), int(np.shape(image)[1])) for image in images)
            return inner(images, *args, **kwargs)

        self.predict_arrays = predict_arrays

    def __getattr__(self, name: str) -> Any:  # name, volume_rule, input_reference...: the predictor's
        return getattr(self.predictor, name)


def _matrix(ijk_to_ras: Any) -> Any:
    import vtk

    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(ijk_to_ras[r][c]))
    return m


def ijk_to_ras_array(volume_node: Any) -> np.ndarray:
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def add_vector_volume(scene: Any, rgb: np.ndarray, name: str = "jpeg") -> Any:
    """A single-slice RGB vector volume as Slicer makes of a JPEG: array (1, H, W, 3), IJK-to-RAS diag(-1, -1, 1)."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(rgb)[None])
    directions = _matrix([[*row, 0.0] for row in JPEG_IJK_TO_RAS_DIRECTIONS] + [[0, 0, 0, 1]])
    node.SetIJKToRASDirectionMatrix(directions)
    return node


def add_scalar_volume(
    scene: Any,
    array_kji: np.ndarray,
    name: str = "mri",
    spacing: Sequence[float] = TEST_SPACING,
    origin: Sequence[float] = TEST_ORIGIN,
    directions: Sequence[Sequence[float]] = TEST_DIRECTIONS,
) -> Any:
    """A scalar volume with the given (k, j, i) voxels and a non-trivial geometry."""
    import slicer

    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array_kji))
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    node.SetIJKToRASDirectionMatrix(_matrix([[*row, 0.0] for row in directions] + [[0, 0, 0, 1]]))
    return node


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def segment_tag(segment: Any, name: str) -> str | None:
    """A segment's tag value (None if absent)."""
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def check_segment_metadata(segmentation_node: Any) -> None:
    """One "Brain tumor" and one "Possible tumor" segment, each with its fixed color and standard terminology."""
    segmentation = segmentation_node.GetSegmentation()
    for name, color, terms in (
        (SEGMENT_NAME, SEGMENT_COLOR, TERMINOLOGY),
        (POSSIBLE_SEGMENT_NAME, POSSIBLE_SEGMENT_COLOR, POSSIBLE_TERMINOLOGY),
    ):
        ids = [sid for sid in segment_ids(segmentation) if segmentation.GetSegment(sid).GetName() == name]
        assert len(ids) == 1, f"expected one {name!r} segment, found {len(ids)}"
        segment = segmentation.GetSegment(ids[0])
        assert np.allclose(segment.GetColor(), color), f"{name} color {segment.GetColor()} != {color}"
        terminology = segment_tag(segment, TERMINOLOGY_TAG)
        assert terminology == terms, f"{name} terminology tag is {terminology!r}"


def check_possible_tumor_segment(scene: Any, tmp_dir: str) -> None:
    """The bundle's label map (1 tumor, 2 possible tumor) becomes two segments with the right voxels, which
    the slice summary counts apart and a saved .seg.nrrd keeps (read back with slicerio when installed)."""
    labels = np.zeros((3, 20, 30), np.uint8)
    labels[0, 2:6, 3:9] = 1  # a tumor on slice 0
    labels[1, 10:14, 10:20] = 2  # a possible tumor alone on slice 1
    labels[0, 15:18, 20:25] = 2  # and one beside the tumor
    volume = add_scalar_volume(scene, np.ones((3, 20, 30), np.float32), "possible")
    segmentation = apply_prediction(volume, labels)
    check_segment_metadata(segmentation)
    assert np.array_equal(export_segment_labelmap(segmentation, SEGMENT_NAME)[0], labels == 1)
    assert np.array_equal(export_segment_labelmap(segmentation, POSSIBLE_SEGMENT_NAME)[0], labels == 2)
    assert np.array_equal(segmentation_label_map(segmentation), labels)
    summary = tumor_slice_summary(segmentation_label_map(segmentation), 2)
    assert summary == "tumor found on 1 of 3 slices; possible tumor on 1 more", summary
    saved = save_segmentation(segmentation, os.path.join(tmp_dir, "possible.seg.nrrd"))
    try:
        import slicerio
    except ImportError:
        return
    data = slicerio.read_segmentation(saved)
    by_name = {s["name"]: s for s in data["segments"]}
    assert set(by_name) == {SEGMENT_NAME, POSSIBLE_SEGMENT_NAME}, f"{saved}: segments {sorted(by_name)}"
    assert by_name[POSSIBLE_SEGMENT_NAME]["terminology"]["type"] == ["SCT", "52988006", "Lesion"]
    voxels = np.asarray(data["voxels"])
    assert int((voxels == by_name[POSSIBLE_SEGMENT_NAME]["labelValue"]).sum()) == int((labels == 2).sum())


def check_geometry(segmentation_node: Any, volume_node: Any) -> np.ndarray:
    """The segment's labelmap has the volume's voxel grid (dimensions, spacing, origin, directions)."""
    mask, ijk_to_ras = export_segment_labelmap(segmentation_node)
    expected_shape = tuple(reversed(volume_node.GetImageData().GetDimensions()))
    assert mask.shape == expected_shape, f"labelmap shape {mask.shape} != volume's {expected_shape}"
    assert np.allclose(
        ijk_to_ras, ijk_to_ras_array(volume_node), atol=1e-6
    ), f"labelmap IJK-to-RAS\n{ijk_to_ras}\n!= volume's\n{ijk_to_ras_array(volume_node)}"
    reference = segmentation_node.GetSegmentation().GetConversionParameter("Reference image geometry")
    assert reference, "the segmentation has no reference image geometry"
    return mask


def check_2d_vector_volume(scene: Any, predictor: Any, sample: Sample) -> tuple[Any, np.ndarray]:
    """A JPEG-like RGB volume (1, H, W, 3) gives the mask of ``predictor.predict_array(rgb)``, pixel for pixel."""
    volume = add_vector_volume(scene, sample.rgb, sample.name)
    before = scene.GetNumberOfNodes()
    segmentation = segment_volume(volume, predictor=predictor)
    added = 1 + segmentation.GetNumberOfDisplayNodes()
    assert scene.GetNumberOfNodes() == before + added, "segment_volume should add the segmentation (and display) only"
    check_segment_metadata(segmentation)
    mask = check_geometry(segmentation, volume)
    expected = np.asarray(predictor.predict_array(sample.rgb))
    assert mask.shape == (1, *sample.rgb.shape[:2])
    assert np.array_equal(
        mask[0], expected
    ), f"mask differs from predict_array in {int((mask[0] != expected).sum())} pixels"
    return segmentation, mask[0]


def check_scalar_volume(
    scene: Any, grey: np.ndarray, expected_predictor: Any, **options: Any
) -> tuple[Any, np.ndarray]:
    """A 2D scalar volume with spacing/origin/directions: same grid, same pixels as predict_array."""
    volume = add_scalar_volume(scene, np.asarray(grey)[None], "scalar")
    segmentation = segment_volume(volume, **options)
    check_segment_metadata(segmentation)
    mask = check_geometry(segmentation, volume)
    expected = np.asarray(expected_predictor.predict_array(grey))
    assert np.array_equal(
        mask[0], expected
    ), f"mask differs from predict_array in {int((mask[0] != expected).sum())} pixels"
    return segmentation, mask[0]


def check_3d_stack(scene: Any, predictor: Any, greys: Sequence[np.ndarray], batch_size: int = 2) -> np.ndarray:
    """Slice k of the result of a stacked volume equals the 2D prediction of slice k; progress and probability."""
    stack = np.stack([np.asarray(g, dtype=np.float32) for g in greys])
    volume = add_scalar_volume(scene, stack, "stack")
    fractions: list[float] = []
    segmentation = segment_volume(
        volume, predictor=predictor, batch_size=batch_size, output_probability=True, progress=fractions.append
    )
    mask = check_geometry(segmentation, volume)
    # The same batches as segment_volume makes, so the same arithmetic: pixels must be identical.
    # (One image at a time, torch's CPU kernels may differ in the last float bit: ~1e-7 on a probability.)
    planes = [plane.T if TEST_PLANES_TRANSPOSED else plane for plane in stack]  # as the network sees them
    expected = [
        (m.T, p.T) if TEST_PLANES_TRANSPOSED else (m, p)
        for m, p in predictor.predict_arrays(planes, with_probability=True, batch_size=batch_size)
    ]
    for k, (m, p) in enumerate(expected):
        assert np.array_equal(
            mask[k], m
        ), f"slice {k}: mask differs from its 2D prediction in {int((mask[k] != m).sum())} pixels"
        single = np.asarray(predictor.predict_array(planes[k]))
        single = single.T if TEST_PLANES_TRANSPOSED else single
        assert (mask[k] != single).mean() <= 1e-4, f"slice {k}: mask differs from predict_array(slice {k})"
    batches = math.ceil(len(stack) / batch_size)
    assert len(fractions) == batches + 1 and fractions[0] == 0.0 and fractions[-1] == 1.0, f"progress {fractions}"
    assert all(a <= b for a, b in zip(fractions, fractions[1:])), f"progress goes back: {fractions}"
    probability = probability_node_of(segmentation)
    assert probability is not None, "no probability volume referenced by the segmentation"
    assert np.allclose(ijk_to_ras_array(probability), ijk_to_ras_array(volume)), "probability geometry != input's"
    import slicer

    prob = slicer.util.arrayFromVolume(probability)
    for k, (m, p) in enumerate(expected):
        assert np.allclose(prob[k], p, atol=1e-6), f"slice {k}: probability differs from predict_array's"
    # the per-slice table: the bundle's per-slice report, for a predictor that gives its details
    table = slice_table_node_of(segmentation)
    if "details" in inspect.signature(predictor.predict_arrays).parameters:
        assert table is not None and table.GetNumberOfRows() == len(stack), "no per-slice table, or not one row a slice"
        labels = segmentation_label_map(segmentation)
        verdicts = [table.GetCellText(k, table.GetColumnIndex("verdict")) for k in range(len(stack))]
        tumor = [bool((labels[k] == 1).any()) for k in range(len(stack))]
        assert [v == "tumor" for v in verdicts] == tumor, f"per-slice verdicts {verdicts} != the segments"
    else:
        assert table is None, "a per-slice table from a predictor without per-slice details"
    return mask


def check_axis(scene: Any, predictor: Any, grey: np.ndarray) -> None:
    """Slicing along J: result[:, j, :] is the prediction of volume[:, j, :]."""
    h, w = np.asarray(grey).shape
    rows, c0, width = (h // 6, h // 2, (2 * h) // 3), w // 3, min(64, w - w // 3)
    small = np.stack([np.asarray(grey)[r : r + 5, c0 : c0 + width] for r in rows]).astype(np.float32)
    # square pixels in the J planes (TEST_SPACING's would be 0.7 x 3 mm, given to the network with square ones:
    # check_rectangular_pixels): here each plane goes to the predictor as it lies
    volume = add_scalar_volume(scene, small, "axisJ", (0.7, 0.7, 0.7))
    segmentation = segment_volume(volume, predictor=predictor, axis=1, batch_size=4)
    mask = check_geometry(segmentation, volume)
    for j in range(small.shape[1]):
        expected = np.asarray(predictor.predict_array(small[:, j, :]))
        assert np.array_equal(mask[:, j, :], expected), f"J slice {j} is not the prediction of volume[:, {j}, :]"


def check_sagittal_volume(scene: Any, predictor: Any, greys: Sequence[np.ndarray]) -> None:
    """A head stored sagittally (K right to left, J foot to head, I front to back, as many 3D T1 volumes are)
    is segmented as the same head stored axially: Auto cuts its axial slices, and each label lands back in
    the sagittal voxel it came from."""
    h, w = np.shape(greys[0])[:2]  # the middle of the head: planes of every axis hold some of it
    stack = np.stack(
        [np.asarray(g, dtype=np.float32)[h // 2 - 24 : h // 2 + 24, w // 2 - 20 : w // 2 + 20] for g in greys]
    )
    axial_directions = JPEG_IJK_TO_RAS_DIRECTIONS  # i -> left, j -> posterior, k -> superior
    axial = add_scalar_volume(scene, stack, "axial", (0.8, 0.9, 3.0), TEST_ORIGIN, axial_directions)
    sagittal_voxels = np.ascontiguousarray(np.transpose(stack, (2, 0, 1)))  # (i, k, j): K <- I, J <- K, I <- J
    columns = [1, 2, 0]  # the sagittal node's I, J, K are the axial node's J, K, I
    sagittal_directions = [[row[c] for c in columns] for row in axial_directions]
    sagittal = add_scalar_volume(scene, sagittal_voxels, "sagittal", (0.9, 3.0, 0.8), TEST_ORIGIN, sagittal_directions)
    assert np.allclose(
        ijk_to_ras_array(sagittal) @ [5, 2, 7, 1], ijk_to_ras_array(axial) @ [7, 5, 2, 1]
    ), "the two nodes should hold the same head: sagittal voxel (i, j, k) is axial voxel (k, i, j)"
    expected = segmentation_label_map(segment_volume(axial, predictor=predictor, batch_size=2))
    labels = segmentation_label_map(segment_volume(sagittal, predictor=predictor, batch_size=2))
    assert labels.shape == sagittal_voxels.shape, f"label map {labels.shape} != the volume's {sagittal_voxels.shape}"
    assert np.array_equal(labels, np.transpose(expected, (2, 0, 1))), "the sagittal volume's labels != the axial's"
    assert tumor_slice_summary(labels, 1) == tumor_slice_summary(expected, 2), "slices counted along another axis"


def check_rectangular_pixels(
    scene: Any, predictor: Any, greys: Sequence[np.ndarray], trained: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """A head acquired in thick coronal slices (0.5 mm across, 3 mm front to back, as post-contrast T1 volumes
    often are) has axial slices whose pixels are six times as long as wide: each is given to the network with
    square pixels, the head's own proportions, and its labels come back on the volume's own voxels. With a
    trained model that gives per-slice verdicts, they are those of the same head with square pixels.

    The thick volume's rows are the means of six rows of the square one (what a 3 mm slice records).

    Returns:
        ``(labels, square_labels)``: the thick volume's label map and the square one's.
    """
    h, w = np.shape(greys[0])[:2]
    rows = 6 * (h // 6)
    square = np.stack([np.asarray(g, dtype=np.float32)[:rows] for g in greys])
    thick = square.reshape(len(greys), rows // 6, 6, w).mean(axis=2)  # (k, j, i): J (front to back) 3 mm
    directions = JPEG_IJK_TO_RAS_DIRECTIONS  # i -> left, j -> posterior, k -> superior: axial slices along K
    square_node = add_scalar_volume(scene, square, "square pixels", (0.5, 0.5, 0.5), TEST_ORIGIN, directions)
    thick_node = add_scalar_volume(scene, thick, "thick coronal", (0.5, 3.0, 0.5), TEST_ORIGIN, directions)
    assert volume_spacing(thick_node) == (0.5, 3.0, 0.5), f"volume_spacing read {volume_spacing(thick_node)}"
    seen = SeenPlanes(predictor)
    segmentation = segment_volume(thick_node, predictor=seen, batch_size=len(greys))
    assert seen.shapes == [(rows, w)] * len(greys), f"the network saw planes of {seen.shapes}, not {(rows, w)}"
    labels = segmentation_label_map(segmentation)
    assert labels.shape == thick.shape, f"label map {labels.shape} != the volume's {thick.shape}"
    square_segmentation = segment_volume(square_node, predictor=predictor, batch_size=len(greys))
    square_labels = segmentation_label_map(square_segmentation)
    table, square_table = slice_table_node_of(segmentation), slice_table_node_of(square_segmentation)
    if trained and table is not None:
        column = table.GetColumnIndex("verdict")
        verdicts = [table.GetCellText(k, column) for k in range(len(greys))]
        expected = [square_table.GetCellText(k, column) for k in range(len(greys))]
        assert verdicts == expected, f"per-slice verdicts {verdicts} != those with square pixels {expected}"
        # and the tumor is where it is with square pixels: thick row j against the square volume's row 6j + 3,
        # the square-pixel row its label comes from
        tumor, square_tumor = labels == 1, square_labels[:, 3::6] == 1
        if tumor.any() or square_tumor.any():
            dice = 2.0 * (tumor & square_tumor).sum() / (tumor.sum() + square_tumor.sum())
            assert dice >= 0.5, f"the tumor with thick slices meets the one with square pixels only at Dice {dice:.2f}"
    return labels, square_labels


def _expect_value_error(scene: Any, call: Callable[[], Any], words: Sequence[str]) -> str:
    before = scene.GetNumberOfNodes()
    try:
        call()
    except ValueError as e:
        message = str(e)
    else:
        raise AssertionError(f"expected a ValueError mentioning {words}")
    assert all(w.lower() in message.lower() for w in words), f"error {message!r} should mention {words}"
    assert (
        scene.GetNumberOfNodes() == before
    ), f"the scene changed on error: {before} -> {scene.GetNumberOfNodes()} nodes"
    return message


def _vector_volume_with_components(scene: Any, components: int, cls: str = "vtkMRMLVectorVolumeNode") -> Any:
    import vtk

    node = scene.AddNewNodeByClass(cls, f"{components}-component")
    image = vtk.vtkImageData()
    image.SetDimensions(16, 12, 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, components)
    node.SetAndObserveImageData(image)
    return node


def check_bad_inputs(scene: Any, predictor: Any) -> list[str]:
    """Bad inputs raise a ValueError saying what is wrong, and leave the scene unchanged."""
    import vtk

    messages = []
    run = lambda node, **kw: (lambda: segment_volume(node, predictor=predictor, **kw))  # noqa: E731
    messages.append(_expect_value_error(scene, run(None), ["no input volume"]))
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "no image data")
    messages.append(_expect_value_error(scene, run(empty), ["empty", "no image data"]))
    zero = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "zero voxels")
    image = vtk.vtkImageData()
    image.SetDimensions(0, 0, 0)
    image.AllocateScalars(vtk.VTK_FLOAT, 1)
    zero.SetAndObserveImageData(image)
    messages.append(_expect_value_error(scene, run(zero), ["empty"]))
    for components in (2, 5):
        node = _vector_volume_with_components(scene, components)
        messages.append(_expect_value_error(scene, run(node), [f"{components} components"]))
    scalar5 = _vector_volume_with_components(scene, 5, "vtkMRMLScalarVolumeNode")
    messages.append(_expect_value_error(scene, run(scalar5), ["5 components", "4D"]))
    dwi = _vector_volume_with_components(scene, 6, "vtkMRMLDiffusionWeightedVolumeNode")
    messages.append(_expect_value_error(scene, run(dwi), ["4D"]))
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "a sequence")
    messages.append(_expect_value_error(scene, run(sequence), ["sequence", "4D"]))
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "a model")
    messages.append(_expect_value_error(scene, run(model), ["not a volume"]))
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    labelmap.SetAndObserveImageData(_vector_volume_with_components(scene, 1).GetImageData())
    messages.append(_expect_value_error(scene, run(labelmap), ["labelmap"]))
    messages.append(_expect_value_error(scene, run(np.zeros((4, 4))), ["volume node"]))
    good = add_scalar_volume(scene, np.zeros((1, 8, 8), np.float32), "good")
    messages.append(_expect_value_error(scene, run(good, segmentation_node=good), ["segmentation node"]))
    messages.append(_expect_value_error(scene, run(good, axis=3), ["axis"]))
    messages.append(_expect_value_error(scene, run(good, batch_size=0), ["batch_size"]))
    messages.append(
        _expect_value_error(scene, lambda: segment_volume(good, predictor=predictor, bundle_dir="x"), ["either"])
    )
    return messages


def check_cancel(scene: Any, predictor: Any, greys: Sequence[np.ndarray]) -> None:
    """Cancel after the first batch (event or callable): SegmentationCancelled, scene and segments unchanged."""
    stack = np.stack([np.asarray(g, dtype=np.float32) for g in greys])
    volume = add_scalar_volume(scene, stack, "to cancel")
    for style in ("event", "callable"):
        before = scene.GetNumberOfNodes()
        event = threading.Event()
        cancel = event if style == "event" else event.is_set
        progress = lambda f: event.set() if f > 0 else None  # noqa: E731
        try:
            segment_volume(volume, predictor=predictor, batch_size=1, progress=progress, cancel=cancel)
        except bundle_module("volumes").SegmentationCancelled:
            pass
        else:
            raise AssertionError(f"cancel ({style}) did not stop segment_volume")
        assert scene.GetNumberOfNodes() == before, f"cancel ({style}) changed the scene"
    # an existing result survives a cancelled rerun untouched
    segmentation = segment_volume(volume, predictor=predictor)
    old = export_segment_labelmap(segmentation)[0]
    ids = segment_ids(segmentation.GetSegmentation())
    before = scene.GetNumberOfNodes()
    try:
        segment_volume(volume, segmentation, predictor=predictor, cancel=lambda: True, output_probability=True)
    except bundle_module("volumes").SegmentationCancelled:
        pass
    else:
        raise AssertionError("cancel=lambda: True did not stop segment_volume")
    assert scene.GetNumberOfNodes() == before, "a cancelled rerun changed the scene"
    assert segment_ids(segmentation.GetSegmentation()) == ids, "a cancelled rerun changed the segments"
    assert np.array_equal(export_segment_labelmap(segmentation)[0], old), "a cancelled rerun changed the mask"


def check_rerun_replaces(scene: Any, predictor: Any, first: np.ndarray, second: np.ndarray) -> None:
    """Running again on the same segmentation replaces its segment (and probability) and keeps others."""
    import slicer

    volume = add_scalar_volume(scene, np.asarray(first, dtype=np.float32)[None], "rerun")
    segmentation = segment_volume(volume, predictor=predictor, output_probability=True)
    segmentation.GetSegmentation().AddEmptySegment("", "Manual edits")
    probability = probability_node_of(segmentation)
    nodes = scene.GetNumberOfNodes()
    slicer.util.updateVolumeFromArray(volume, np.asarray(second, dtype=np.float32)[None])
    again = segment_volume(volume, segmentation, predictor=predictor, output_probability=True)
    assert again is segmentation, "rerun must return the same segmentation node"
    assert scene.GetNumberOfNodes() == nodes, f"rerun added nodes: {nodes} -> {scene.GetNumberOfNodes()}"
    seg = segmentation.GetSegmentation()
    names = [seg.GetSegment(sid).GetName() for sid in segment_ids(seg)]
    assert names == [SEGMENT_NAME, POSSIBLE_SEGMENT_NAME, "Manual edits"], f"segments after rerun: {names}"
    check_segment_metadata(segmentation)
    expected = np.asarray(predictor.predict_array(second))
    assert np.array_equal(export_segment_labelmap(segmentation)[0][0], expected), "rerun did not replace the mask"
    assert probability_node_of(segmentation) is probability, "rerun should update the same probability volume"
    assert segmentation.GetNodeReferenceID(PROBABILITY_REFERENCE_ROLE) == probability.GetID()


def check_no_tumor(scene: Any, tmp_dir: str) -> None:
    """An empty result still gives one (empty) "Brain tumor" segment, in place, exportable and savable."""
    import slicer

    stand_in = IntensityPredictor()  # a constant image has no bright 2%: an empty mask, whatever the model
    image = np.zeros((40, 50), np.float32)
    image[10:14, 30:35] = 200.0  # 1% of the pixels
    volume = add_scalar_volume(scene, image[None], "no tumor")
    segmentation = segment_volume(volume, predictor=stand_in)
    segmentation.GetSegmentation().AddEmptySegment("", "Manual edits")
    assert export_segment_labelmap(segmentation)[0].any(), "the first run should find the bright square"
    slicer.util.updateVolumeFromArray(volume, np.full((1, 40, 50), 7.0, np.float32))
    segment_volume(volume, segmentation, predictor=stand_in)
    seg = segmentation.GetSegmentation()
    names = [seg.GetSegment(sid).GetName() for sid in segment_ids(seg)]
    assert names == [SEGMENT_NAME, POSSIBLE_SEGMENT_NAME, "Manual edits"], f"segments after an empty rerun: {names}"
    check_segment_metadata(segmentation)
    mask = check_geometry(segmentation, volume)
    assert mask.shape == (1, 40, 50) and not mask.any(), "an empty result must export as zeros"
    saved = save_segmentation(segmentation, os.path.join(tmp_dir, "empty.seg.nrrd"))
    assert os.path.getsize(saved) > 0


def check_save_roundtrip(
    segmentation_node: Any, volume_mask: np.ndarray, reference_ijk_to_ras: np.ndarray, path: str
) -> dict:
    """``save_segmentation`` writes a .seg.nrrd that slicerio reads with name, color, terminology and voxels."""
    import slicerio

    saved = save_segmentation(segmentation_node, path)
    assert os.path.isfile(saved), f"{saved} was not written"
    data = slicerio.read_segmentation(saved)
    segments = [s for s in data["segments"] if s.get("name") == SEGMENT_NAME]
    assert len(segments) == 1, f"{saved}: segments {[s.get('name') for s in data['segments']]}"
    segment = segments[0]
    assert np.allclose(segment["color"], SEGMENT_COLOR, atol=1e-5), f"color read back: {segment['color']}"
    expected_terms = slicerio.segmentation.terminology_entry_from_string(TERMINOLOGY)
    assert segment["terminology"] == expected_terms, f"terminology read back: {segment['terminology']}"
    assert segment["terminology"]["type"] == ["SCT", "108369006", "Neoplasm"]
    assert segment["terminology"]["anatomicRegion"] == ["SCT", "12738006", "Brain"]
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    assert np.allclose(
        lps_to_ras @ np.asarray(data["ijkToLPS"]), reference_ijk_to_ras, atol=1e-5
    ), f"{saved}: geometry read back\n{data['ijkToLPS']}\nis not the volume's (in LPS)"
    voxels = np.asarray(data["voxels"])  # IJK order
    label = voxels == segment["labelValue"]
    offset = data.get("referenceImageExtentOffset", [0, 0, 0])
    full = np.zeros(tuple(reversed(volume_mask.shape)), dtype=bool)  # (i, j, k)
    i0, j0, k0 = (int(o) for o in offset)
    full[i0 : i0 + label.shape[0], j0 : j0 + label.shape[1], k0 : k0 + label.shape[2]] = label
    assert np.array_equal(full.transpose(2, 1, 0), volume_mask.astype(bool)), f"{saved}: voxels read back differ"
    return data


def box_overlap(mask: np.ndarray, sample: Sample) -> dict[str, float]:
    """How a 2D mask meets the sample's ground-truth boxes: fraction of the mask inside them, box coverage, IoU."""
    mask = np.asarray(mask).astype(bool)
    box = sample.box_mask()
    inter = float(np.logical_and(mask, box).sum())
    union = float(np.logical_or(mask, box).sum())
    return {
        "mask_pixels": float(mask.sum()),
        "inside_box": inter / mask.sum() if mask.any() else 0.0,
        "box_covered": inter / box.sum() if box.any() else 0.0,
        "iou": inter / union if union else 0.0,
    }


def check_tumor_overlap(scene: Any, predictor: Any, samples: Sequence[Sample], trained: bool) -> list[dict[str, float]]:
    """Segment all samples as one stacked volume; with a trained model what is shown must meet the boxes.

    What is shown is both segments, "Brain tumor" and "Possible tumor": the samples are unrelated
    slices, so the volume rule finds no support on their neighbours and may show a tumor as a
    possible one. With ``trained`` what is shown on at least half the slices overlaps the
    ground-truth box and, over all slices, at least 40% of the shown pixels lie inside the boxes
    (the boxes are loose: a tumor fills about 40% of its box). Otherwise the overlap is only
    computed and range-checked.
    """
    stack = np.stack([s.grey for s in samples])
    volume = add_scalar_volume(scene, stack, "samples")
    segmentation = segment_volume(volume, predictor=predictor, batch_size=4)
    check_geometry(segmentation, volume)
    mask = segmentation_label_map(segmentation) > 0
    stats = [box_overlap(mask[k], s) for k, s in enumerate(samples)]
    for st in stats:
        assert all(0.0 <= st[key] <= 1.0 for key in ("inside_box", "box_covered", "iou")), st
    if trained:
        hits = sum(st["box_covered"] > 0 for st in stats)
        assert hits >= math.ceil(len(samples) / 2), f"the mask meets the tumor box on only {hits}/{len(samples)} slices"
        inside = sum(st["inside_box"] * st["mask_pixels"] for st in stats)
        total = sum(st["mask_pixels"] for st in stats)
        assert (
            total > 0 and inside / total >= 0.4
        ), f"only {inside / max(total, 1):.0%} of predicted pixels are in the boxes"
    return stats


def run_all_checks(
    scene: Any,
    predictor: Any,
    samples: Sequence[Sample],
    tmp_dir: str,
    trained: bool,
    log: Callable[[str], Any] = print,
) -> None:
    """Every check in turn (the in-Slicer self-test). ``samples`` needs at least 3 images."""
    assert len(samples) >= 3, "run_all_checks needs at least 3 sample images"
    log("2D RGB (JPEG-like) volume")
    segmentation, mask2d = check_2d_vector_volume(scene, predictor, samples[0])
    log("save .seg.nrrd and read it back")
    try:
        import slicerio  # noqa: F401
    except ImportError:
        save_segmentation(segmentation, os.path.join(tmp_dir, "brain_tumor.seg.nrrd"))
        log("  slicerio is not installed: file written, not read back")
    else:
        reference = export_segment_labelmap(segmentation)[1]
        check_save_roundtrip(segmentation, mask2d[None], reference, os.path.join(tmp_dir, "brain_tumor.seg.nrrd"))
    greys = [s.grey for s in samples[:3]]
    log("2D scalar volume with spacing, origin and directions")
    check_scalar_volume(scene, greys[1], predictor, predictor=predictor)
    log("3D volume, slice by slice, with probability")
    check_3d_stack(scene, predictor, greys, batch_size=2)
    log("slicing along J")
    check_axis(scene, predictor, greys[0])
    log("a volume stored sagittally: its axial slices")
    check_sagittal_volume(scene, predictor, greys)
    log("a volume of thick coronal slices: square pixels for the network")
    check_rectangular_pixels(scene, predictor, greys, trained)
    log("bad inputs")
    check_bad_inputs(scene, predictor)
    log("cancel")
    check_cancel(scene, predictor, greys)
    log("no tumor: empty segment")
    check_no_tumor(scene, tmp_dir)
    log("rerun replaces")
    check_rerun_replaces(scene, predictor, greys[0], greys[1])
    log("possible tumors: a second segment")
    check_possible_tumor_segment(scene, tmp_dir)
    log("overlap with the ground-truth boxes" + ("" if trained else " (computed only: not a trained model)"))
    check_tumor_overlap(scene, predictor, samples, trained)
