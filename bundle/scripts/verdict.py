"""What is reported about a slice or a volume: a tumor, a possible tumor, or nothing found.

A binary "tumor / no tumor" verdict hides every candidate below the operating point: a tumor the
network saw, but not confidently enough, vanished without a trace. The verdict has three levels
instead, the one vocabulary of every front end (reports, overlays, Slicer, MONAI Label, CLI):

- **tumor** (:data:`TUMOR`): a component reached the operating point (``min_confidence``);
- **possible tumor** (:data:`POSSIBLE_TUMOR`): no component did, but one reached the lower
  ``possible_min_confidence``: it is still drawn, apart, for a person to look at;
- **no tumor found** (:data:`NO_TUMOR`): nothing reached either.

Masks are label maps: :data:`TUMOR_LABEL` (1) for the tumor, :data:`POSSIBLE_TUMOR_LABEL` (2)
for possible tumors, 0 elsewhere; PNG masks hold 255 and 128 (:data:`PNG_VALUES`).

For a volume, :class:`NeighbourSupport` decides with the adjacent slices: a tumor drawn on one
slice with nothing shown at the same place on the slices above and below is most often anatomy
(a vessel, the pituitary, the sinus), so it is reported as a possible tumor unless it is very
confident on its own.

Only numpy is imported here: the Slicer module's main process uses this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "NO_TUMOR",
    "PNG_VALUES",
    "POSSIBLE_TUMOR",
    "POSSIBLE_TUMOR_LABEL",
    "TUMOR",
    "TUMOR_LABEL",
    "VERDICTS",
    "NeighbourSupport",
    "label_map",
    "png_mask",
    "verdict_of",
    "volume_verdict",
]

TUMOR = "tumor"
POSSIBLE_TUMOR = "possible tumor"
NO_TUMOR = "no tumor found"
#: The verdicts, most certain first.
VERDICTS = (TUMOR, POSSIBLE_TUMOR, NO_TUMOR)

TUMOR_LABEL = 1
POSSIBLE_TUMOR_LABEL = 2
#: The PNG value of each label (0 stays 0): the tumor white, a possible tumor mid-grey.
PNG_VALUES = {TUMOR_LABEL: 255, POSSIBLE_TUMOR_LABEL: 128}


def verdict_of(components: Sequence[Any], possible_components: Sequence[Any] = ()) -> str:
    """The verdict of a slice (or of a volume, from all its slices' components)."""
    if components:
        return TUMOR
    return POSSIBLE_TUMOR if possible_components else NO_TUMOR


def volume_verdict(slice_verdicts: Sequence[str]) -> str:
    """A volume's verdict: the most certain of its slices' (``no tumor found`` for no slice)."""
    for level in VERDICTS[:-1]:
        if level in slice_verdicts:
            return level
    return NO_TUMOR


def label_map(tumor: np.ndarray, possible: np.ndarray | None = None) -> np.ndarray:
    """A uint8 label map from the tumor mask and the possible-tumor mask (the tumor wins where both are set)."""
    tumor = np.asarray(tumor) > 0
    out = tumor.astype(np.uint8) * TUMOR_LABEL
    if possible is not None:
        possible = np.asarray(possible) > 0
        if possible.shape != tumor.shape:
            raise ValueError(f"possible-tumor mask of shape {possible.shape} does not fit the mask {tumor.shape}")
        out[possible & ~tumor] = POSSIBLE_TUMOR_LABEL
    return out


def png_mask(labels: np.ndarray) -> np.ndarray:
    """The PNG pixel values (:data:`PNG_VALUES`) of a label map."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.uint8)
    for label, value in PNG_VALUES.items():
        out[labels == label] = value
    return out


class NeighbourSupport:
    """The volume rule: a slice's tumor counts only with support on an adjacent slice, or alone when very confident.

    A slice's tumor is *supported* when at least ``min_support`` of its pixels lie under something
    shown (tumor or possible tumor) on the slice before or after it. An unsupported tumor whose
    confidence is below ``standalone_confidence`` becomes a possible tumor: it is still drawn,
    in the possible-tumor label, and its slice's report says so. A volume of one slice is left
    as it is (there is nothing to compare with).

    Args:
        min_support: the fraction of the tumor's pixels that must lie under an adjacent slice's
            tumor or possible tumor, in (0, 1].
        standalone_confidence: a tumor at least this confident needs no support, in [0, 1]
            (1 never: every tumor needs support).

    Raises:
        ValueError: an argument out of range.
    """

    def __init__(self, min_support: float = 0.1, standalone_confidence: float = 1.0) -> None:
        if not 0.0 < float(min_support) <= 1.0:
            raise ValueError(f"min_support: must be a fraction in (0, 1], got {min_support!r}")
        if not 0.0 <= float(standalone_confidence) <= 1.0:
            raise ValueError(f"standalone_confidence: must be a confidence in [0, 1], got {standalone_confidence!r}")
        self.min_support = float(min_support)
        self.standalone_confidence = float(standalone_confidence)

    def support(self, labels: np.ndarray, index: int, np_axis: int = 0) -> float:
        """The fraction of slice ``index``'s tumor pixels under something shown on an adjacent slice.

        0 without a tumor.
        """
        tumor = np.take(labels, index, axis=np_axis) == TUMOR_LABEL
        area = int(tumor.sum())
        if area == 0:
            return 0.0
        shown = np.zeros_like(tumor)
        for neighbour in (index - 1, index + 1):
            if 0 <= neighbour < labels.shape[np_axis]:
                shown |= np.take(labels, neighbour, axis=np_axis) > 0
        return int((tumor & shown).sum()) / area

    def apply(self, labels: np.ndarray, slice_reports: list[dict[str, Any]], np_axis: int = 0) -> np.ndarray:
        """Demote the unsupported tumors of a label map in place, and their slices' reports.

        Support is measured on the label map as the slices left it, so demoting one slice never
        takes the support away from its neighbour.

        Args:
            labels: the volume's label map, slices along ``np_axis``; changed in place.
            slice_reports: one per slice in slice order (``index``, ``verdict``, ``components``,
                ``possible_components``, ``tumor_score``...); the demoted slices' are changed in place.
            np_axis: the numpy axis of the slices.

        Returns:
            ``labels``.
        """
        if labels.shape[np_axis] < 2:
            return labels
        supports = {r["index"]: self.support(labels, r["index"], np_axis) for r in slice_reports if r["components"]}
        for report in slice_reports:
            index = report["index"]
            if index not in supports:
                continue
            report["support"] = round(supports[index], 4)
            confidence = max(float(c["confidence"]) for c in report["components"])
            if supports[index] >= self.min_support or confidence >= self.standalone_confidence:
                continue
            where: list[Any] = [slice(None)] * labels.ndim
            where[np_axis] = index
            plane = labels[tuple(where)]
            plane[plane == TUMOR_LABEL] = POSSIBLE_TUMOR_LABEL
            report["possible_components"] = list(report["components"]) + list(report.get("possible_components", []))
            report["components"] = []
            report["tumor_found"] = False
            report["verdict"] = POSSIBLE_TUMOR
            report["unsupported"] = True
        return labels

    def __repr__(self) -> str:
        return f"NeighbourSupport(min_support={self.min_support}, standalone_confidence={self.standalone_confidence})"
