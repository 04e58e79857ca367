"""The ``brainseg`` command: a thin layer over the bundle and the package.

    brainseg check-data SPLIT_DIR
    brainseg train --dataset-dir ROOT --output-dir RUN
    brainseg train --recipe --dataset-dir ROOT --output-dir RUN [--tumor-free-split DIR] [--tumor-box-split DIR]
        [--resume]
    brainseg evaluate SPLIT_DIR --output-dir OUT [--outlines DIR] [--min-confidence X]
    brainseg segment INPUT... --output-dir OUT [--min-confidence X]
    brainseg unpack ZIP --dest DIR --sha256 HEX

On failure each subcommand prints one line naming the cause and exits with a non-zero
code; ``--debug`` shows the traceback instead. Long runs show their progress on stderr (a bar
with the time left on a terminal, a line now and then otherwise) and end with a short summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A failure to report as one line (no traceback)."""


def _category_map(text: str | None) -> dict | None:
    from scripts.coco import TooLongInteger, json_int
    from scripts.errors import short_repr

    if text is None:
        return None
    try:
        value = json.loads(text, parse_int=json_int)  # a 100,000-digit number stays a value the checks name
    except json.JSONDecodeError as e:
        raise CommandError(f"--category-map: not valid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise CommandError("--category-map: must be a JSON object such as '{\"Tumor\": 1}'")
    for key, label in value.items():
        if isinstance(label, TooLongInteger):
            raise CommandError(
                f"--category-map: the label of {short_repr(key)} has {label.digits} digits: labels are 0 or 1"
            )
        if isinstance(label, bool) or not isinstance(label, int):
            raise CommandError(
                f"--category-map: the label of {short_repr(key)} must be an integer, got {short_repr(label)}"
            )
        if label.bit_length() > 31:
            raise CommandError(
                f"--category-map: the label of {short_repr(key)} is {short_repr(label)}: labels are 0 or 1"
            )
    # digits name a category id; more than 19 of them name no 64-bit id, and stay a name
    return {(int(k) if k.isdigit() and len(k) <= 19 else k): v for k, v in value.items()}


#: The most digits a count option (--epochs, --batch-size) is read with: Python converts at most 4300.
MAX_OPTION_DIGITS = 18


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse names the option in its error)."""
    from scripts.errors import short_repr

    digits = text.strip().lstrip("+-").lstrip("0")
    if digits.isdigit() and len(digits) > MAX_OPTION_DIGITS:
        raise argparse.ArgumentTypeError(f"a number of {len(digits)} digits: too large")
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short_repr(text)} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{short_repr(text)}: must be at least 1")
    return value


CONFIG_IS_CODE = "(repeatable). A config file is code: MONAI runs its $ expressions. Use only files you trust."


def _device(option: str, text: str | None):
    """``--device`` as a ``torch.device`` object this machine has: user text never becomes a config expression,
    and a device it lacks is named before any work, not by torch half-way (:func:`scripts.devices.check_device`)."""
    if text is None:
        return None
    from scripts.devices import check_device

    try:
        return check_device(text, f"leave out {option} (the bundle's choice) or use {option} cpu", what=option)
    except ValueError as e:
        raise CommandError(str(e)) from None


def _config_literal(option: str, value: str) -> str:
    """A string that goes into a bundle config as plain text.

    MONAI evaluates a config string starting with ``$`` as Python and resolves one starting
    with ``@`` or ``%`` as a reference: such a value from the command line would run as code.
    """
    if isinstance(value, str) and value.startswith(("$", "@", "%")):
        raise CommandError(f"{option} {value!r}: may not start with $, @ or % (the bundle config would run it)")
    return value


def _max_label(args: argparse.Namespace) -> int | None:
    """The largest label the bundle's network learns: check-data refuses a map the model could not use."""
    from brainseg_monai.bundle_code import default_bundle_dir
    from scripts.coco import bundle_max_label

    return bundle_max_label(getattr(args, "bundle_dir", None) or default_bundle_dir())


def _print_problems(problems: Sequence[Any]) -> None:
    for p in problems:
        print(p, file=sys.stderr)


# -- check-data --------------------------------------------------------------------------


def cmd_check_data(args: argparse.Namespace) -> int:
    from scripts.coco import validate_split

    category_map = _category_map(args.category_map)
    problems = validate_split(args.split_dir, category_map, max_label=_max_label(args))
    errors = [p for p in problems if p.severity == "error"]
    _print_problems(problems)
    warnings = len(problems) - len(errors)
    counts = _split_counts(args.split_dir, category_map)
    counted = f"{counts}; " if counts else ""
    if errors:
        print(f"{args.split_dir}: {counted}{len(errors)} error(s), {warnings} warning(s)", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.split_dir}: {counted}OK ({warnings} warning(s))")
    return EXIT_OK


def _split_counts(split: str, category_map: dict | None) -> str | None:
    """The split's counts, "12 images, 14 tumor annotations, 3 tumor-free images"; None when its file is unreadable.

    Counted from the JSON alone (no image is opened): the annotations are those the category map
    makes tumors, a tumor-free image one without any of them.
    """
    from scripts.coco import ANNOTATION_FILE, load_coco_json, resolve_category_map

    try:
        data = load_coco_json(Path(split) / ANNOTATION_FILE)
        labels = resolve_category_map(data["categories"], category_map)
        tumors = [a for a in data["annotations"] if labels.get(int(a["category_id"]), 0)]
        annotated = {str(a["image_id"]) for a in tumors}
        free = sum(str(im["id"]) not in annotated for im in data["images"])
        n_images = len(data["images"])
    except Exception:  # noqa: BLE001 - a broken file: its problems are listed already, the counts are left out
        return None
    return f"{n_images} images, {len(tumors)} tumor annotations, {free} tumor-free images"


# -- train -------------------------------------------------------------------------------


def _bundle_dir(args: argparse.Namespace) -> str:
    from brainseg_monai.bundle_code import default_bundle_dir

    bundle = os.path.abspath(args.bundle_dir or default_bundle_dir())
    if not os.path.isfile(os.path.join(bundle, "configs", "train.json")):
        raise CommandError(f"{bundle}: not a brainseg bundle (configs/train.json missing)")
    return bundle


RECIPE_ONLY = (
    ("--tumor-free-split", "tumor_free_split"),
    ("--tumor-box-split", "tumor_box_split"),
    ("--epochs-scale", "epochs_scale"),
    ("--stages", "stages"),
)


def cmd_train(args: argparse.Namespace) -> int:
    if args.recipe:
        return _train_recipe(args)
    for option, name in RECIPE_ONLY:
        if getattr(args, name):
            raise CommandError(f"{option}: only with --recipe")
    from monai.bundle import ConfigWorkflow

    from scripts.coco import split_dir, validate_split

    bundle = _bundle_dir(args)
    category_map = _category_map(args.category_map)
    for option, value in (("--train-split", args.train_split), ("--val-split", args.val_split)):
        _config_literal(option, value)  # they go into the config as text
    device = _device("--device", args.device)
    # Validate both splits before anything is built: training never starts on bad data.
    failed = False
    for split in (args.train_split, args.val_split):
        problems = validate_split(split_dir(args.dataset_dir, split), category_map, max_label=_max_label(args))
        _print_problems(problems)
        failed |= any(p.severity == "error" for p in problems)
    if failed:
        raise CommandError(f"{args.dataset_dir}: the dataset has errors (listed above); training not started")
    for extra in args.config:
        if not os.path.isfile(extra):
            raise CommandError(f"--config {extra}: file not found")
    reads = {
        "--dataset-dir": args.dataset_dir,
        "--train-split": split_dir(args.dataset_dir, args.train_split),
        "--val-split": split_dir(args.dataset_dir, args.val_split),
        "--config": args.config,
    }
    _check_output_dir(args.output_dir, reads, bundle)
    out = Path(args.output_dir).resolve()
    _check_training_data(args, out, category_map)
    # absolute paths start with "/": of the texts below only the split names could look like config code
    overrides: dict[str, Any] = {
        "bundle_root": bundle,
        "dataset_dir": os.path.abspath(args.dataset_dir),
        "train_split": args.train_split,
        "val_split": args.val_split,
        "ckpt_dir": str(out / "models"),
        "output_dir": str(out / "eval"),
        "category_map": category_map,
        "resume": bool(args.resume),
        "progress_bar": sys.stderr.isatty(),
        "debug": bool(args.debug),  # the bundle's one-line errors, or the tracebacks of --debug
    }
    if args.epochs is not None:
        overrides["train#trainer#max_epochs"] = args.epochs
    if device is not None:
        overrides["device"] = device  # an object, not text for a $ expression
    workflow = ConfigWorkflow(
        config_file=[os.path.join(bundle, "configs", "train.json"), *map(os.path.abspath, args.config)],
        meta_file=os.path.join(bundle, "configs", "metadata.json"),
        logging_file=os.path.join(bundle, "configs", "logging.conf"),
        workflow_type="train",
        **overrides,
    )
    from brainseg_monai.training import training_workflow
    from scripts.handlers import ProgressHandler

    # epochs and the time left on stderr (ignite's bar, on a terminal, shows the iterations of one epoch)
    progress = ProgressHandler("train", "epoch")
    try:
        with training_workflow(workflow) as trainer:
            progress.attach(trainer)  # the instance run() runs
            workflow.run()
    finally:
        progress.close()
    model = out / "models" / "model.pt"
    print(f"best model: {model}" if model.is_file() else f"no model saved in {out / 'models'}")
    return EXIT_OK


def _check_training_data(args: argparse.Namespace, out: Path, category_map: dict | None) -> None:
    """``--resume`` goes on only with the data the run was trained on; a new run records its data.

    The record (:mod:`brainseg_monai.run_record`) is written when a run starts in a folder without weights;
    a folder holding weights is left to the bundle's refusal (:class:`~scripts.handlers.ExistingWeightsGuard`),
    and one in use by another run to its lock, with their records untouched.
    """
    from brainseg_monai.recipe import _held_by
    from brainseg_monai.run_record import RunDataError, check_training_data, training_data, write_training_data

    data = training_data(args.dataset_dir, args.train_split, args.val_split, category_map)
    models = out / "models"
    if _held_by(models) is not None:
        return  # another run trains here: the bundle's lock refuses this one, naming it
    if args.resume:
        try:
            note = check_training_data(out, data)
        except RunDataError as e:
            raise CommandError(f"{e}; training not started") from None
        if note:
            print(note, file=sys.stderr)
    elif not any((models / name).exists() for name in ("model.pt", "checkpoint_latest.pt")):
        write_training_data(out, data)


def _train_recipe(args: argparse.Namespace) -> int:
    """``brainseg train --recipe``: every stage of the shipped recipe (:mod:`brainseg_monai.recipe`)."""
    from brainseg_monai.recipe import RecipeError, run_recipe

    if args.epochs is not None:
        raise CommandError("--epochs: not with --recipe (each stage has its own); use --epochs-scale")
    bundle = _bundle_dir(args)
    category_map = _category_map(args.category_map)
    for option, value in (("--train-split", args.train_split), ("--val-split", args.val_split)):
        _config_literal(option, value)  # they go into the config as text
    device = _device("--device", args.device)
    for extra in args.config:
        if not os.path.isfile(extra):
            raise CommandError(f"--config {extra}: file not found")
    try:
        run_recipe(
            args.dataset_dir,
            args.output_dir,
            tumor_free_splits=args.tumor_free_split,
            tumor_box_splits=args.tumor_box_split,
            resume=args.resume,
            device=device,
            epochs_scale=1.0 if args.epochs_scale is None else args.epochs_scale,
            stages=args.stages.split(",") if args.stages is not None else None,
            bundle_dir=bundle,
            extra_configs=args.config,
            category_map=category_map,
            train_split=args.train_split,
            val_split=args.val_split,
            overrides={"debug": True} if args.debug else None,
        )
    except RecipeError as e:
        raise CommandError(str(e)) from None
    return EXIT_OK


def _positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    import math

    from scripts.errors import short_repr

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short_repr(text)} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{short_repr(text)}: must be a number above 0")
    return value


def _confidence(text: str) -> float:
    """An argparse type: a confidence in [0, 1) (at 1 no component could ever count as a tumor)."""
    from scripts.errors import short_repr

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{short_repr(text)} is not a number") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{short_repr(text)}: must be at least 0 and below 1")
    return value


MIN_CONFIDENCE_HELP = (
    "operating point: a component counts as a tumor from this confidence on, in [0, 1) (default: the bundle's "
    "min_confidence, in configs/inference.json); lower finds more tumors and more false ones. Candidates below it "
    "down to possible_min_confidence are shown as possible tumors; that bound is lowered to X when it is above X"
)


# -- evaluate ----------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from brainseg_monai.metrics import PER_IMAGE_FILE, evaluate_split
    from scripts.coco import validate_split

    # Check the split before anything is written: a bad split leaves no output folder behind.
    problems = validate_split(args.split_dir, _category_map(args.category_map), max_label=_max_label(args))
    _print_problems(problems)
    if any(p.severity == "error" for p in problems):
        raise CommandError(f"{args.split_dir}: the split has errors (listed above); nothing evaluated")
    if args.train_log and not os.path.isdir(args.train_log):
        raise CommandError(f"--train-log {args.train_log}: folder not found")
    device = _device("--device", args.device)
    _unpack_bundle_zip(args)
    _check_output_dir(
        args.output_dir, [args.split_dir, args.outlines, args.model, args.train_log, *args.config], args.bundle_dir
    )
    try:
        evaluation = evaluate_split(
            args.split_dir,
            args.output_dir,
            bundle_dir=args.bundle_dir,
            ckpt_path=args.model,
            config_files=args.config,
            device=device,
            outlines_dir=args.outlines,
            category_map=_category_map(args.category_map),
            overlays=args.overlays,
            show_progress=True,
            overrides={**_operating_point(args, "train.json", "evaluate.json"), "debug": bool(args.debug)},
            train_log=args.train_log,
        )
    except ValueError as e:
        raise CommandError(_with_fitting_config(e, args)) from None
    out = Path(args.output_dir)
    _print_table(evaluation.rows)
    summary = evaluation.summary
    if args.outlines:
        matched = summary.get("n_outlines") or 0
        if matched == 0:
            print(
                f"WARNING --outlines {args.outlines}: no outline matches an image of the split "
                "(expected <image stem>.png): no outline Dice reported",
                file=sys.stderr,
            )
        elif matched < summary["n_images"]:
            print(f"--outlines: outlines for {matched} of {summary['n_images']} images", file=sys.stderr)
    _warn_unusual(evaluation.rows, out / PER_IMAGE_FILE)
    sys.stderr.flush()  # the warnings before the summary, on a terminal where both streams meet
    for line in _evaluation_summary(summary, out, args):
        print(line)
    return EXIT_OK


def _evaluation_summary(summary: dict[str, Any], out: Path, args: argparse.Namespace) -> list[str]:
    """What ``evaluate`` says at the end, for a person: the verdicts, the misses, the main figures, the files.

    Every figure is in ``metrics_summary.json``; these few lines are the ones to read first.
    """
    from brainseg_monai.metrics import GALLERY_FILE, MASKS_DIR, OVERLAYS_DIR, PER_IMAGE_FILE, SUMMARY_FILE
    from scripts.tumor_report import tumor_count_summary

    n = summary["n_images"]
    possible = summary.get("n_images_possible_tumor", 0)
    lines = [
        f"{tumor_count_summary(summary['n_images_tumor_found'], n, possible=possible)}; "
        f"nothing found on {summary.get('n_images_nothing_shown', n - summary['n_images_tumor_found'] - possible)}"
    ]
    checks = []
    if summary.get("n_tumor_images"):
        checks.append(
            f"of the {summary['n_tumor_images']} images with an annotated tumor, "
            f"{summary.get('tumor_images_nothing_shown', 0)} show nothing"
        )
        at_tumor = summary.get("tumor_images_found_at_tumor")
        if at_tumor is not None:
            # a tumor drawn elsewhere on the slice says "tumor" and still leaves the tumor unmarked
            checks[-1] += f"; at the annotated tumor itself, {at_tumor} show a tumor"
            nothing = summary.get("tumor_images_nothing_shown_at_tumor")
            if nothing is not None:
                checks[-1] += f" and {nothing} nothing"
    if summary.get("n_tumor_free_images"):
        checks.append(
            f"of the {summary['n_tumor_free_images']} tumor-free images, "
            f"{summary.get('tumor_free_images_with_fp', 0)} show a tumor"
        )
    if checks:
        lines.append("; ".join(checks))
    figures = [
        f"{label} {summary[key]:.3f}"
        for key, label in (
            ("dice_mean", "Dice"),
            ("iou_mean", "IoU"),
            ("detection_f1", "detection F1"),
            ("bbox_AP50", "box AP50"),
        )
        if isinstance(summary.get(key), (int, float))
    ]
    if figures:
        lines.append(", ".join(figures) + " (masks against the COCO annotations)")
    if args.outlines and isinstance(summary.get("outline_dice_mean"), (int, float)):
        lines.append(f"outline Dice {summary['outline_dice_mean']:.3f} (mean over {summary['n_outlines']} outlines)")
    files = [PER_IMAGE_FILE, SUMMARY_FILE, f"{MASKS_DIR}/"]
    files += [GALLERY_FILE] if (out / GALLERY_FILE).is_file() else []
    # written only when asked for: one left by an earlier evaluation describes that one, not this run
    optional = {"training_curves.png": bool(args.train_log), f"{OVERLAYS_DIR}/": bool(args.overlays)}
    files += [name for name, made in optional.items() if made]
    lines.append(f"files in {out}: {', '.join(files)}")
    earlier = [name for name, made in optional.items() if not made and (out / name.rstrip("/")).exists()]
    if earlier:
        lines.append(f"from an earlier evaluation, not this one: {', '.join(earlier)} in {out}")
    return lines


#: More unusual inputs than this are counted and the first of them named, not listed one per line.
MAX_LISTED_UNUSUAL = 5


def _warn_unusual(rows: Sequence[dict], table: Path) -> None:
    """One warning per image the input check found unlike the training slices (a count and the first few past
    :data:`MAX_LISTED_UNUSUAL`): their figures may mean nothing, as ``segment`` says of each such input."""
    from scripts.tumor_report import UNUSUAL_INPUT_WARNING

    unusual = [_shown(str(row["file_name"])) for row in rows if row.get("input_unusual")]
    if len(unusual) <= MAX_LISTED_UNUSUAL:
        for name in unusual:
            print(f"WARNING {name} {UNUSUAL_INPUT_WARNING}", file=sys.stderr)
        return
    first = ", ".join(unusual[:MAX_LISTED_UNUSUAL])
    print(
        f"WARNING {len(unusual)} images look unlike the T1 contrast MRI slices the model was trained on, their "
        f"results may mean nothing: {first} and {len(unusual) - MAX_LISTED_UNUSUAL} more (input_unusual in {table})",
        file=sys.stderr,
    )


def _print_table(rows: Sequence[dict]) -> None:
    """One line per image: the figures of its row and its verdict (tumor, possible tumor, NO TUMOR FOUND)."""
    from scripts.verdict import NO_TUMOR, verdict_of

    cols = [c for c in ("dice", "iou", "box_iou", "outline_dice", "tumor_score") if rows and c in rows[0]]
    print(f"{'image':<48} " + " ".join(f"{c:>12}" for c in cols) + "  verdict")
    for row in rows:
        cells = " ".join(f"{row[c]:>12.3f}" if isinstance(row[c], (int, float)) else f"{'-':>12}" for c in cols)
        verdict = verdict_of([1] if row.get("tumor_found") else [], [1] if row.get("possible_tumor") else [])
        print(f"{row['file_name'][:48]:<48} {cells}  {verdict.upper() if verdict == NO_TUMOR else verdict}")


# -- segment -----------------------------------------------------------------------------


def _expand_inputs(inputs: Sequence[str]) -> list[str]:
    from scripts.io import MEDICAL_SUFFIXES, PLAIN_IMAGE_SUFFIXES, list_images

    files: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = list_images(item, PLAIN_IMAGE_SUFFIXES + MEDICAL_SUFFIXES, series=True)
            if not found and len(inputs) > 1:  # named, it is an input: never dropped without a word
                suffixes = ", ".join(PLAIN_IMAGE_SUFFIXES + MEDICAL_SUFFIXES)
                raise CommandError(
                    f"{item}: no images in this folder (files ending in {suffixes}; DICOM files need their .dcm suffix)"
                )
            files.extend(found)
        elif os.path.exists(item):
            files.append(item)
        else:
            raise CommandError(f"{item}: no such file or folder")
    if not files:
        raise CommandError(f"no images found in {', '.join(inputs)}")
    return files


def _check_output_dir(output_dir: str, inputs: Any, bundle: str | None = None) -> None:
    """Refuse, before any work, an output folder that could overwrite or mix with an input, then create it.

    Every file or folder the command reads (images, splits, outlines, weights, configs, the bundle's own
    folders) must lie outside ``output_dir``, and ``output_dir`` must not lie in a folder the command
    reads: no command writes onto one of its inputs (:func:`scripts.io.check_output_dir`, the rule the
    bundle's configs apply too).

    Args:
        output_dir: ``--output-dir``.
        inputs: what the command reads, paths or ``{what: path}`` (None entries skipped).
        bundle: the bundle the command runs (``--bundle-dir``, default: the shipped one).
    """
    from brainseg_monai.bundle_code import default_bundle_dir
    from scripts.io import check_output_dir

    try:
        check_output_dir(output_dir, inputs, "--output-dir", bundle or default_bundle_dir())
    except ValueError as e:
        raise CommandError(str(e)) from None
    out = Path(output_dir).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(f"--output-dir {output_dir}: cannot create ({e.strerror})") from None
    # os.access says yes to root whatever the mode bits; only a real write answers for a
    # read-only mount, an immutable folder or a full disk
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise CommandError(f"--output-dir {output_dir}: not writable ({e.strerror})") from None


def _load_predictor(predictor_class, args: argparse.Namespace, device, overrides: dict[str, Any] | None = None):
    """The bundle's predictor; weights that do not fit get a one-line error naming a config that fits them."""
    try:
        return predictor_class(
            args.bundle_dir, ckpt_path=args.model, device=device, config_files=args.config, overrides=overrides
        )
    except ValueError as e:
        raise CommandError(_with_fitting_config(e, args)) from None


def _with_fitting_config(error: ValueError, args: argparse.Namespace) -> str:
    """The error's message; for weights that do not fit, with the ``--config`` that fits them."""
    message = str(error)
    if "do not fit" not in message:
        return message
    fits = _configs_that_fit(args)
    if fits and fits[0] is None:
        return f"{message} (the bundle's own network fits them: leave out --config)"
    return f"{message} (--config {fits[0]} fits them)" if fits else message


def _configs_that_fit(args: argparse.Namespace) -> list[str | None]:
    """The override files beside the bundle and in the repository whose network the weights fit.

    None first when the bundle's own network (no override) fits them.
    """
    import torch
    from monai.bundle import ConfigParser

    from brainseg_monai.bundle_code import default_bundle_dir
    from scripts.handlers import safe_load, weights_mismatch

    bundle = Path(args.bundle_dir or default_bundle_dir())
    weights = Path(args.model) if args.model else bundle / "models" / "model.pt"
    try:
        state = safe_load(weights, map_location="cpu")
    except Exception:  # noqa: BLE001 - unreadable weights: no hint, the first error stands
        return []
    state = state.get("model", state) if isinstance(state, dict) else state
    workflows = {"inference.json", "train.json", "evaluate.json", "metadata.json"}
    candidates = sorted({*bundle.glob("configs/*.json"), *(bundle.parent / "configs").glob("*.json")})
    candidates = [None] + [c for c in candidates if c.name not in workflows]
    fits: list[str | None] = []
    for candidate in candidates:
        try:
            overrides = json.loads(candidate.read_text()) if candidate else {"network_def": None}
            if not any(str(k).startswith("network_def") for k in overrides):
                continue
            parser = ConfigParser()
            parser.read_config([str(bundle / "configs" / "inference.json"), *([str(candidate)] if candidate else [])])
            parser["device"] = torch.device("cpu")
            if weights_mismatch(parser.get_parsed_content("network_def"), state) is None:
                fits.append(str(candidate) if candidate else None)
        except Exception:  # noqa: BLE001 - a config that cannot build a network simply does not fit
            continue
    return fits


def _check_distinct_outputs(files: Sequence[str], plain_ext: str) -> None:
    from scripts.io import check_distinct_masks

    try:
        check_distinct_masks(files, plain_ext)
    except ValueError as e:
        raise CommandError(str(e).replace("different output folders", "different --output-dir folders")) from None


def _shown(path: str) -> str:
    """A file name as printed on one line: quoted when it holds a newline or another control character."""
    return path if path.isprintable() else repr(path)


def _unpack_bundle_zip(args: argparse.Namespace) -> None:
    """``--bundle-zip Z --sha256 H``: check and unpack Z into a temporary folder, use it as --bundle-dir."""
    if not getattr(args, "bundle_zip", None):
        return
    import tempfile

    from brainseg_monai.bundle_zip import unpack_bundle

    if args.bundle_dir:
        raise CommandError("--bundle-zip and --bundle-dir: give one of them")
    if not args.sha256:
        raise CommandError("--bundle-zip needs --sha256 (the zip's published sha256): a bundle is code")
    args.unpacked = tempfile.TemporaryDirectory(prefix="brainseg_bundle_")
    args.bundle_dir = str(unpack_bundle(args.bundle_zip, Path(args.unpacked.name) / "bundle", args.sha256))


def _in_zip_terms(message: str, args: argparse.Namespace) -> str:
    """A message about the bundle of ``--bundle-zip``, naming the user's zip and member instead of the temporary copy.

    ``/tmp/brainseg_bundle_x/bundle/my_bundle/models/model.pt: model weights not found`` is said as
    ``bundle.zip (member my_bundle/models/model.pt): model weights not found``: the temporary folder is gone
    when the message is read, and the user knows the zip, not it.
    """
    import re

    unpacked = getattr(args, "unpacked", None)
    if unpacked is None:
        return message
    root = os.path.join(unpacked.name, "bundle")

    def member(match: re.Match) -> str:
        inside = match.group(0)[len(root) :].lstrip("/\\")
        return f"{args.bundle_zip} (member {inside})" if inside else str(args.bundle_zip)

    return re.sub(re.escape(root) + r"[^\s:'\"]*", member, message)


def _already_done(path: str, args: argparse.Namespace, reported: dict[str, dict]) -> bool:
    """``--skip-existing``: whether every output of this input is there from an earlier run.

    Its mask, a volume's per-slice report (``<stem>_slices.csv``), its overlay when ``--overlays``
    asks for them (``<stem>.png``, or a volume's ``<stem>_slice<k>.png``) and its row in the earlier
    run's tumor report (``reported``, by file name): an input missing any of them is segmented
    again, so that a rerun completes what an interrupted one left.
    """
    import glob

    from scripts.io import is_medical_image, mask_output_path
    from scripts.tumor_report import slice_report_path

    medical = is_medical_image(path)
    row = reported.get(os.path.basename(os.path.normpath(path)))
    if row is None:
        return False
    mask = mask_output_path(path, args.output_dir, ".nii.gz" if medical else args.format)
    if not os.path.exists(mask):
        return False
    volume = row.get("n_slices") or row.get("slices_with_tumor")  # the latter: a report from before n_slices
    if volume and not os.path.exists(slice_report_path(mask)):
        return False
    if args.overlays:
        overlay = Path(mask_output_path(path, Path(args.output_dir) / "overlays", ".png"))
        slices = f"{glob.escape(str(overlay.parent))}/{glob.escape(overlay.stem)}_slice[0-9]*.png"
        if not (overlay.exists() or (medical and glob.glob(slices))):
            return False
    return True


def _segment_one(predictor, path: str, args: argparse.Namespace, progress=None) -> tuple[str, dict, str]:
    """Segment one input and write its mask; returns the mask's path, the input's tumor report row and how a
    medical input was cut where not as it lies (:meth:`~scripts.volumes.VolumeResult.cut_note`; "" otherwise).

    ``progress`` is called with the fraction of a volume's slices done.
    """
    from brainseg_monai.report import overlay_caption
    from scripts.io import is_medical_image, mask_output_path, write_mask
    from scripts.tumor_report import tumor_row
    from scripts.verdict import png_mask
    from scripts.volumes import segment_medical_file

    name = os.path.basename(os.path.normpath(path))
    if is_medical_image(path):
        target = mask_output_path(path, args.output_dir, ".nii.gz")
        result = segment_medical_file(predictor, path, target, batch_size=args.batch_size, progress=progress)
        if args.overlays:
            # the slices as the model saw them: a sagittal or coronal volume's axial slices, with square pixels
            slices, masks = result.planes(result.array), result.planes(result.mask, labels=True)
            _volume_overlays(path, slices, masks, result.slice_reports, Path(args.output_dir) / "overlays")
        return result.mask_path, result.row, result.cut_note()
    target = mask_output_path(path, args.output_dir, args.format)
    prediction = predictor.predict_file(path, details=True)
    # the label map: 1 tumor, 2 possible tumor (PNG: 255 and 128)
    labels = prediction.labels
    write_mask(png_mask(labels) if target.lower().endswith(".png") else labels, target, scale=1)
    if args.overlays:
        from brainseg_monai.report import single_overlay
        from scripts.io import read_grey

        grey = read_grey(path)  # the grey the model saw
        caption = overlay_caption(name, prediction.verdict, prediction.tumor_score)
        single_overlay(
            grey, labels, mask_output_path(path, Path(args.output_dir) / "overlays", ".png"), caption=caption
        )
    return (
        target,
        tumor_row(
            name,
            prediction.tumor_score,
            prediction.components,
            prediction.input_unusual,
            prediction.possible_components,
        ),
        "",
    )


def _volume_overlays(
    path: str, slices: Sequence[Any], masks: Sequence[Any], reports: Sequence[dict], folder: Path
) -> list[str]:
    """Overlays of a NIfTI/NRRD/DICOM input: ``<stem>.png`` for a 2D one; for a volume, one
    ``<stem>_slice<k>.png`` per slice with a tumor or a possible tumor (the middle slice when there is
    none), each captioned with the slice's verdict and score."""
    from brainseg_monai.report import overlay_caption, single_overlay
    from scripts.io import mask_output_path, to_grey

    def grey(s):
        return to_grey(s[None])[0]

    name = os.path.basename(os.path.normpath(path))
    if len(slices) == 1:
        caption = overlay_caption(name, reports[0]["verdict"], reports[0]["tumor_score"])
        return [single_overlay(grey(slices[0]), masks[0], mask_output_path(path, folder, ".png"), caption=caption)]
    picked = [k for k, m in enumerate(masks) if m.any()] or [len(slices) // 2]
    stem = Path(mask_output_path(path, folder, ".png")).stem
    return [
        single_overlay(
            grey(slices[k]),
            masks[k],
            folder / f"{stem}_slice{k:03d}.png",
            caption=overlay_caption(name, reports[k]["verdict"], reports[k]["tumor_score"], slice_index=k),
        )
        for k in picked
    ]


class _SliceProgress:
    """The progress callback of one input: moves the run's bar through a volume slice by slice.

    :func:`~scripts.volumes.segment_medical_file` reports the fraction of slices done after each
    batch of ``batch_size`` slices, so the first fraction below 1 gives the volume's slice count.
    A 2D input calls nothing; :meth:`finish` moves the bar to the input's end either way.
    """

    def __init__(self, progress: Any, name: str, batch_size: int) -> None:
        self.progress, self.name, self.batch_size = progress, name, batch_size
        self.start = progress.done  # the inputs done before this one
        self.slices: int | None = None

    def __call__(self, fraction: float) -> None:
        if self.slices is None and 0 < fraction < 1:
            self.slices = round(self.batch_size / fraction)
        note = f"{self.name} slice {round(fraction * self.slices)} of {self.slices}" if self.slices else self.name
        self.progress.set(self.start + fraction, note=note)

    def finish(self) -> None:
        self.progress.set(self.start + 1, note="")


def _operating_point(args: argparse.Namespace, *workflow: str) -> dict[str, float]:
    """``--min-confidence X`` as config overrides, objects (never config text): ``min_confidence`` X, and
    ``possible_min_confidence`` lowered to X when the run's is above it (a possible tumor lies below the
    operating point: the bundle refuses a lower bound above it).

    Args:
        args: the command's options (``--min-confidence``, ``--bundle-dir``, ``--config``).
        workflow: the bundle's config files the run reads before ``--config`` (``"inference.json"``).
    """
    value = getattr(args, "min_confidence", None)
    if value is None:
        return {}
    from monai.bundle import ConfigParser

    from brainseg_monai.bundle_code import default_bundle_dir

    bundle = os.path.abspath(args.bundle_dir or default_bundle_dir())
    overrides = {"min_confidence": value}
    try:
        parser = ConfigParser()
        files = [os.path.join(bundle, "configs", name) for name in workflow]
        parser.read_config([*files, *map(os.path.abspath, args.config)])
        parser["bundle_root"] = bundle
        possible = parser.get_parsed_content("possible_min_confidence") if "possible_min_confidence" in parser else None
    except Exception:  # noqa: BLE001 - unreadable: lower it anyway, the only value sure to fit
        possible = 1.0
    if possible is not None and float(possible) > value:
        overrides["possible_min_confidence"] = value
    return overrides


def cmd_segment(args: argparse.Namespace) -> int:
    from scripts.handlers import Progress
    from scripts.predictor import BundlePredictor
    from scripts.tumor_report import (
        SLICE_REPORT_SUFFIX,
        TUMOR_REPORT_FILE,
        UNUSUAL_INPUT_WARNING,
        is_volume_row,
        read_tumor_report,
        row_summary,
        tumor_summary,
        write_tumor_report,
    )
    from scripts.verdict import NO_TUMOR

    files = _expand_inputs(args.inputs)
    _check_distinct_outputs(files, args.format)
    _unpack_bundle_zip(args)  # a refused zip leaves nothing behind, not even the output folder
    device = _device("--device", args.device)  # a device this machine lacks: named before the output folder exists
    _check_output_dir(args.output_dir, [*args.inputs, args.model, *args.config], args.bundle_dir)
    predictor = _load_predictor(BundlePredictor, args, device, _operating_point(args, "inference.json"))
    report_path = Path(args.output_dir) / TUMOR_REPORT_FILE
    # the earlier runs' rows, kept for every input not segmented again now: a second run into the folder adds to
    # its report, never drops the rows of masks already there (read first: a file that is no report stops here)
    earlier = read_tumor_report(report_path) if report_path.is_file() else []
    reported = {str(r["file_name"]): r for r in earlier}
    this_run: list[dict] = []  # the rows of this run's inputs, for its summary: segmented now or skipped
    failures: list[str] = []
    rows: list[dict] = []
    skipped = 0
    progress = Progress(len(files), "segment", "image")
    try:
        for path in files:
            if args.skip_existing and _already_done(path, args, reported):
                skipped += 1
                this_run.append(reported[os.path.basename(os.path.normpath(path))])
                progress.update(1)
                continue
            slices = _SliceProgress(progress, os.path.basename(os.path.normpath(path)), args.batch_size)
            try:
                target, row, cut = _segment_one(predictor, path, args, slices)
            except Exception as e:  # noqa: BLE001 - keep going past a bad file, report it
                if args.debug:
                    raise
                failures.append(path)
                message = _one_line(e)
                if message.startswith(f"{path}: "):  # the reader names the file already
                    message = message[len(path) + 2 :]
                progress.write(f"FAILED {_shown(path)}: {message}", sys.stderr)
                continue
            finally:
                slices.finish()
            rows.append(row)
            this_run.append(row)
            # stream: a caller sees each mask as soon as it is written, one per line (a newline in a name is quoted)
            progress.write(_shown(target), sys.stdout)
            # how a volume was cut, where not as it lies: its axial slices along J, rectangular pixels made square
            said = f"{row_summary(row)} (tumor score {row['tumor_score']:.2f}" + (f"; {cut})" if cut else ")")
            progress.write(f"{_shown(path)}: {said}", sys.stderr)
            if row["input_unusual"]:
                progress.write(f"WARNING {_shown(path)} {UNUSUAL_INPUT_WARNING}", sys.stderr)
    finally:
        progress.close()
        fresh = {r["file_name"] for r in rows}
        rows = [r for r in earlier if r["file_name"] not in fresh] + rows  # every mask there keeps its row
        # also when interrupted (Ctrl-C, SIGTERM): the masks written so far have their rows, and a rerun
        # with --skip-existing finds them done
        report = write_tumor_report(rows, report_path) if rows else None
    done = len(files) - len(failures) - skipped
    already = f", {skipped} already done (--skip-existing)" if skipped else ""
    print(f"segmented {done} of {len(files)} image(s) into {args.output_dir}{already}", file=sys.stderr)
    if this_run:
        nothing = sum(row["verdict"] == NO_TUMOR for row in this_run)
        volumes = any(map(is_volume_row, this_run))
        per_slice = f"; per slice: <volume>{SLICE_REPORT_SUFFIX} beside each volume's mask" if volumes else ""
        kept = len(rows) - len(this_run)
        others = f" (and {kept} earlier row{'s' if kept != 1 else ''} of other inputs)" if kept > 0 else ""
        print(
            f"{tumor_summary(this_run)}; nothing found on {nothing}; per-image report: {report}{others}{per_slice}",
            file=sys.stderr,
        )
    if failures:
        print(f"{len(failures)} failed: {', '.join(map(_shown, failures))}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# -- unpack ------------------------------------------------------------------------------


def cmd_unpack(args: argparse.Namespace) -> int:
    from brainseg_monai.bundle_zip import unpack_bundle

    print(unpack_bundle(args.zip, args.dest, args.sha256))
    return EXIT_OK


# -- package -----------------------------------------------------------------------------


def cmd_package(args: argparse.Namespace) -> int:
    from brainseg_monai.package import package_bundle, update_large_files_hash

    bundle = _bundle_dir(args)
    if args.update_hash:
        print(f"large_files.yml: sha256 {update_large_files_hash(bundle)}", file=sys.stderr)
    named = {"name": args.name} if args.name else {}
    out = package_bundle(bundle, args.output, allow_no_weights=args.allow_no_weights, **named)
    print(out)
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    """The innermost cause's message (config evaluation wraps the real error), first line."""
    from scripts.errors import error_lines

    return error_lines(error)[0]


def _add_bundle_zip_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle-zip", help="bundle zip to use (checked against --sha256, unpacked to a temporary folder)")
    p.add_argument("--sha256", help="expected sha256 of --bundle-zip")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brainseg", description="Brain tumor segmentation on 2D MRI slices (MONAI).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on failure")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check-data", help="validate a COCO split folder (images + _annotations.coco.json)")
    p.add_argument("split_dir", help="split folder, e.g. DATASET/train")
    p.add_argument("--category-map", help="JSON object: category id or name -> label (default: Tumor -> 1)")
    p.set_defaults(func=cmd_check_data)

    p = sub.add_parser(
        "train",
        help="train the bundle's U-Net on a Roboflow/COCO dataset root (--recipe: every stage of the shipped recipe)",
    )
    p.add_argument("--dataset-dir", required=True, help="dataset root holding train/ and valid/ split folders")
    p.add_argument(
        "--output-dir",
        required=True,
        help="run folder: models/ (model.pt, checkpoint_latest.pt) and eval/; with --recipe one such folder per "
        "stage, OUTPUT_DIR/<stage>/, and the bundle's weights files in OUTPUT_DIR/bundle_models/",
    )
    p.add_argument("--bundle-dir", help="bundle folder (default: the shipped bundle)")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        help="extra override JSON layered on train.json (with --recipe: after each stage's configs) " + CONFIG_IS_CODE,
    )
    p.add_argument("--epochs", type=_positive_int, help="number of epochs (train#trainer#max_epochs), at least 1")
    p.add_argument("--train-split", default="train", help="training split folder under --dataset-dir (default: train)")
    p.add_argument("--val-split", default="valid", help="validation split folder under --dataset-dir (default: valid)")
    p.add_argument("--category-map", help="JSON object: category id or name -> label (default: Tumor -> 1)")
    p.add_argument("--device", help="cpu, cuda, cuda:1... (default: CUDA when present)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR/models/checkpoint_latest.pt (with --recipe: the interrupted stage, "
        "from OUTPUT_DIR/<stage>/models/checkpoint_latest.pt)",
    )
    p.add_argument(
        "--recipe",
        action="store_true",
        help="retrain the shipped recipe, every stage in order (box, outline, robust, free, tumor_boxes, "
        "cascade), each from the one before; stages already done in OUTPUT_DIR are skipped",
    )
    p.add_argument(
        "--tumor-free-split",
        action="append",
        default=[],
        metavar="DIR",
        help="with --recipe: a COCO split folder of real tumor-free slices (images, no annotation) for the free "
        "and tumor_boxes stages (repeatable); without it both are skipped",
    )
    p.add_argument(
        "--tumor-box-split",
        action="append",
        default=[],
        metavar="DIR",
        help="with --recipe: a COCO split folder of other sources' tumor slices, each with its tumor box, for the "
        "tumor_boxes stage (repeatable; benchmarks/make_lgg_splits.py writes one); without it that stage is skipped",
    )
    p.add_argument(
        "--epochs-scale",
        type=_positive_float,
        metavar="F",
        help="with --recipe: multiply every stage's epochs by F (rounded, at least 1), e.g. 0.1 for a short trial",
    )
    p.add_argument(
        "--stages",
        metavar="NAMES",
        help="with --recipe: comma-separated stages to run, e.g. box,outline (default: all); "
        "the stages they start from must be done already",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="segment a COCO split and measure against its boxes (and true outlines)")
    p.add_argument("split_dir", help="split folder with _annotations.coco.json")
    p.add_argument(
        "--output-dir",
        required=True,
        help="where metrics, masks and pictures go; each run replaces masks/ (and, with --overlays, overlays/) whole, "
        "and refuses to when they hold files an evaluation did not write",
    )
    p.add_argument("--outlines", help="folder of true tumor masks <stem>.png (0/255) to report outline Dice")
    p.add_argument(
        "--overlays", action="store_true", help="also write one overlay PNG per image into OUTPUT_DIR/overlays"
    )
    p.add_argument("--train-log", help="a training run's eval/ folder (TensorBoard logs): draw training_curves.png")
    p.add_argument("--bundle-dir", help="bundle folder (default: the shipped bundle)")
    p.add_argument("--model", help="weights to use instead of the bundle's models/model.pt")
    p.add_argument(
        "--config", action="append", default=[], help="override JSON layered on inference.json " + CONFIG_IS_CODE
    )
    p.add_argument("--category-map", help="JSON object: category id or name -> label (default: Tumor -> 1)")
    p.add_argument("--device", help="cpu, cuda... (default: CUDA when present)")
    p.add_argument("--min-confidence", type=_confidence, metavar="X", help=MIN_CONFIDENCE_HELP)
    _add_bundle_zip_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "segment",
        help="segment images (JPG/PNG, NIfTI, NRRD, DICOM) into masks",
        description="Segment each input into a mask in OUTPUT_DIR, named after the input's stem. A mask is a label "
        "map: in a PNG 255 is tumor, 128 possible tumor (a candidate below the operating point, --min-confidence) "
        "and 0 the rest; in a NIfTI mask (NIfTI, NRRD and DICOM inputs, or --format .nii.gz) 1 is tumor, 2 possible "
        "tumor. OUTPUT_DIR/tumor_report.csv has one row per input: its verdict (tumor, possible tumor, no tumor "
        "found), tumor score, the areas found, whether the input looks unlike the training slices (input_unusual) "
        "and, for a volume, on how many slices a tumor was found.",
    )
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--output-dir", required=True, help="where masks go (named after each input's stem)")
    p.add_argument("--format", default=".png", choices=[".png", ".nii.gz"], help="mask format for JPG/PNG inputs")
    p.add_argument("--overlays", action="store_true", help="also write overlay PNGs into OUTPUT_DIR/overlays")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose mask already exists")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="slices per batch for 3D volumes, at least 1")
    p.add_argument("--bundle-dir", help="bundle folder (default: the shipped bundle)")
    p.add_argument("--model", help="weights to use instead of the bundle's models/model.pt")
    p.add_argument(
        "--config", action="append", default=[], help="override JSON layered on inference.json " + CONFIG_IS_CODE
    )
    p.add_argument("--device", help="cpu, cuda... (default: CUDA when present)")
    p.add_argument("--min-confidence", type=_confidence, metavar="X", help=MIN_CONFIDENCE_HELP)
    _add_bundle_zip_options(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("unpack", help="check a bundle zip's sha256 and unpack it (never outside --dest)")
    p.add_argument("zip", help="the bundle zip")
    p.add_argument("--dest", required=True, help="folder to unpack into (must not exist, or be empty)")
    p.add_argument("--sha256", required=True, help="the zip's expected sha256 (64 hex digits); refused if it differs")
    p.set_defaults(func=cmd_unpack)

    packaged = (
        "zip the bundle folder for the MONAI Model Zoo: its configs, its own code (scripts/), docs, sample data, "
        "license and weights (models/model.pt and the alternative weights present); not the brainseg application"
    )
    p = sub.add_parser("package", help=packaged, description=packaged[0].upper() + packaged[1:] + ".")
    p.add_argument("--output", help="zip file, or folder for <name>_v<version>.zip (default: current folder)")
    p.add_argument("--bundle-dir", help="bundle folder (default: the shipped bundle)")
    p.add_argument("--name", help="bundle folder name inside the zip (default: brain_tumor_mri_2d_segmentation)")
    p.add_argument("--allow-no-weights", action="store_true", help="package even without models/model.pt")
    p.add_argument("--update-hash", action="store_true", help="first write model.pt's sha256 into large_files.yml")
    p.set_defaults(func=cmd_package)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the program is: the run unwinds as from Ctrl-C (temporary files removed)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one unwinding: a second SIGTERM does not cut the clean-up short
    raise _Terminated()


def _catch_sigterm() -> Any:
    """Turn SIGTERM into :class:`_Terminated` while a command runs; returns what restores the handler before it.

    Killed by the default SIGTERM, a run would leave its hidden temporary files (a staged evaluation, a
    half-written overlay or zip); raised as an exception, the ``finally`` blocks of the atomic writes remove them.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # only the main thread may set handlers (a caller running main() in a thread keeps its own)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _let_pool_workers_finish(timeout: float = 30.0) -> None:
    """Wait for the thread-pool workers still busy to finish the item they hold (at most ``timeout`` seconds).

    An interrupt unwinds the main thread while a pool thread may be inside a torch operation: MONAI's
    ``CacheDataset`` reads and transforms the images in a ``ThreadPool``, whose ``terminate`` empties the
    queue but does not wait for the item in hand. Exiting under it aborts the process ("terminate called
    without an active exception", no exit code of ours) instead of ending it cleanly.
    """
    import threading
    import time
    from multiprocessing.dummy import DummyProcess  # what a ThreadPool's workers are

    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if isinstance(thread, DummyProcess) and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``brainseg`` command; returns the exit code (130 after Ctrl-C, 143 after SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    restore_sigterm = _catch_sigterm()
    try:
        return args.func(args)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, _Terminated)
        _let_pool_workers_finish()
        print(f"brainseg: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as e:  # noqa: BLE001 - one line unless --debug
        if args.debug:
            raise
        from scripts.errors import error_lines

        for line in error_lines(e):  # one per problem of a COCO split, else one
            print(f"brainseg {args.command}: error: {_in_zip_terms(line, args)}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        unpacked = getattr(args, "unpacked", None)
        if unpacked is not None:
            unpacked.cleanup()
        restore_sigterm()


if __name__ == "__main__":
    sys.exit(main())
