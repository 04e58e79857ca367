"""Split the TCGA-LGG volumes by patient and write the training cases' real tumor-free slices as a COCO split.

    python benchmarks/make_lgg_splits.py ../shared/data/lgg_volumes OUTPUT_DIR

Writes ``OUTPUT_DIR/tumor_free`` (a COCO split of the training cases' slices at least
``--min-distance`` slices from any masked slice, no annotation: ``brainseg train --recipe
--tumor-free-split`` takes it) and ``OUTPUT_DIR/cases.json`` (which patients train, which are
held apart to choose the operating point and to measure). The split is by patient, every
``--tune-every``-th case of each institution in case order held apart, so no slice of a
held-apart patient is ever trained on. Only the masks' slice indices are used: the FLAIR masks
are never outlines on T1 contrast images.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections import defaultdict

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
from scripts.io import atomic_output, check_output_dir
from scripts.tumor_free import write_volume_tumor_free_split


def split_cases(cases_csv: str, tune_every: int = 3) -> dict[str, list[str]]:
    """``{"train": [...], "tune": [...]}``: every ``tune_every``-th case of each institution held apart."""
    by_institution: dict[str, list[str]] = defaultdict(list)
    with open(cases_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_institution[row["institution"]].append(row["case"])
    split: dict[str, list[str]] = {"train": [], "tune": []}
    for institution in sorted(by_institution):
        for i, case in enumerate(sorted(by_institution[institution])):
            split["tune" if i % tune_every == tune_every - 1 else "train"].append(case)
    return split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lgg_dir", help="the folder holding t1c/, masks/ and cases.csv")
    ap.add_argument("output_dir")
    ap.add_argument("--min-distance", type=int, default=3, help="slices this close to a masked slice are left out")
    ap.add_argument("--tune-every", type=int, default=3, help="hold apart every N-th case of each institution")
    args = ap.parse_args()
    check_output_dir(args.output_dir, {"lgg_dir": args.lgg_dir})  # the one output rule, before anything is written
    split = split_cases(os.path.join(args.lgg_dir, "cases.csv"), args.tune_every)
    os.makedirs(args.output_dir, exist_ok=True)
    with atomic_output(os.path.join(args.output_dir, "cases.json")) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(split, f, indent=4)
    pairs = [
        (os.path.join(args.lgg_dir, "t1c", f"{c}.nii.gz"), os.path.join(args.lgg_dir, "masks", f"{c}.nii.gz"))
        for c in split["train"]
    ]
    result = write_volume_tumor_free_split(pairs, os.path.join(args.output_dir, "tumor_free"), args.min_distance)
    print(
        json.dumps(
            {"train_cases": len(split["train"]), "tune_cases": len(split["tune"])}
            | {k: result[k] for k in ("n_slices", "n_written")}
        )
    )


if __name__ == "__main__":
    main()
