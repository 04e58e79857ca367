"""Qt-free logic of the BrainTumorSegmentation Slicer module.

Usable inside 3D Slicer and in a plain Python process with the PyPI package ``slicer-core``::

    import sys
    sys.path.insert(0, "<repo>/slicer_extension/BrainTumorSegmentation")
    from BrainTumorSegmentationLib import segment_volume, save_segmentation

    segmentation_node = segment_volume(volume_node)            # bundle's models/model.pt
    save_segmentation(segmentation_node, "case1.seg.nrrd")

Modules:
    :mod:`.inference` numpy-only volume inference (no ``slicer`` import: also used by the
    background worker process); :mod:`.segmentation` MRML nodes in and out;
    :mod:`.dependencies` what must be pip-installed in Slicer's Python; :mod:`.worker` the
    background process and :mod:`.background` its runner (start, progress, cancel of the whole
    process group, result; the process launcher injected); :mod:`.installer` the dependency
    installer (pip, PyTorch Utils and the confirmation injected). The scene checks that the
    pytest suite and the in-Slicer self-test share are test code, in ``Testing/Python``.

Names from :mod:`.segmentation` and the bundle's slice loop are loaded on first access, so
importing this package (and
its ``inference``/``dependencies`` modules) does not need ``slicer``, torch or MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

from .inference import VOLUME_NAMES, bundle_info, find_bundle_dir, load_predictor

_SEGMENTATION_NAMES = (
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
)

__all__ = [
    "AXIS_NAMES",
    "SegmentationCancelled",
    "bundle_info",
    "find_bundle_dir",
    "is_cancelled",
    "load_predictor",
    "predict_volume",
    "resolve_axis",
    *_SEGMENTATION_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in VOLUME_NAMES:  # the bundle's slice loop (scripts/volumes.py)
        from . import inference

        return getattr(inference, name)
    if name in _SEGMENTATION_NAMES:
        module = importlib.import_module(".segmentation", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
