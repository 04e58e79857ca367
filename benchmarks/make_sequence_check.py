"""Train the bundle's sequence check: T1 contrast slices against slices of another sequence.

    python benchmarks/make_sequence_check.py DATASET/train --t1c LGG_DIR/t1c --other LGG_DIR/flair
        --cases runs/lgg/cases.json [--cases-key train] [--bundle bundle] [--epochs N] [--seed 0]

The T1 contrast examples are every slice of the COCO split (read as inference reads an image: the
bundle's ``load_image`` and ``image_transforms``) and every slice of the T1 contrast volumes
``<case>.nii.gz`` of the cases listed under ``--cases-key``; the other-sequence examples are every
slice of the listed cases' volumes in ``--other`` (cases without one there are skipped). Volumes
are cut into slices as inference reads them (``make_input_reference.volume_slices``). Only the
listed cases are read: cases held apart for measuring must never train it. Trains
:class:`scripts.sequence_check.SequenceClassifier` (:func:`scripts.sequence_check.train_sequence_classifier`,
about 5 minutes on 2 CPU cores) and writes its weights atomically to the bundle's
``sequence_ckpt_path`` (``models/sequence_check.pt``). Measure it with
``benchmarks/input_check_volumes.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from make_input_reference import training_volumes, volume_slices
from monai.bundle import ConfigParser
from monai.transforms import Compose

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)
from scripts.coco import coco_to_datalist
from scripts.io import atomic_output
from scripts.sequence_check import sequence_input, train_sequence_classifier


def listed_volumes(folder: str, cases_file: str, key: str) -> list[str]:
    """The volumes in ``folder`` of the cases listed under ``key`` (cases without one there are skipped).

    Raises:
        FileNotFoundError: none of the listed cases has a volume in ``folder``.
    """
    with open(cases_file, encoding="utf-8") as f:
        cases = json.load(f).get(key) or []
    paths = [p for p in (os.path.join(folder, f"{case}.nii.gz") for case in cases) if os.path.isfile(p)]
    if not paths:
        raise FileNotFoundError(f"{folder}: no volume of the cases listed under {key!r} in {cases_file}")
    return paths


def bundle_inputs(bundle: str) -> tuple[ConfigParser, Compose, Compose]:
    """The bundle's inference config, its image loader (``load_image``, ``image_transforms``), ``slice_transforms``."""
    parser = ConfigParser()
    parser.read_config(os.path.join(bundle, "configs", "inference.json"))
    parser["bundle_root"] = bundle
    load = Compose([parser.get_parsed_content("load_image"), *parser.get_parsed_content("image_transforms")])
    return parser, load, Compose(parser.get_parsed_content("slice_transforms"))


def shrunk(slices) -> np.ndarray:
    """Preprocessed slices as one (N, S, S) stack of the sequence classifier's input."""
    return np.concatenate([sequence_input(s)[:, 0].numpy() for s in slices])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("split_dir", help="the COCO training split (T1 contrast slices)")
    ap.add_argument("--t1c", required=True, help="folder of T1 contrast volumes <case>.nii.gz")
    ap.add_argument("--other", required=True, help="folder of other-sequence volumes <case>.nii.gz (e.g. FLAIR)")
    ap.add_argument("--cases", required=True, help="JSON file listing the training cases")
    ap.add_argument("--cases-key", default="train", help="the key of the training cases' list in --cases")
    ap.add_argument("--bundle", default="bundle")
    ap.add_argument("--epochs", type=int, help="epochs of every member (default: each member's own)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    parser, load, slice_transforms = bundle_inputs(args.bundle)
    try:
        t1c_paths = training_volumes(args.t1c, args.cases, args.cases_key)
        other_paths = listed_volumes(args.other, args.cases, args.cases_key)
    except (OSError, ValueError) as e:
        sys.exit(f"make_sequence_check: {e}")
    coco = shrunk(load({"image": r["image"]})["image"] for r in coco_to_datalist(args.split_dir))
    t1c = np.concatenate([coco, *(shrunk(volume_slices(p, slice_transforms)) for p in t1c_paths)])
    other = np.concatenate([shrunk(volume_slices(p, slice_transforms)) for p in other_paths])
    print(f"T1 contrast: {len(coco)} split slices + {len(t1c) - len(coco)} slices of {len(t1c_paths)} volumes; "
          f"other sequence: {len(other)} slices of {len(other_paths)} volumes", flush=True)  # fmt: skip

    def progress(member: int, epoch: int, loss: float) -> None:
        print(f"member {member + 1}, epoch {epoch + 1}: loss {loss:.4f}", flush=True)

    model = train_sequence_classifier(t1c, other, seed=args.seed, epochs=args.epochs, progress=progress)
    target = parser.get_parsed_content("sequence_ckpt_path")
    with atomic_output(target) as tmp:
        torch.save(model.state_dict(), tmp)
    print(json.dumps({"path": target, "t1c_slices": len(t1c), "other_slices": len(other), "epochs": args.epochs}))


if __name__ == "__main__":
    main()
