"""Background inference process: ``PythonSlicer worker.py --input in.npy --output out.npz ...``.

The Slicer module saves the input volume's voxels (``(k, j, i)`` or ``(k, j, i, c)``) to a
``.npy`` file, starts this script with Slicer's Python (``PythonSlicer``), reads its progress
from stdout and loads the result back into the scene with
:func:`BrainTumorSegmentationLib.apply_prediction` on the main thread. Cancel = terminate
the process; the output file only appears (atomically) when everything succeeded.

Protocol on stdout, one message per line:
    ``BUNDLE <name and version>``    the model is loaded
    ``PROGRESS <fraction>``          0.0 .. 1.0
    ``DONE <output path>``           success (exit code 0); the .npz holds ``mask``, ``input_unusual``
                                     (per slice), ``slice_rows`` (the per-slice report, JSON text) and
                                     ``probability`` when asked
    ``ERROR <message>``              failure (exit code 2 for bad input/model/device, 1 otherwise)

Any other line (``device: cpu`` after ``BUNDLE``, warnings of the libraries, a traceback) is log
output, which the parent shows to the user and logs.

Needs no ``slicer`` module: only numpy and brainseg-monai (torch, MONAI).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence


def _import_inference():
    """Import the package's numpy-only module whether run as a script or as a module."""
    if __package__:
        from . import inference
    else:  # run as a script: import the package from its parent folder, not its modules as top-level names
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
        sys.path.insert(0, os.path.dirname(here))
        from BrainTumorSegmentationLib import inference
    return inference


def _say(*words: object) -> None:
    print(*words, flush=True)


def _comma_numbers(text: str, count: int, expected: str) -> list[float]:
    """``count`` comma-separated numbers, read with ``float`` only (never evaluated); an argparse error saying
    ``expected`` otherwise."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {len(values)}")
    return values


def _direction(text: str) -> list[list[float]]:
    """``--direction``: nine numbers, row by row."""
    values = _comma_numbers(text, 9, "nine comma-separated numbers")
    return [values[0:3], values[3:6], values[6:9]]


def _spacing(text: str) -> tuple[float, float, float]:
    """``--spacing``: three positive numbers, I, J, K."""
    values = _comma_numbers(text, 3, "three comma-separated numbers (I,J,K)")
    # float() also reads "nan" and "inf": a spacing must be a real length, or the planes' proportions are nonsense
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected three positive numbers (I,J,K), got {text!r}")
    return values[0], values[1], values[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help=".npy file with the volume's (k, j, i[, c]) voxels")
    p.add_argument("--output", required=True, help=".npz file to write (mask, and probability with --probability)")
    p.add_argument("--bundle-dir", default=None, help="MONAI bundle folder (default: the repo's bundle/)")
    p.add_argument("--ckpt-path", default=None, help="weights (default: <bundle>/models/model.pt)")
    p.add_argument("--config-file", action="append", default=[], help="extra config layered on inference.json")
    p.add_argument(
        "--device", default=None, help="auto, cpu, cuda, cuda:<index> or mps (default: auto, the bundle's choice)"
    )
    p.add_argument("--force-cpu", action="store_true", help="run on the CPU (as --device cpu)")
    p.add_argument("--axis", default=None, help="IJK axis to slice along: 0, 1, 2 or I, J, K (default: auto)")
    p.add_argument(
        "--direction",
        default=None,
        type=_direction,
        help="the volume's IJK-to-RAS direction matrix, nine comma-separated numbers row by row: "
        "its axial slices are cut as the bundle reads them from it",
    )
    p.add_argument(
        "--spacing",
        default=None,
        type=_spacing,
        help="the volume's voxel spacing, three comma-separated positive numbers I,J,K: planes with rectangular "
        "pixels are given to the network with square ones",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--probability", action="store_true", help="also output the tumor probability")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import numpy as np

        inference = _import_inference()
        device = inference.resolve_device(args.device, args.force_cpu)
        if device == "cpu":  # nothing of the run touches a GPU (libraries that probe CUDA on import included)
            os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        axis = None if args.axis in (None, "", "auto") else (int(args.axis) if args.axis.isdigit() else args.axis)
        array = np.load(args.input, allow_pickle=False)
        predictor = inference.load_predictor(args.bundle_dir, args.ckpt_path, args.config_file, device)
        _say("BUNDLE", getattr(predictor, "name", ""))
        _say(f"device: {getattr(predictor, 'device', device or 'auto')}")  # a log line: where the model runs
        reports: list = []
        volumes = inference.bundle_module("volumes", args.bundle_dir)
        # the direction tells the bundle's slice loop where the axial slices lie (bundles from 0.6.4 read it), the
        # spacing which planes have rectangular pixels; a bundle is given only what its loop takes
        geometry = inference.slice_loop_geometry(volumes, direction=args.direction, spacing=args.spacing)
        mask, probability = volumes.predict_volume(
            array,
            predictor,
            axis=axis,
            batch_size=args.batch_size,
            with_probability=args.probability,
            progress=lambda f: _say("PROGRESS", f"{f:.4f}"),
            slice_reports=reports,
            **geometry,
        )
        out = os.path.abspath(args.output)
        arrays = {"mask": mask, "input_unusual": np.array([r["input_unusual"] for r in reports], dtype=bool)}
        # the per-slice report as JSON text: read back without pickle, and never as code
        rows = inference.bundle_module("tumor_report", args.bundle_dir).slice_rows(reports)
        arrays["slice_rows"] = np.array(json.dumps(rows))
        if probability is not None:
            arrays["probability"] = probability
        with inference.bundle_module("io", args.bundle_dir).atomic_output(out) as tmp:
            np.savez(tmp, **arrays)
        _say("DONE", out)
        return 0
    except (ValueError, FileNotFoundError, ImportError) as e:
        _say("ERROR", " ".join(str(e).split()) or type(e).__name__)
        return 2
    except Exception as e:  # noqa: BLE001 - report anything to the parent, with the traceback on stderr
        traceback.print_exc()
        _say("ERROR", f"{type(e).__name__}: {' '.join(str(e).split())}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
