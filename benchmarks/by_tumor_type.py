"""The figures of a ``brainseg evaluate`` run per tumor type: meningioma, glioma, pituitary tumor.

    brainseg evaluate DATASET/valid --output-dir out/valid --outlines DATASET/valid_outlines
    python benchmarks/by_tumor_type.py out/valid/metrics_per_image.csv DATASET/valid_outlines/index.csv

``index.csv`` (``file_name``, ``figshare_label``: 1 meningioma, 2 glioma, 3 pituitary tumor) comes
with the expert outlines of the valid split (see the dataset's NOTICE.md); images it does not list
are counted as "not typed". Printed per type: the images, the share with a confident tumor, with a
possible tumor only, with nothing shown, and the mean Dice against the true outlines; for runs whose
rows say where the tumor was drawn (``found_at_tumor``, ``shown_at_tumor``), also the share with a
tumor at the annotated tumor and how many show nothing there.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

TUMOR_TYPES = {"1": "meningioma", "2": "glioma", "3": "pituitary tumor"}
NOT_TYPED = "not typed"


def _true(value: str) -> bool:
    return value.strip().lower() == "true"


def read_tumor_types(index_csv: str | os.PathLike) -> dict[str, str]:
    """``{file name: tumor type}`` from an outlines ``index.csv``.

    Raises:
        ValueError: naming the file: a column is missing, or a label is not 1, 2 or 3.
    """
    with open(index_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"file_name", "figshare_label"} <= set(rows[0]):
        raise ValueError(f"{index_csv}: expected the columns file_name and figshare_label, got {sorted(rows[0])}")
    types = {}
    for line, row in enumerate(rows, start=2):
        label = row["figshare_label"].strip()
        if label not in TUMOR_TYPES:
            raise ValueError(f"{index_csv}, line {line}: figshare_label {label!r} is not 1, 2 or 3")
        types[row["file_name"]] = TUMOR_TYPES[label]
    return types


def figures_by_type(rows: Iterable[Mapping[str, str]], types: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per tumor type: images, found / possible only / nothing shown (counts and fractions), outline Dice mean.

    Args:
        rows: the rows of ``metrics_per_image.csv`` (``file_name``, ``tumor_found``, ``possible_tumor``,
            ``outline_dice``).
        types: :func:`read_tumor_types`.
    """
    groups: dict[str, list[Mapping[str, str]]] = {}
    for row in rows:
        groups.setdefault(types.get(row["file_name"], NOT_TYPED), []).append(row)
    order = [*TUMOR_TYPES.values(), NOT_TYPED]
    out = {}
    for name in sorted(groups, key=order.index):
        group = groups[name]
        found = sum(_true(r["tumor_found"]) for r in group)
        possible = sum(not _true(r["tumor_found"]) and _true(r["possible_tumor"]) for r in group)
        dice = [float(r["outline_dice"]) for r in group if r.get("outline_dice") not in (None, "", "None", "nan")]
        out[name] = {
            "images": len(group),
            "found": found,
            "possible_only": possible,
            "nothing_shown": len(group) - found - possible,
            "found_rate": round(found / len(group), 3),
            "nothing_shown_rate": round((len(group) - found - possible) / len(group), 3),
            "outline_dice_mean": round(float(np.mean(dice)), 3) if dice else None,
        }
        if all(r.get("found_at_tumor") not in (None, "", "None") for r in group):  # rows that say where
            at_tumor = sum(_true(r["found_at_tumor"]) for r in group)
            nothing = sum(r.get("shown_at_tumor", "").strip().lower() == "false" for r in group)
            out[name].update(found_at_tumor=at_tumor, found_at_tumor_rate=round(at_tumor / len(group), 3))
            out[name].update(nothing_shown_at_tumor=nothing)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics_csv", help="metrics_per_image.csv of a brainseg evaluate run")
    ap.add_argument("index_csv", help="the outlines' index.csv (file_name, figshare_label)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    try:
        types = read_tumor_types(args.index_csv)
        with open(args.metrics_csv, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        missing = {"file_name", "tumor_found", "possible_tumor", "outline_dice"} - set(rows[0] if rows else ())
        if missing:
            raise ValueError(
                f"{args.metrics_csv}: not a brainseg evaluate metrics_per_image.csv (no {sorted(missing)})"
            )
    except (OSError, ValueError) as e:
        raise SystemExit(str(e)) from None
    figures = figures_by_type(rows, types)
    header = ("tumor type", "images", "found", "possible only", "nothing shown", "outline Dice")
    at_tumor = all("found_at_tumor" in f for f in figures.values())
    extra = f" {'found at tumor':>16} {'nothing at tumor':>16}" if at_tumor else ""
    print(f"{header[0]:<16} {header[1]:>6} {header[2]:>14} {header[3]:>14} {header[4]:>14} {header[5]:>12}{extra}")
    for name, f in figures.items():
        dice = "" if f["outline_dice_mean"] is None else f"{f['outline_dice_mean']:.3f}"
        located = f" {f['found_at_tumor']:>7} ({f['found_at_tumor_rate']:>6.1%}) {f['nothing_shown_at_tumor']:>16}"
        print(
            f"{name:<16} {f['images']:>6} {f['found']:>5} ({f['found_rate']:>6.1%}) {f['possible_only']:>14} "
            f"{f['nothing_shown']:>5} ({f['nothing_shown_rate']:>5.1%}) {dice:>12}{located if at_tumor else ''}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=1)


if __name__ == "__main__":
    main()
