"""Pictures of whole volumes from other hospitals: real tumor-free levels, tumors, and what still fails.

    python benchmarks/lgg_gallery.py LGG_DIR --cases cases.json [--split tune] OUTPUT.png [--bundle bundle]

Segments each case's T1 contrast volume with the bundle as ``brainseg segment`` does (the slice
loop, the volume rule, the operating points) and draws four rows: tumor-free slices near the skull
base, tumor-free slices near the vertex (both at least 3 slices from any masked slice), the slice of
largest tumor extent of cases whose tumor was found, and what still fails: tumors not found, and
tumor-free slices with a confident false tumor. The FLAIR extent is drawn in green on tumor slices
only to show where the tumor is; it is not an outline of the tumor on T1 contrast.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os

import numpy as np

from brainseg_monai.report import labelled_gallery, overlay_caption
from lgg_volumes import load_cases, score_volume
from scripts.predictor import BundlePredictor
from scripts.tumor_free import tumor_free_slice_indices
from scripts.verdict import TUMOR, TUMOR_LABEL
from scripts.volumes import predict_volume

PER_ROW = 4


def _brain_slices(volume: np.ndarray) -> list[int]:
    """Slices holding a head: more than 5% of the pixels above a tenth of the volume's 99th percentile."""
    level = np.percentile(volume, 99) * 0.1
    return [k for k in range(volume.shape[0]) if (volume[k] > level).mean() > 0.05]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lgg_dir")
    ap.add_argument("output")
    ap.add_argument("--cases", required=True)
    ap.add_argument("--split", default="tune")
    ap.add_argument("--bundle", default="bundle")
    args = ap.parse_args()
    cases = load_cases(args.lgg_dir, json.load(open(args.cases, encoding="utf-8"))[args.split])
    predictor = BundlePredictor(args.bundle, device="cpu")
    base, vertex, found, found_truth = [], [], [], []
    false_tumors: list = []  # (panel, None): false tumors on tumor-free slices
    missed: list = []  # (panel, FLAIR extent): tumors not found with confidence
    for case in cases:
        reports: list = []
        labels, _ = predict_volume(case.volume, predictor, axis=2, slice_reports=reports)
        free = set(tumor_free_slice_indices(case.mask, 3))
        short = case.name.replace("TCGA_", "")[:7]

        def panel(k: int, what: str = "") -> tuple:
            r = reports[k]
            caption = overlay_caption(f"{short} s{k}", r["verdict"], r["tumor_score"])
            # on a line of its own: beside the verdict it ran into the next panel's caption
            return case.volume[k], labels[k], caption + (f"\n{what}" if what else "")

        head = _brain_slices(case.volume)
        if head:
            # the two ends of the head, a tenth of the way in; the one with the smaller head is the vertex
            # (the volumes' slice order differs from case to case)
            ends = [head[len(head) // 10], head[-1 - len(head) // 10]]
            area = [(case.volume[k] > np.percentile(case.volume, 99) * 0.1).sum() for k in ends]
            top, bottom = (ends[0], ends[1]) if area[0] < area[1] else (ends[1], ends[0])
            if bottom in free:
                base.append(panel(bottom))
            if top in free:
                vertex.append(panel(top))
        for k in sorted(free):
            if reports[k]["verdict"] == TUMOR:
                false_tumors.append((panel(k, "a false tumor on a tumor-free slice"), None))
        if case.mask.any():
            row = score_volume(case, labels)
            # the slice where the tumor was found (the largest confident tumor on the FLAIR extent), else
            # the slice of largest extent
            on_extent = ((labels == TUMOR_LABEL) & case.mask).reshape(len(labels), -1).sum(axis=1)
            extent = case.mask.reshape(case.mask.shape[0], -1).sum(axis=1)
            k = int(np.argmax(on_extent if row["found"] and on_extent.any() else extent))
            if row["found"]:
                found.append(panel(k))
                found_truth.append(case.mask[k])
            else:
                what = "tumor shown as a possible tumor only" if row["shown"] else "tumor missed"
                missed.append((panel(k, what), case.mask[k]))
    # both kinds of failure in the row, alternating, however many of one kind there are
    failing = [f for pair in itertools.zip_longest(false_tumors, missed) for f in pair if f is not None]
    rows = [
        ("tumor-free, skull base", base[:PER_ROW]),
        ("tumor-free, vertex", vertex[:PER_ROW]),
        ("tumor found", found[:PER_ROW]),
        ("still fails", [p for p, _ in failing[:PER_ROW]]),
    ]
    truths = [
        [None] * len(base[:PER_ROW]),
        [None] * len(vertex[:PER_ROW]),
        found_truth[:PER_ROW],
        [t for _, t in failing[:PER_ROW]],
    ]
    kept = [(row, truth) for row, truth in zip(rows, truths) if row[1]]
    labelled_gallery([r for r, _ in kept], args.output, [t for _, t in kept])
    print(json.dumps({"output": os.path.abspath(args.output), "rows": [(r[0], len(r[1])) for r, _ in kept]}))


if __name__ == "__main__":
    main()
