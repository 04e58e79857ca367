"""Check what a training on a GPU machine brought back, measure it on the CPU, and put it in place.

    python benchmarks/gpu_accept.py FILES_AT [--part1 FILES_AT_1] [--dataset-dir DATASET] [--install]
        [--bundle-dir bundle] [--force]

``FILES_AT`` is the folder part 2's files came back into (``session_part2.json``, the
weights, ``logs.tar.gz``). In order:

1. every file ``session_part2.json`` lists is there with its sha256;
2. each weights file loads into the bundle's own network (``scripts.handlers.load_weights``:
   no pickled code, shapes named when they differ) and exports with MONAI's own
   ``ckpt_export`` (TorchScript), the check Model Zoo's CI runs;
3. the GPU-trained bundle (a temporary copy with the new weights) is evaluated here, on the CPU,
   on the whole valid split with its true outlines, through ``brainseg evaluate``'s code; the figures
   are printed beside the shipped bundle's ``metadata.json`` figures.

With ``--install`` the weights replace the bundle's, ``metadata.json`` gets the measured figures
and a changelog entry, and ``bundle/docs/README.md`` gets a table of the GPU run (device, times,
command, figures) between ``<!-- gpu-session -->`` markers. A model worse than the shipped one on
outline Dice or containment F1 is refused unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import brainseg_monai  # noqa: F401 - puts the bundle's code on sys.path (as `scripts`)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_session import RECIPE, SHARED_DATA, sha256  # noqa: E402

WEIGHTS = tuple(stage.weights for stage in RECIPE if stage.weights)
#: metadata.json eval_metrics key -> evaluation summary key.
FIGURES = {
    "valid_outline_dice_mean": "outline_dice_mean",
    "valid_outline_dice_median": "outline_dice_median",
    "valid_containment_f1": "containment_f1",
    "valid_fill_ratio_median": "fill_ratio_median",
    "valid_box_dice_mean": "dice_mean",
    "valid_detection_f1": "detection_f1",
    "valid_bbox_ap50": "bbox_AP50",
}
#: A replacement must not be worse than the shipped model on these (beyond this margin).
GUARDED = {"valid_outline_dice_mean": 0.005, "valid_containment_f1": 0.005}
MARKERS = ("<!-- gpu-session -->", "<!-- /gpu-session -->")


class Refused(Exception):
    """What came back cannot be used; the message says why."""


def check_files(files_at: Path) -> dict[str, Any]:
    # part 2 of a training on a GPU machine, or the dry run's single call (run --part all)
    session_file = next(
        (files_at / n for n in ("session_part2.json", "session_partall.json") if (files_at / n).is_file()), None
    )
    if session_file is None:
        raise Refused(f"{files_at}: no session_part2.json (is it the folder of part 2's files?)")
    session = json.loads(session_file.read_text())
    listed = session.get("files") or {}
    for name, digest in listed.items():
        path = files_at / name
        if not path.is_file():
            raise Refused(f"{path}: listed in {session_file.name} but not there")
        if sha256(path) != digest:
            raise Refused(f"{path}: sha256 differs from {session_file.name}'s (damaged in transfer?)")
    if "model.pt" not in listed:
        raise Refused(f"{files_at}: no model.pt came back (stages: {_statuses(session)})")
    return session


def _statuses(session: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v.get('status')}" for k, v in session.get("stages", {}).items())


def check_weights(bundle: Path, files_at: Path) -> list[str]:
    """Each weights file loads into the bundle's network and exports to TorchScript with MONAI's tool (called here,
    as ``python -m monai.bundle ckpt_export network_def ...`` calls it, without a new Python for each file)."""
    import torch
    from monai.bundle import ConfigParser, ckpt_export
    from scripts.handlers import load_weights

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = torch.device("cpu")
    parser.get_parsed_content("bundle_scripts")
    checked = []
    for name in WEIGHTS:
        path = files_at / name
        if not path.is_file():
            continue
        try:
            load_weights(parser.get_parsed_content("network_def", lazy=False), path, "cpu")  # a fresh network
        except (ValueError, FileNotFoundError) as e:
            raise Refused(str(e)) from None
        with tempfile.TemporaryDirectory() as tmp:
            exported = Path(tmp) / "model.ts"
            try:
                ckpt_export(
                    "network_def",
                    filepath=str(exported),
                    ckpt_file=str(path),
                    meta_file=str(bundle / "configs" / "metadata.json"),
                    config_file=str(bundle / "configs" / "inference.json"),
                    bundle_root=str(bundle),
                )
            except Exception as e:  # whatever MONAI's export raises, the file is refused by name
                raise Refused(f"{path}: MONAI's ckpt_export failed: {type(e).__name__}: {e}") from None
            if not exported.is_file():
                raise Refused(f"{path}: MONAI's ckpt_export wrote no {exported.name}")
        checked.append(name)
    return checked


def measure(bundle: Path, files_at: Path, dataset_dir: Path, work: Path) -> dict[str, Any]:
    """The GPU-trained bundle evaluated here on the whole valid split."""
    import torch

    from brainseg_monai.metrics import evaluate_split

    trial = work / "bundle"
    shutil.copytree(bundle, trial, ignore=shutil.ignore_patterns("eval", "*.ts"))
    for name in WEIGHTS:
        if (files_at / name).is_file():
            shutil.copy2(files_at / name, trial / "models" / name)
    outlines = dataset_dir / "valid_outlines"
    evaluation = evaluate_split(
        dataset_dir / "valid",
        work / "valid",
        bundle_dir=trial,
        device=torch.device("cpu"),
        outlines_dir=outlines if outlines.is_dir() else None,
        gallery=False,
    )
    return evaluation.summary


def comparison(shipped: dict[str, Any], summary: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(key, shipped.get(key), summary.get(source)) for key, source in FIGURES.items()]


def worse(rows: list[tuple[str, Any, Any]]) -> list[str]:
    return [
        f"{key} {new:.4f} < shipped {old:.4f}"
        for key, old, new in rows
        if key in GUARDED and old is not None and new is not None and new < old - GUARDED[key]
    ]


def session_table(
    session: dict[str, Any], part1: dict[str, Any] | None, rows: list[tuple[str, Any, Any]], n_images: int
) -> str:
    env = (part1 or session).get("stages", {}).get("environment", {})
    lines = [
        MARKERS[0],
        f"Training on a GPU ({env.get('device_name', 'GPU')}, torch {env.get('torch', '?')}, started "
        f"{session.get('started')}; GPU commands from `python benchmarks/gpu_session.py prepare`):",
        "",
        "| stage | status | epochs | time (s) | best val Dice |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, stage in session.get("stages", {}).items():
        if name.startswith("train_"):
            done = f"{stage.get('epochs_done')} of {stage.get('epochs_planned')}"
            lines.append(
                f"| {name[6:]} | {stage.get('status')} | {done} | {stage.get('wall_s')} | "
                f"{stage.get('best_val_dice')} |"
            )
    if part1:
        bench = part1.get("stages", {}).get("benchmarks", {})
        for variant, r in (bench.get("measure") or {}).items():
            lines.append(f"| benchmark {variant} | {r.get('images_per_s', 0):.0f} images/s | | | |")
    lines += [
        "",
        "| valid split (measured here, CPU, `benchmarks/gpu_accept.py`) | shipped | GPU-trained |",
        "| --- | --- | --- |",
    ]
    for key, old, new in rows:
        lines.append(f"| {key} | {old if old is None else round(old, 4)} | {new if new is None else round(new, 4)} |")
    lines.append(MARKERS[1])
    return "\n".join(lines)


def install(bundle: Path, files_at: Path, rows, table: str, session: dict[str, Any]) -> None:
    for name in WEIGHTS:
        if (files_at / name).is_file():
            shutil.copy2(files_at / name, bundle / "models" / name)
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    major, minor, _ = (int(v) for v in meta["version"].split("."))
    meta["version"] = f"{major}.{minor + 1}.0"
    stages = ", ".join(
        k[6:] for k, v in session.get("stages", {}).items() if k.startswith("train_") and v.get("status") == "ok"
    )
    meta["changelog"] = {
        meta["version"]: f"the shipped recipe trained on a GPU (stages: {stages})",
        **meta["changelog"],
    }
    for key, _, new in rows:
        if new is not None:
            meta["eval_metrics"][key] = round(float(new), 4)
    meta_file.write_text(json.dumps(meta, indent=4) + "\n")
    readme = bundle / "docs" / "README.md"
    text = readme.read_text()
    if MARKERS[0] in text and MARKERS[1] in text:
        start, end = text.index(MARKERS[0]), text.index(MARKERS[1]) + len(MARKERS[1])
        text = text[:start] + table + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n## GPU training\n\n" + table + "\n"
    readme.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files_at", type=Path, help="the folder of part 2's files")
    ap.add_argument("--part1", type=Path, default=None, help="the folder of part 1's files (for the benchmarks)")
    ap.add_argument("--dataset-dir", type=Path, default=SHARED_DATA)
    ap.add_argument("--bundle-dir", type=Path, default=REPO / "bundle")
    ap.add_argument("--install", action="store_true", help="put the weights, figures and table in place")
    ap.add_argument("--force", action="store_true", help="install even when worse than the shipped model")
    args = ap.parse_args(argv)
    try:
        session = check_files(args.files_at)
        part1 = None
        if args.part1 and (args.part1 / "session_part1.json").is_file():
            part1 = json.loads((args.part1 / "session_part1.json").read_text())
        checked = check_weights(args.bundle_dir, args.files_at)
        print(f"hashes match; weights load and export: {', '.join(checked)}")
        with tempfile.TemporaryDirectory() as tmp:
            summary = measure(args.bundle_dir, args.files_at, args.dataset_dir, Path(tmp))
        shipped = json.loads((args.bundle_dir / "configs" / "metadata.json").read_text()).get("eval_metrics", {})
        rows = comparison(shipped, summary)
        table = session_table(session, part1, rows, summary["n_images"])
        print(table)
        problems = worse(rows)
        if args.install:
            if problems and not args.force:
                raise Refused("not installed, worse than the shipped model: " + "; ".join(problems))
            install(args.bundle_dir, args.files_at, rows, table, session)
            print(f"installed into {args.bundle_dir}: weights, metadata.json figures, docs/README.md table")
        elif problems:
            print("worse than the shipped model: " + "; ".join(problems))
    except Refused as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
