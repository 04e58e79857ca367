"""Segment MRML volume nodes into a "Brain tumor" and a "Possible tumor" segment: the extension's logic, free of Qt.

Works in 3D Slicer and in a plain Python process with the PyPI package ``slicer-core``
(real MRML scene, no application): nothing here touches ``slicer.app``, ``slicer.modules``,
``slicer.mrmlScene`` or ``qt``; the scene is always ``volume_node.GetScene()``.

The scene is changed only at the very end, after the input was checked and every slice was
predicted: a bad input, a missing model, a failed prediction or a cancel leave it as it was.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import slicer
import vtk
import vtk.util.numpy_support as vtk_np

from .inference import bundle_module, check_batch_size, load_predictor, slice_loop_geometry

__all__ = [
    "LABEL_VALUES",
    "POSSIBLE_SEGMENT_COLOR",
    "POSSIBLE_SEGMENT_NAME",
    "POSSIBLE_TERMINOLOGY",
    "PROBABILITY_REFERENCE_ROLE",
    "SEGMENT_COLOR",
    "SEGMENT_NAME",
    "SLICE_TABLE_REFERENCE_ROLE",
    "SOURCE_TAG",
    "SOURCE_VOLUME_REFERENCE_ROLE",
    "TERMINOLOGY",
    "apply_prediction",
    "check_labels",
    "check_volume_node",
    "export_segment_labelmap",
    "output_segmentation_for",
    "probability_node_of",
    "save_segmentation",
    "segment_ids",
    "segment_mask_array",
    "segment_volume",
    "segmentation_label_map",
    "slice_table_node_of",
    "source_volume_of",
    "tumor_slice_summary",
    "UNUSUAL_SLICES_ATTRIBUTE",
    "unusual_slice_note",
    "volume_array",
    "volume_direction",
    "volume_spacing",
]

SEGMENT_NAME = "Brain tumor"
#: Fixed display color of the segment (RGB in 0..1).
SEGMENT_COLOR = (0.90, 0.30, 0.20)
#: The second segment: candidates below the operating point, shown apart for a person to look at
#: (the bundle's label 2, ``scripts.verdict``).
POSSIBLE_SEGMENT_NAME = "Possible tumor"
POSSIBLE_SEGMENT_COLOR = (1.00, 0.75, 0.10)
#: Standard terminology (DICOM/SNOMED-CT) as Slicer serializes it in the segment's
#: ``TerminologyEntry`` tag: context~category~type~typeModifier~anatomicContext~region~regionModifier,
#: each code ``scheme^value^meaning``. Neoplasm (SCT 108369006) of the brain (SCT 12738006): Neoplasm
#: is in the DICOM master list (not in "3D Slicer General Anatomy list"), where the terminology
#: selector finds it.
TERMINOLOGY = (
    "Segmentation category and type - DICOM master list"
    "~SCT^49755003^Morphologically Altered Structure"
    "~SCT^108369006^Neoplasm"
    "~^^"
    "~Anatomic codes - DICOM master list"
    "~SCT^12738006^Brain"
    "~^^"
)
#: A possible tumor is a lesion (SCT 52988006), not yet a neoplasm.
POSSIBLE_TERMINOLOGY = (
    "Segmentation category and type - DICOM master list"
    "~SCT^49755003^Morphologically Altered Structure"
    "~SCT^52988006^Lesion"
    "~^^"
    "~Anatomic codes - DICOM master list"
    "~SCT^12738006^Brain"
    "~^^"
)
TERMINOLOGY_TAG = "TerminologyEntry"
#: label value of the bundle's label map -> (segment name, color, terminology)
_SEGMENTS = {
    1: (SEGMENT_NAME, SEGMENT_COLOR, TERMINOLOGY),
    2: (POSSIBLE_SEGMENT_NAME, POSSIBLE_SEGMENT_COLOR, POSSIBLE_TERMINOLOGY),
}
#: Segment tag recording which bundle (name and version) made the segment.
SOURCE_TAG = "BrainTumorSegmentation.Bundle"
#: Segmentation node attribute: how many slices looked unlike the model's training data.
UNUSUAL_SLICES_ATTRIBUTE = "BrainTumorSegmentation.UnusualSlices"
#: Node reference role from the segmentation node to its probability volume.
PROBABILITY_REFERENCE_ROLE = "BrainTumorSegmentation.Probability"
#: Node reference role from the segmentation node to its per-slice table: one row per slice, the
#: columns of the bundle's per-slice report (``scripts.tumor_report.SLICE_REPORT_FIELDS``).
SLICE_TABLE_REFERENCE_ROLE = "BrainTumorSegmentation.SliceTable"
#: Node reference role from the segmentation node to the volume whose result it holds: a result is never
#: written over another volume's (another patient's) result.
SOURCE_VOLUME_REFERENCE_ROLE = "BrainTumorSegmentation.SourceVolume"
#: Appended to the name of a probability volume or per-slice table a later run of its segmentation did not
#: replace: it is kept, but no longer describes the segments.
EARLIER_RUN = " (earlier run)"

_SUPPORTED_VOLUMES = ("vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode")
_FOUR_D_VOLUMES = ("vtkMRMLMultiVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode", "vtkMRMLDiffusionTensorVolumeNode")


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------


def _describe(node: Any) -> str:
    if node is None:
        return "None"
    if not hasattr(node, "GetClassName"):
        return f"a {type(node).__name__}"
    name = node.GetName() if hasattr(node, "GetName") else None
    return f"'{name}' ({node.GetClassName()})" if name else node.GetClassName()


def check_volume_node(volume_node: Any) -> int:
    """Check that ``volume_node`` can be segmented; return its number of components per voxel.

    Accepted: a scalar volume node, or a vector volume node with 1, 3 (RGB) or 4 (RGBA)
    components (what Slicer makes of a JPEG/PNG), with voxels, in a MRML scene.

    Raises:
        ValueError: saying what is wrong (no volume, not a volume, 4D/sequence, labelmap,
            empty, wrong number of components, not in a scene).
    """
    if volume_node is None:
        raise ValueError("no input volume: select a scalar or RGB volume to segment (got None)")
    if not hasattr(volume_node, "IsA"):
        raise ValueError(f"the input must be a volume node, got {_describe(volume_node)}")
    what = _describe(volume_node)
    cls = volume_node.GetClassName()
    if volume_node.IsA("vtkMRMLSequenceNode") or volume_node.IsA("vtkMRMLSequenceBrowserNode"):
        raise ValueError(
            f"{what} is a sequence (4D data), not a volume: select the volume of one time point "
            "(the sequence's proxy volume) instead"
        )
    if cls in _FOUR_D_VOLUMES:
        raise ValueError(f"{what} is a 4D/multi-valued volume; select a single 2D or 3D scalar or RGB volume")
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise ValueError(f"{what} is a labelmap (labels, not an image); select the MRI volume instead")
    if not volume_node.IsA("vtkMRMLVolumeNode"):
        raise ValueError(f"{what} is not a volume node; select a scalar or RGB volume")
    if cls not in _SUPPORTED_VOLUMES:
        raise ValueError(f"{what}: unsupported volume type; select a scalar or RGB(A) vector volume")
    if volume_node.GetScene() is None:
        raise ValueError(f"{what} is not in a MRML scene; add it to a scene first")
    image = volume_node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise ValueError(f"{what} is empty: it has no image data")
    dims = image.GetDimensions()
    if min(dims) < 1 or image.GetNumberOfPoints() == 0:
        raise ValueError(f"{what} is empty: it has no voxels (dimensions {tuple(dims)})")
    components = image.GetNumberOfScalarComponents()
    if cls == "vtkMRMLScalarVolumeNode" and components != 1:
        raise ValueError(
            f"{what} has {components} components per voxel (a 4D or multi-channel image); "
            "only single-component scalar volumes and RGB(A) vector volumes are supported"
        )
    if components not in (1, 3, 4):
        raise ValueError(
            f"{what} has {components} components per voxel; only grey (1), RGB (3) or RGBA (4) "
            "volumes can be segmented"
        )
    return components


def volume_array(volume_node: Any) -> np.ndarray:
    """A copy of the volume's voxels after :func:`check_volume_node`: ``(k, j, i)`` or ``(k, j, i, c)``.

    Raises:
        ValueError: naming the volume and its first such slice, when voxels are NaN or infinite (the network
            cannot read them; the message says where, which the bundle's own check cannot).
    """
    check_volume_node(volume_node)
    array = np.array(slicer.util.arrayFromVolume(volume_node), copy=True)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            per_slice = (~finite).reshape(array.shape[0], -1).sum(axis=1)
            first = int(np.flatnonzero(per_slice)[0])
            raise ValueError(
                f"the volume {_describe(volume_node)} has {int(per_slice.sum())} NaN or infinite voxel(s), "
                f"on {int((per_slice > 0).sum())} of its {array.shape[0]} K slice(s), the first on slice {first}: "
                "replace them (e.g. with 0) before segmenting"
            )
    return array


def volume_direction(volume_node: Any) -> np.ndarray:
    """The volume's 3x3 IJK-to-RAS direction matrix (one column per IJK axis), which tells the bundle's slice
    loop along which axis its axial slices lie (``scripts.volumes.axial_slicing``)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASDirectionMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])


def volume_spacing(volume_node: Any) -> tuple[float, float, float]:
    """The volume's voxel spacing along I, J and K (``GetSpacing()``, mm), which tells the bundle's slice loop
    which planes have rectangular pixels, to be given to the network with square ones
    (``scripts.square_pixels``)."""
    spacing = tuple(float(v) for v in volume_node.GetSpacing())
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ValueError(
            f"the volume {_describe(volume_node)} has the spacing {list(spacing)} (I, J, K): each must be a positive "
            "number of mm; set it in the Volumes module (Volume Information)"
        )
    return spacing


def source_volume_of(segmentation_node: Any) -> Any:
    """The volume node whose result this segmentation node holds (None: none, or that volume was removed)."""
    if segmentation_node is None or not hasattr(segmentation_node, "GetNodeReference"):
        return None
    node = segmentation_node.GetNodeReference(SOURCE_VOLUME_REFERENCE_ROLE)
    return node if node is not None and node.GetScene() is not None else None


def output_segmentation_for(volume_node: Any, segmentation_node: Any) -> Any:
    """The segmentation node a run on ``volume_node`` may write into: ``segmentation_node``, or None (a new one)
    when it holds the result of another volume still in the scene.

    After a run the module's output selector shows its result; segmenting the next patient's volume into
    it would replace that patient's result (and any edits) under a name that is no longer true. A
    segmentation made elsewhere (Segment Editor), or one whose volume was removed, is written into.
    """
    source = source_volume_of(segmentation_node)
    return None if source is not None and source is not volume_node else segmentation_node


def _check_output_nodes(volume_node: Any, segmentation_node: Any, probability_node: Any) -> None:
    scene = volume_node.GetScene()
    if segmentation_node is not None:
        if not hasattr(segmentation_node, "IsA") or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise ValueError(f"the output must be a segmentation node, got {_describe(segmentation_node)}")
        if segmentation_node.GetScene() is not scene:
            raise ValueError(f"the segmentation {_describe(segmentation_node)} is not in the input volume's scene")
        if output_segmentation_for(volume_node, segmentation_node) is None:
            raise ValueError(
                f"the segmentation {_describe(segmentation_node)} holds the result of the volume "
                f"{_describe(source_volume_of(segmentation_node))}: segment {_describe(volume_node)} into a new "
                "segmentation (None), not over another volume's result"
            )
    if probability_node is not None:
        if (
            not hasattr(probability_node, "GetClassName")
            or probability_node.GetClassName() != "vtkMRMLScalarVolumeNode"
        ):
            raise ValueError(f"the probability output must be a scalar volume node, got {_describe(probability_node)}")
        if probability_node is volume_node:
            raise ValueError("the probability output cannot be the input volume itself")
        if probability_node.GetScene() is not scene:
            raise ValueError(f"the probability volume {_describe(probability_node)} is not in the input volume's scene")
        if probability_node.GetImageData() is not None and not _is_probability_of(probability_node, volume_node):
            raise ValueError(
                f"the probability volume {_describe(probability_node)} holds an image that is not the tumor "
                f"probability of {_describe(volume_node)} (an image, or another volume's result): writing the "
                "probability into it would replace it; choose a new volume (None)"
            )


def _is_probability_of(probability_node: Any, volume_node: Any) -> bool:
    """Whether a segmentation of ``volume_node`` (or of a volume since removed) holds ``probability_node`` as its
    tumor probability: a rerun may write it again, nothing else may."""
    collection = volume_node.GetScene().GetNodesByClass("vtkMRMLSegmentationNode")
    for index in range(collection.GetNumberOfItems()):
        segmentation = collection.GetItemAsObject(index)
        if probability_node_of(segmentation) is probability_node:
            source = source_volume_of(segmentation)
            if source is None or source is volume_node:
                return True
    return False


# --------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------


def segment_volume(
    volume_node: Any,
    segmentation_node: Any = None,
    bundle_dir: str | os.PathLike | None = None,
    *,
    ckpt_path: str | os.PathLike | None = None,
    config_files: Sequence[str | os.PathLike] = (),
    device: str | None = None,
    force_cpu: bool = False,
    axis: int | str | None = None,
    batch_size: int = 8,
    output_probability: bool = False,
    probability_node: Any = None,
    progress: Callable[[float], Any] | None = None,
    cancel: Callable[[], bool] | threading.Event | None = None,
    predictor: Any = None,
) -> Any:
    """Segment the brain tumor in a volume node into a "Brain tumor" segment, and possible tumors into a second one.

    The bundle's label map (``scripts.verdict``) becomes two segments: "Brain tumor" (label 1,
    the tumor at the operating point) and "Possible tumor" (label 2: candidates below it, shown so
    that nothing the network saw is hidden). A volume's slices are decided with their neighbours
    (the bundle's ``volume_rule``).

    A single-slice volume (a JPEG/PNG loaded in Slicer, shape ``(1, H, W)``) is one 2D image;
    a 3D volume is segmented slice by slice along ``axis``, ``batch_size`` slices at a time.
    RGB(A) vector volumes are turned to grey by the bundle's own transforms (as for JPEG files).
    A plane whose pixels the volume's spacing makes rectangular (the axial slices of a volume acquired
    in thick coronal or sagittal slices) is given to the network with square pixels, and its labels come
    back on the volume's own voxels (with a bundle whose slice loop takes the spacing; an older one
    segments the plane as it lies).

    Args:
        volume_node: a scalar or RGB(A) vector volume node in a MRML scene.
        segmentation_node: output; a new ``vtkMRMLSegmentationNode`` is added when None. Running
            again with the same node replaces its "Brain tumor" and "Possible tumor" segments (other
            segments stay).
        bundle_dir: the MONAI bundle (default: see :func:`~BrainTumorSegmentationLib.find_bundle_dir`).
        ckpt_path: weights (default: the bundle's ``models/model.pt``).
        config_files: JSON files layered on the bundle's ``inference.json`` (e.g. another network size).
        device: torch device (default: CUDA if available, else CPU).
        force_cpu: use the CPU even when a GPU is available.
        axis: IJK axis to slice along: 2 (K), 1 (J) or 0 (I); ``None`` (Auto) cuts a volume into its
            axial slices, the axis its IJK-to-RAS directions put nearest foot to head (K for a volume
            acquired axially; ``scripts.volumes.axial_slicing``), and picks the flat axis of a single-slice
            image.
        batch_size: slices per network call.
        output_probability: also write the tumor probability (0..1) into a scalar volume with the
            input's geometry: ``probability_node``, else the one made by an earlier run with this
            segmentation node, else a new one (see :func:`probability_node_of`).
        probability_node: scalar volume node to write the probability into (implies ``output_probability``).
        progress: called with the fraction done (0..1).
        cancel: callable or ``threading.Event`` checked between batches; raises
            :class:`~BrainTumorSegmentationLib.SegmentationCancelled`, leaving the scene unchanged.
        predictor: a ready ``BundlePredictor`` (or an object with its ``predict_arrays``); then
            ``bundle_dir``, ``ckpt_path``, ``config_files``, ``device`` and ``force_cpu`` must not be given.

    Returns:
        the segmentation node.

    Raises:
        ValueError: a bad input or option (the message says what), weights that do not fit.
        FileNotFoundError: the weights are missing.
        ImportError: ``bundle_dir`` holds no bundle code (``scripts/``; the message names the folder), or a
            package the bundle needs is missing.
        SegmentationCancelled: ``cancel`` fired.
    """
    check_volume_node(volume_node)
    _check_output_nodes(volume_node, segmentation_node, probability_node)
    output_probability = output_probability or probability_node is not None  # a node given is a node to fill
    array = volume_array(volume_node)
    if predictor is not None and (bundle_dir or ckpt_path or config_files or device or force_cpu):
        raise ValueError("pass either predictor or the options to load one (bundle_dir, ckpt_path, ...), not both")
    volumes = bundle_module("volumes", bundle_dir)  # the bundle's slice loop
    # the direction says which axis holds the axial slices and how their rows lie (resolve_axis takes it too);
    # the spacing, which planes have rectangular pixels (the network learnt square ones). Only what this
    # bundle's loop takes: an older bundle is not given what it does not know.
    direction = slice_loop_geometry(volumes, direction=volume_direction(volume_node))
    geometry = {**direction, **slice_loop_geometry(volumes, spacing=volume_spacing(volume_node))}
    ijk_axis = volumes.resolve_axis(array.shape, axis, **direction)
    batch_size = check_batch_size(batch_size)
    if predictor is None:
        predictor = load_predictor(bundle_dir, ckpt_path, config_files, device, force_cpu)
    # a BundlePredictor also says which slices look unlike its training data; a stand-in may not
    reports: list | None = [] if "details" in inspect.signature(predictor.predict_arrays).parameters else None
    mask, probability = volumes.predict_volume(
        array,
        predictor,
        axis=ijk_axis,
        batch_size=batch_size,
        with_probability=output_probability,
        progress=progress,
        cancel=cancel,
        slice_reports=reports,
        **geometry,
    )
    return apply_prediction(
        volume_node,
        mask,
        probability,
        segmentation_node=segmentation_node,
        probability_node=probability_node,
        source=getattr(predictor, "name", None),
        unusual_slices=None if reports is None else sum(r["input_unusual"] for r in reports),
        slice_rows=None if reports is None else bundle_module("tumor_report", bundle_dir).slice_rows(reports),
    )


def tumor_slice_summary(
    mask: np.ndarray, axis: int | str | None = None, bundle_dir: str | os.PathLike | None = None
) -> str:
    """Say on how many slices a tumor, and a possible tumor, was found: "tumor found on 7 of 24 slices".

    A slice counts as a tumor slice when its label map holds a tumor voxel (label 1), as a
    possible-tumor slice when it holds only possible-tumor voxels (label 2): the bundle's own
    per-slice verdicts (``scripts.verdict``).

    Args:
        mask: the ``(k, j, i)`` label map (e.g. :func:`segment_mask_array` of each segment, or the
            worker's mask).
        axis: the IJK axis the volume was segmented along (see :func:`resolve_axis`).
        bundle_dir: the bundle that segmented it (its sentences are used).

    Returns:
        for a single-slice image "tumor found", "possible tumor" or "no tumor found"; for a volume
        "tumor found on N of M slices" or "no tumor found on any of M slices", with "; possible
        tumor on P more" when there are some.
    """
    arr = np.asarray(mask)
    if arr.ndim != 3 or arr.size == 0:
        raise ValueError(f"expected a non-empty (k, j, i) mask, got shape {arr.shape}")
    check_labels(arr)
    np_axis = 2 - bundle_module("volumes", bundle_dir).resolve_axis(arr.shape, axis)
    per_slice = np.moveaxis(arr, np_axis, 0).reshape(arr.shape[np_axis], -1)
    tumor = (per_slice == 1).any(axis=1)
    possible = (per_slice == 2).any(axis=1) & ~tumor
    found, maybe, total = int(tumor.sum()), int(possible.sum()), int(tumor.size)
    report = bundle_module("tumor_report", bundle_dir)
    if total == 1:
        return "tumor found" if found else ("possible tumor" if maybe else "no tumor found")
    return report.tumor_count_summary(found, total, "slices", maybe)


def unusual_slice_note(segmentation_node: Any) -> str:
    """ "; 3 slices look unlike the model's training data (T1 contrast MRI)" or "" (none, or not checked)."""
    value = segmentation_node.GetAttribute(UNUSUAL_SLICES_ATTRIBUTE) if segmentation_node is not None else None
    count = int(value) if value and value.isdigit() else 0
    if count == 0:
        return ""
    what = "1 slice looks" if count == 1 else f"{count} slices look"
    return f"; {what} unlike the model's training data (T1 contrast MRI): check the result"


def apply_prediction(
    volume_node: Any,
    mask: np.ndarray,
    probability: np.ndarray | None = None,
    segmentation_node: Any = None,
    probability_node: Any = None,
    source: str | None = None,
    unusual_slices: int | None = None,
    slice_rows: Sequence[Mapping[str, Any]] | None = None,
) -> Any:
    """Write a predicted ``(k, j, i)`` label map (and probability) for ``volume_node`` into the scene.

    Label 1 becomes the "Brain tumor" segment, label 2 the "Possible tumor" segment; both are
    always there (empty when nothing was found), so a run says "no tumor" visibly.

    ``unusual_slices``, the number of slices the bundle's input check flagged as unlike its
    training data, is kept on the segmentation node (:data:`UNUSUAL_SLICES_ATTRIBUTE`, read
    back by :func:`unusual_slice_note`); None leaves it unset.

    ``slice_rows``, the bundle's per-slice report (``scripts.tumor_report.slice_rows``: one row per
    slice, its verdict, tumor score, areas, neighbour support...), fills a table node, "<volume>
    tumor per slice", referenced from the segmentation node (:data:`SLICE_TABLE_REFERENCE_ROLE`,
    :func:`slice_table_node_of`; a run again with the same segmentation node refills it) when the
    volume has more than one slice: a 2D image's one row is its verdict, which the segments show (an
    earlier run's table is then set aside, as a probability volume is when ``probability`` is None: no
    longer referenced, its name ending in " (earlier run)"). None leaves any earlier table as it was.

    A segmentation node that holds another volume's result (:func:`source_volume_of`) is refused: the
    caller passes None, or :func:`output_segmentation_for`'s answer, to get a new one.

    This is the scene-changing half of :func:`segment_volume`, for results computed elsewhere
    (the Slicer module runs the model in a background process and calls this on its output).

    Returns:
        the segmentation node (new when ``segmentation_node`` is None).

    Raises:
        ValueError: bad nodes, arrays that do not have the volume's shape, a label map with other values than
            :data:`LABEL_VALUES`, per-slice rows that are not one per slice, or an ``unusual_slices`` that is
            not a count of its slices (all checked before the scene changes).
    """
    check_volume_node(volume_node)
    _check_output_nodes(volume_node, segmentation_node, probability_node)
    shape = tuple(reversed(volume_node.GetImageData().GetDimensions()))
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"the mask has shape {mask.shape} but the volume has {shape} (k, j, i)")
    check_labels(mask)
    _check_transform(volume_node, segmentation_node)
    if probability is not None and np.asarray(probability).shape != shape:
        raise ValueError(f"the probability has shape {np.asarray(probability).shape} but the volume has {shape}")
    columns = None if slice_rows is None else _slice_table_columns(slice_rows, shape)
    _check_unusual_slices(unusual_slices, shape, None if slice_rows is None else len(slice_rows))
    if columns is not None and columns[0].GetNumberOfTuples() < 2:
        columns = None  # a 2D image: no table
    labelmaps = {label: _oriented_labelmap(volume_node, mask == label) for label in _SEGMENTS}
    _register_converter_rules()

    scene = volume_node.GetScene()
    created: list[Any] = []
    try:
        if segmentation_node is None:
            segmentation_node = scene.AddNewNodeByClass(
                "vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{volume_node.GetName()} brain tumor")
            )
            created.append(segmentation_node)
        if segmentation_node.GetDisplayNode() is None:
            # also a node made empty elsewhere (the output selector's "Create new"): without a display node
            # the segment would be there but never shown
            segmentation_node.CreateDefaultDisplayNodes()
            created.extend(_display_nodes(segmentation_node))
        was_modifying = segmentation_node.StartModify()
        try:
            segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
            segmentation_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
            for label, (name, color, terminology) in _SEGMENTS.items():
                _replace_segment(segmentation_node, labelmaps[label], source, name, color, terminology)
            if unusual_slices is not None:
                segmentation_node.SetAttribute(UNUSUAL_SLICES_ATTRIBUTE, str(int(unusual_slices)))
            segmentation_node.SetNodeReferenceID(SOURCE_VOLUME_REFERENCE_ROLE, volume_node.GetID())
        finally:
            segmentation_node.EndModify(was_modifying)
        if probability is None:
            _set_aside(segmentation_node, PROBABILITY_REFERENCE_ROLE, probability_node_of(segmentation_node))
        else:
            target = probability_node or probability_node_of(segmentation_node)
            if target is None:
                target = scene.AddNewNodeByClass(
                    "vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(f"{volume_node.GetName()} tumor probability")
                )
                created.append(target)
                target.CreateDefaultDisplayNodes()
                created.extend(_display_nodes(target))
            _write_probability(target, volume_node, np.asarray(probability, dtype=np.float32))
            segmentation_node.SetNodeReferenceID(PROBABILITY_REFERENCE_ROLE, target.GetID())
        if slice_rows is not None and columns is None:  # a 2D image: an earlier volume's table says nothing of it
            _set_aside(segmentation_node, SLICE_TABLE_REFERENCE_ROLE, slice_table_node_of(segmentation_node))
        if columns is not None:
            table = slice_table_node_of(segmentation_node)
            if table is None:
                table = scene.AddNewNodeByClass(
                    "vtkMRMLTableNode", scene.GenerateUniqueName(f"{volume_node.GetName()} tumor per slice")
                )
                created.append(table)
            _fill_table(table, columns)
            segmentation_node.SetNodeReferenceID(SLICE_TABLE_REFERENCE_ROLE, table.GetID())
    except Exception:
        for node in reversed(created):
            if node.GetScene() is not None:
                scene.RemoveNode(node)
        raise
    return segmentation_node


def _check_unusual_slices(unusual_slices: Any, shape: Sequence[int], rows: int | None) -> None:
    """Refuse an ``unusual_slices`` count that is not a whole number from 0 to the slice count.

    The slice count is the per-slice report's row count when there is one, else the volume's largest axis
    (the slices were cut along one of its axes).
    """
    if unusual_slices is None:
        return
    most = max(shape) if rows is None else rows
    if (
        isinstance(unusual_slices, (bool, np.bool_))
        or not isinstance(unusual_slices, (int, np.integer))
        or not 0 <= unusual_slices <= most
    ):
        raise ValueError(f"unusual_slices: {unusual_slices!r} is not a count of slices from 0 to {most}")


#: The values of a label map (``scripts.verdict``): background, and the labels of :data:`_SEGMENTS`.
LABEL_VALUES = (0, *_SEGMENTS)


def check_labels(mask: np.ndarray) -> None:
    """Refuse a label map holding other values than :data:`LABEL_VALUES`.

    A 0/255 mask from another tool, or probabilities, would otherwise become two empty segments: "no
    tumor", said of a mask that holds one.

    Raises:
        ValueError: naming the first few other values.
    """
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return
    other = mask[~np.isin(mask, LABEL_VALUES)]
    if other.size:
        shown = ", ".join(f"{v:g}" for v in np.unique(other)[:5].astype(float))
        raise ValueError(
            f"the mask holds {other.size} voxel(s) of other values than the labels 0 (background), 1 (tumor) and "
            f"2 (possible tumor): {shown}; a 0/255 mask is written as 0/1"
        )


def _check_transform(volume_node: Any, segmentation_node: Any) -> None:
    """Refuse to move a segmentation's own segments: its transform becomes the volume's, so segments drawn under
    another transform would move with it (those this Lib writes are replaced, so they may)."""
    if segmentation_node is None or segmentation_node.GetTransformNodeID() == volume_node.GetTransformNodeID():
        return
    ours = {name for name, _, _ in _SEGMENTS.values()}
    segmentation = segmentation_node.GetSegmentation()
    others = [
        segmentation.GetSegment(sid).GetName()
        for sid in segment_ids(segmentation)
        if segmentation.GetSegment(sid).GetName() not in ours
    ]
    if others:
        raise ValueError(
            f"the segmentation {_describe(segmentation_node)} lies under another transform than the volume "
            f"{_describe(volume_node)} and holds other segments ({', '.join(map(repr, others[:3]))}): writing the "
            "result would move them with it; segment into a new segmentation (None), or put both under one transform"
        )


def _set_aside(segmentation_node: Any, role: str, node: Any) -> None:
    """Stop referencing an earlier run's ``node`` that this run did not replace, and name it so (:data:`EARLIER_RUN`).

    It is kept: what was written is not lost, but it no longer passes for the segments' own.
    """
    if node is None:
        return
    segmentation_node.RemoveNodeReferenceIDs(role)
    if not node.GetName().endswith(EARLIER_RUN):
        node.SetName(node.GetScene().GenerateUniqueName(node.GetName() + EARLIER_RUN))


def _referenced_node(segmentation_node: Any, role: str, class_name: str) -> Any:
    """The node of this class that an earlier run referenced from the segmentation node (None if none/removed)."""
    if segmentation_node is None:
        return None
    node = segmentation_node.GetNodeReference(role)
    if node is None or node.GetScene() is None or node.GetClassName() != class_name:
        return None
    return node


def probability_node_of(segmentation_node: Any) -> Any:
    """The probability volume an earlier run wrote for this segmentation node (None if none/removed)."""
    return _referenced_node(segmentation_node, PROBABILITY_REFERENCE_ROLE, "vtkMRMLScalarVolumeNode")


def slice_table_node_of(segmentation_node: Any) -> Any:
    """The per-slice table an earlier run filled for this segmentation node (None if none/removed)."""
    return _referenced_node(segmentation_node, SLICE_TABLE_REFERENCE_ROLE, "vtkMRMLTableNode")


def _slice_table_columns(rows: Sequence[Mapping[str, Any]], shape: Sequence[int]) -> list[Any]:
    """The table's columns from the per-slice rows, each a VTK array named after its field: whole numbers as
    integers and scores as reals, so that the table sorts them as numbers; the rest (verdicts, True/False, an
    empty support) as text.

    Args:
        rows: one row per slice of the volume whose ``(k, j, i)`` array shape is ``shape``.
        shape: the volume's shape: the slices were cut along one of its axes, so there are as many rows as
            that axis has voxels (which axis is the bundle's choice, not known here).

    Raises:
        ValueError: the rows are not mappings with the same fields, or not one per slice (checked before the
            scene changes).
    """
    rows = list(rows)
    if not rows or not all(isinstance(r, Mapping) for r in rows):
        raise ValueError("slice_rows: expected a non-empty list of per-slice rows (mappings)")
    fields = list(rows[0])
    if any(list(r) != fields for r in rows):
        raise ValueError(f"slice_rows: every row must have the fields {fields}")
    if len(rows) not in shape:
        raise ValueError(
            f"slice_rows: {len(rows)} rows, but the volume has {' x '.join(map(str, shape))} voxels (k, j, i): "
            "one row per slice along one of its axes"
        )
    columns = []
    for field in fields:
        values = [r[field] for r in rows]
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
            column = vtk.vtkIntArray()
        elif all(isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) for v in values):
            column = vtk.vtkDoubleArray()
        else:
            column = vtk.vtkStringArray()
            values = [str(v) for v in values]
        column.SetName(str(field))
        for value in values:
            column.InsertNextValue(value)
        columns.append(column)
    return columns


def _fill_table(table: Any, columns: Sequence[Any]) -> None:
    was_modifying = table.StartModify()
    try:
        table.RemoveAllColumns()
        for column in columns:
            table.AddColumn(column)
    finally:
        table.EndModify(was_modifying)


def _display_nodes(node: Any) -> list[Any]:
    return [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes()) if node.GetNthDisplayNode(i)]


def _register_converter_rules() -> None:
    """Segment operations need the representation converters (Slicer registers them at startup)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    registered = {type(rule).__name__ for rule in _iterate(factory.GetConverterRules())}
    for rule in (
        slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
        slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule,
    ):
        if rule.__name__ not in registered:
            factory.RegisterConverterRule(rule())


def _iterate(rules: Any) -> list[Any]:
    if rules is None:
        return []
    if hasattr(rules, "GetNumberOfItems"):
        return [rules.GetItemAsObject(i) for i in range(rules.GetNumberOfItems())]
    return list(rules)


def _ijk_to_ras(volume_node: Any) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix


def _oriented_labelmap(volume_node: Any, mask: np.ndarray) -> Any:
    """The mask as a ``vtkOrientedImageData`` with the volume's IJK-to-RAS geometry."""
    image = slicer.vtkOrientedImageData()
    k, j, i = mask.shape
    image.SetExtent(0, i - 1, 0, j - 1, 0, k - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    vtk_np.vtk_to_numpy(image.GetPointData().GetScalars())[:] = (
        (np.ascontiguousarray(mask) != 0).astype(np.uint8).ravel()
    )
    image.SetImageToWorldMatrix(_ijk_to_ras(volume_node))
    return image


def segment_ids(segmentation: Any) -> list[str]:
    """IDs of a ``vtkSegmentation``'s segments, in order."""
    ids = vtk.vtkStringArray()
    segmentation.GetSegmentIDs(ids)
    return [ids.GetValue(i) for i in range(ids.GetNumberOfValues())]


def _replace_segment(
    segmentation_node: Any,
    labelmap: Any,
    source: str | None,
    name: str = SEGMENT_NAME,
    color: tuple[float, float, float] = SEGMENT_COLOR,
    terminology: str = TERMINOLOGY,
) -> str:
    """Put ``labelmap`` in the node's segment called ``name``, at the old one's position if there was one."""
    segmentation = segmentation_node.GetSegmentation()
    old_ids = [sid for sid in segment_ids(segmentation) if segmentation.GetSegment(sid).GetName() == name]
    index = segmentation.GetSegmentIndex(old_ids[0]) if old_ids else None
    for sid in old_ids:
        segmentation.RemoveSegment(sid)
    ids = segment_ids(segmentation)
    insert_before = ids[index] if index is not None and index < len(ids) else ""
    before = set(ids)
    scalars = vtk_np.vtk_to_numpy(labelmap.GetPointData().GetScalars())
    if scalars.any():
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
            labelmap, segmentation_node, name, insert_before
        )
        new_ids = [sid for sid in segment_ids(segmentation) if sid not in before]
        if not ok or len(new_ids) != 1:
            raise RuntimeError(f"importing the {name!r} labelmap into {_describe(segmentation_node)} failed")
        segment_id = new_ids[0]
    else:  # nothing found: keep an empty segment so the result is visible as "no tumor"
        segment_id = segmentation.AddEmptySegment("", name)
        if index is not None:
            segmentation.SetSegmentIndex(segment_id, index)
    segment = segmentation.GetSegment(segment_id)
    segment.SetName(name)
    segment.SetColor(*color)
    segment.SetTag(TERMINOLOGY_TAG, terminology)
    if source:
        segment.SetTag(SOURCE_TAG, str(source))
    for method in ("SetNameAutoGenerated", "SetColorAutoGenerated"):
        if hasattr(segment, method):
            getattr(segment, method)(False)
    return segment_id


def _write_probability(target: Any, volume_node: Any, probability: np.ndarray) -> None:
    target.CopyOrientation(volume_node)
    target.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    slicer.util.updateVolumeFromArray(target, probability)
    display = target.GetDisplayNode()
    if display is not None and hasattr(display, "SetWindowLevelMinMax"):
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, 1.0)


# --------------------------------------------------------------------------------------
# Reading results back, saving
# --------------------------------------------------------------------------------------


def export_segment_labelmap(segmentation_node: Any, segment_name: str = SEGMENT_NAME) -> tuple[np.ndarray, np.ndarray]:
    """A segment as a ``(k, j, i)`` uint8 0/1 array on the segmentation's reference geometry.

    Returns:
        ``(mask, ijk_to_ras)`` with ``ijk_to_ras`` the 4x4 matrix of that geometry (equal to the
        input volume's ``GetIJKToRASMatrix`` after :func:`segment_volume`).

    Raises:
        ValueError: no segment of that name.
    """
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(segment_name)
    if not segment_id:
        raise ValueError(f"{_describe(segmentation_node)} has no segment named {segment_name!r}")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    merged = slicer.vtkOrientedImageData()
    ok = segmentation_node.GenerateMergedLabelmapForAllSegments(
        merged, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, None, ids
    )
    scalars = merged.GetPointData().GetScalars() if ok else None
    if scalars is not None and scalars.GetNumberOfTuples() > 0:
        shape = tuple(reversed(merged.GetDimensions()))
        mask = (vtk_np.vtk_to_numpy(scalars).reshape(shape) != 0).astype(np.uint8)
    else:  # an empty segment has no voxels to merge: zeros on the reference geometry
        geometry = segmentation.GetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
        )
        merged = slicer.vtkOrientedImageData()
        if not geometry or not slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, merged, False):
            raise RuntimeError(
                f"cannot export segment {segment_name!r}: {_describe(segmentation_node)} has no reference geometry"
            )
        mask = np.zeros(tuple(reversed(merged.GetDimensions())), dtype=np.uint8)
    matrix = vtk.vtkMatrix4x4()
    merged.GetImageToWorldMatrix(matrix)
    return mask, slicer.util.arrayFromVTKMatrix(matrix)


def segment_mask_array(segmentation_node: Any, segment_name: str = SEGMENT_NAME) -> np.ndarray:
    """The segment's ``(k, j, i)`` 0/1 mask on the input volume's voxel grid (see :func:`export_segment_labelmap`)."""
    return export_segment_labelmap(segmentation_node, segment_name)[0]


def segmentation_label_map(segmentation_node: Any) -> np.ndarray:
    """The ``(k, j, i)`` label map of the "Brain tumor" (1) and "Possible tumor" (2) segments, as the bundle wrote it.

    A node made before the possible-tumor segment existed gives the tumor alone.
    """
    labels = segment_mask_array(segmentation_node, SEGMENT_NAME).astype(np.uint8)
    if segmentation_node.GetSegmentation().GetSegmentIdBySegmentName(POSSIBLE_SEGMENT_NAME):
        possible = segment_mask_array(segmentation_node, POSSIBLE_SEGMENT_NAME)
        labels[(possible != 0) & (labels == 0)] = 2
    return labels


def save_segmentation(segmentation_node: Any, path: str | os.PathLike) -> str:
    """Write the segmentation to a ``.seg.nrrd`` file (atomically) with its names, colors and terminology.

    The file is Slicer's own segmentation format, readable by Slicer and by
    ``slicerio.read_segmentation``.

    Raises:
        ValueError: not a segmentation node, or the path does not end with ``.seg.nrrd``.
        OSError: the file could not be written.
    """
    if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
        raise ValueError(f"expected a segmentation node, got {_describe(segmentation_node)}")
    target = os.path.abspath(os.fspath(path))
    if not target.lower().endswith(".seg.nrrd"):
        raise ValueError(f"{target}: a segmentation file must end with .seg.nrrd")
    with bundle_module("io").atomic_output(target) as tmp:  # a failed write never leaves a half-written file
        storage = slicer.vtkMRMLSegmentationStorageNode()
        storage.SetFileName(tmp)
        storage.SetUseCompression(True)
        if not storage.WriteData(segmentation_node):
            raise OSError(f"{target}: writing the segmentation failed")
    return target
