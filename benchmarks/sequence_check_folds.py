"""Judge the sequence check's recipe on volumes it was not trained on: patient folds, then an institution left out.

    python benchmarks/sequence_check_folds.py DATASET/train LGG_DIR [--folds 4] [--leave-out DU]
        [--bundle bundle] [--epochs N] [--repeats 1] [--json results.json]

Trains :func:`scripts.sequence_check.train_sequence_classifier` again and again, never the bundle's
weights (nothing is written to the bundle):

- patient folds: the FLAIR volumes (``LGG_DIR/flair``) and the T1 contrast volumes
  (``LGG_DIR/t1c``), each in ``--folds`` folds in case order; each fold is judged by a check trained
  on the COCO split's slices and the other folds' volumes;
- an institution left out: no T1 contrast volume of ``--leave-out`` (the second field of the case
  id) in training, all of them judged; the FLAIR volumes in two folds, their patients' T1 contrast
  volumes left out of training with them.

Slices are read as inference reads them (``make_input_reference.volume_slices``, the bundle's
``slice_transforms``, :func:`scripts.sequence_check.sequence_input`). A volume is flagged when its
median probability of another sequence is above the threshold (0.5, 0.6, 0.7 printed). Printed per
setting and threshold: the FLAIR volumes and the T1 contrast volumes flagged, for each member of the
classifier alone and for their average (the shipped design). About 6 trainings of 2 minutes each on
2 CPU cores with the default 4 folds.

``--repeats N`` trains each of the shipped recipes N times per fold (:data:`MEMBER_RECIPES` repeated:
members that differ only by their random numbers) and also prints the average of all of them beside
the shipped pair's: does a larger ensemble hold steadier on an institution it never saw?
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from collections.abc import Sequence

import numpy as np
import torch
from make_input_reference import volume_slices
from make_sequence_check import bundle_inputs, shrunk

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
from scripts.coco import coco_to_datalist
from scripts.sequence_check import MEMBER_RECIPES, train_sequence_classifier

THRESHOLDS = (0.5, 0.6, 0.7)


def _member_medians(model: torch.nn.Module, volume: np.ndarray) -> list[float]:
    """The median probability of another sequence over a volume's slices: each member's, then the shipped
    design's average (its first ``len(MEMBER_RECIPES)`` members), then, with more members, all members'."""
    x = torch.from_numpy(volume)[:, None]
    with torch.inference_mode():
        members = [torch.sigmoid(m(x)[:, 0]).numpy() for m in model.members]
    averages = [np.mean(members[: len(MEMBER_RECIPES)], axis=0)]
    if len(members) > len(MEMBER_RECIPES):
        averages.append(np.mean(members, axis=0))
    return [float(np.median(p)) for p in (*members, *averages)]


def judge(
    coco: np.ndarray,
    t1c: dict[str, np.ndarray],
    flair: dict[str, np.ndarray],
    folds: Sequence[tuple[list[str], list[str], list[str]]],
    epochs: int | None,
    repeats: int = 1,
) -> dict[str, dict[str, list[float]]]:
    """Per judged volume, its medians (:func:`_member_medians`); ``folds`` are (FLAIR judged, T1 contrast
    judged, T1 contrast left out of training) case lists."""
    medians: dict[str, dict[str, list[float]]] = {"flair": {}, "t1c": {}}
    for k, (flair_judged, t1c_judged, t1c_out) in enumerate(folds):
        positives = np.concatenate([coco, *(v for c, v in t1c.items() if c not in t1c_out)])
        negatives = np.concatenate([v for c, v in flair.items() if c not in flair_judged])
        model = train_sequence_classifier(positives, negatives, seed=k, epochs=epochs, recipes=MEMBER_RECIPES * repeats)
        medians["flair"].update({c: _member_medians(model, flair[c]) for c in flair_judged})
        medians["t1c"].update({c: _member_medians(model, t1c[c]) for c in t1c_judged})
        print(f"  fold {k + 1} of {len(folds)} done", flush=True)
    return medians


def _rows(name: str, medians: dict[str, dict[str, list[float]]], n_members: int) -> list[dict]:
    rows = []
    shipped = len(MEMBER_RECIPES)
    larger = [f"average of members 1-{shipped}", f"average of all {n_members}"]
    averages = ["average"] if n_members == shipped else larger
    names = [f"member {m + 1}" for m in range(n_members)] + averages
    for threshold in THRESHOLDS:
        row = {"setting": name, "threshold": threshold}
        for sequence in ("flair", "t1c"):
            for m, who in enumerate(names):
                flagged = sum(v[m] > threshold for v in medians[sequence].values())
                row[f"{sequence} {who}"] = f"{flagged}/{len(medians[sequence])}"
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split_dir", help="the COCO training split (T1 contrast slices)")
    ap.add_argument("lgg_dir", help="holds t1c/ and flair/ volumes <case>.nii.gz")
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--leave-out", default="DU", help="the institution left out (second field of the case id)")
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--epochs", type=int, help="epochs of every member (default: each member's own)")
    ap.add_argument("--repeats", type=int, default=1, help="train each shipped recipe this many times per fold")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats: at least 1, got {args.repeats}")
    _, load, slice_transforms = bundle_inputs(args.bundle)

    def volumes(sequence: str) -> dict[str, np.ndarray]:
        paths = sorted(glob.glob(os.path.join(args.lgg_dir, sequence, "*.nii.gz")))
        if not paths:
            raise SystemExit(f"{os.path.join(args.lgg_dir, sequence)}: no volumes")
        return {os.path.basename(p)[: -len(".nii.gz")]: shrunk(volume_slices(p, slice_transforms)) for p in paths}

    coco = shrunk(load({"image": r["image"]})["image"] for r in coco_to_datalist(args.split_dir))
    t1c, flair = volumes("t1c"), volumes("flair")
    cases, flair_cases = sorted(t1c), sorted(flair)
    print(f"{len(coco)} COCO slices, {len(t1c)} T1 contrast and {len(flair)} FLAIR volumes", flush=True)
    n, members = args.folds, len(MEMBER_RECIPES) * args.repeats
    print(f"patient folds ({n})", flush=True)
    patient_folds = [(flair_cases[k::n], cases[k::n], cases[k::n]) for k in range(n)]
    rows = _rows(f"{n} patient folds", judge(coco, t1c, flair, patient_folds, args.epochs, args.repeats), members)
    out = [c for c in cases if c.split("_")[1] == args.leave_out]
    if out:
        print(f"institution {args.leave_out} left out ({len(out)} T1 contrast volumes)", flush=True)
        # the judged FLAIR volumes' patients' T1 contrast volumes are left out too
        institution_folds = [(flair_cases[k::2], out if k == 0 else [], out + flair_cases[k::2]) for k in range(2)]
        judged = judge(coco, t1c, flair, institution_folds, args.epochs, args.repeats)
        rows += _rows(f"{args.leave_out} left out", judged, members)
    for row in rows:
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
