"""Make a split of synthetic tumor-free slices from a tumor split, for measuring false tumors.

    python benchmarks/make_tumor_free_split.py DATASET/valid OUTPUT_DIR

Each slice's tumor box is refilled from the mirrored opposite hemisphere, or the slice is
cropped away from it (:func:`scripts.tumor_free.remove_tumor`); slices where neither
works are skipped. Make it from the valid split: training makes its own tumor-free slices
from the train split on the fly (``configs/robust_finetune.json``), so these stay held apart.
Then ``brainseg evaluate OUTPUT_DIR --output-dir OUT`` reports ``tumor_free_fp_rate``.
"""

from __future__ import annotations

import argparse
import json

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
from scripts.tumor_free import write_tumor_free_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split_dir")
    ap.add_argument("output_dir")
    args = ap.parse_args()
    result = write_tumor_free_split(args.split_dir, args.output_dir)
    print(json.dumps({k: result[k] for k in ("n_source", "n_written")} | {"n_skipped": len(result["skipped"])}))


if __name__ == "__main__":
    main()
