"""The shipped training recipe, every stage, as one resumable run: ``brainseg train --recipe``.

The shipped weights come from stages that each layer override files of the repository's
``configs/`` on the bundle's ``configs/train.json`` and start from the previous stage's model
(``bundle/docs/README.md``, "Training"):

====  ===========  =========================================================  ======  ==========
#     stage        configs layered on train.json                              epochs  starts from
====  ===========  =========================================================  ======  ==========
1     box          train_full                                                 40      (scratch)
2     outline      train_full, box_supervised                                 8       box
3     robust       train_full, box_supervised, robust_finetune                16      outline
4     free         robust's, real_tumor_free                                  8       robust
5     tumor_boxes  robust's, real_tumor_free, real_tumor_boxes                8       free
6     cascade      train_full, box_supervised, robust_finetune, cascade_train 40      robust
====  ===========  =========================================================  ======  ==========

``box`` makes the bundle's ``model_box.pt``, ``tumor_boxes`` its ``model.pt`` and ``cascade`` its
``model_outline.pt``. ``free`` adds real tumor-free slices (``tumor_free_splits``) and runs only
when some are given; ``tumor_boxes`` adds, beside them, other sources' tumor slices annotated
with boxes (``tumor_box_splits``) and runs only when both are given. A stage that does not run
passes on the model it would have started from: without tumor-box splits the free stage's model
is the final ``model.pt``, without either the robust stage's.

Each stage trains through MONAI's ``ConfigWorkflow`` as ``brainseg train`` does, into
``OUTPUT/<stage>/models`` and ``OUTPUT/<stage>/eval``, and writes ``OUTPUT/<stage>/done.json``
when it ends: a rerun skips the stages done, refuses to start over an interrupted one unless told
to ``resume`` it (from its ``checkpoint_latest.pt``), and ``OUTPUT/bundle_models`` gets the
bundle's three weights files at the end. ``benchmarks/gpu_session.py`` runs the same stages on a
GPU machine, one call per stage, with a time limit.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainseg_monai.training import training_workflow

if TYPE_CHECKING:  # torch is imported when a run starts: `brainseg --help` stays fast
    import torch

__all__ = [
    "BUNDLE_MODELS",
    "CONFIGS_DIR",
    "DONE_FILE",
    "OUTLINE_CONFIG",
    "RECIPE",
    "RecipeError",
    "RecipeResult",
    "Stage",
    "bundle_sources",
    "plan_stages",
    "run_recipe",
    "stage_epochs",
]

#: The repository's override files the stages layer on the bundle's train.json.
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
#: Written into a stage's folder when its run ended; a rerun skips the stage.
DONE_FILE = "done.json"
#: The folder of the bundle's weights files at the end: model_box.pt, model.pt, model_outline.pt.
BUNDLE_MODELS = "bundle_models"
#: An inference override (in BUNDLE_MODELS) that points the cascade at the retrained outline network.
OUTLINE_CONFIG = "outline_network.json"
LOG_FILE = "train.log"


@dataclass(frozen=True)
class Stage:
    """One training stage of the shipped recipe.

    Args:
        name: the stage's name, also its folder under the run's output folder.
        configs: override files of ``configs/`` layered, in order, on the bundle's ``train.json``.
        epochs: its epochs in the shipped (CPU) recipe; ``epochs_scale`` multiplies them.
        start_from: the stage whose ``model.pt`` it starts from (the bundle's ``pretrained`` id), or None.
        weights: the bundle file its model becomes (``""``: an intermediate model).
        share: its share of the time in a time-limited run (``benchmarks/gpu_session.py``).
        cuda_configs: override files layered after ``configs`` when training on CUDA only.
        needs_tumor_free: it trains on real tumor-free splits and runs only when some are given;
            skipped, its ``weights`` come from the stage it starts from.
        needs_tumor_boxes: likewise with splits of tumor slices annotated with boxes.
    """

    name: str
    configs: tuple[str, ...]
    epochs: int
    start_from: str | None
    weights: str
    share: float
    cuda_configs: tuple[str, ...] = ()
    needs_tumor_free: bool = False
    needs_tumor_boxes: bool = False


_ROBUST = ("train_full.json", "box_supervised.json", "robust_finetune.json")

#: The recipe of the shipped bundle (bundle/docs/README.md, "Training"), stage by stage, in order.
#: The box stage runs with the fast GPU override on CUDA; the others replace the transforms and
#: handlers that override changes, so they run with train.json's own pipeline (AMP on CUDA).
RECIPE: tuple[Stage, ...] = (
    Stage("box", ("train_full.json",), 40, None, "model_box.pt", 0.40, cuda_configs=("fast_gpu.json",)),
    Stage("outline", ("train_full.json", "box_supervised.json"), 8, "box", "", 0.12),
    Stage("robust", _ROBUST, 16, "outline", "", 0.24),
    Stage("free", (*_ROBUST, "real_tumor_free.json"), 8, "robust", "", 0.12, needs_tumor_free=True),
    Stage(
        "tumor_boxes",
        (*_ROBUST, "real_tumor_free.json", "real_tumor_boxes.json"),
        8,
        "free",
        "model.pt",
        0.12,
        needs_tumor_free=True,
        needs_tumor_boxes=True,
    ),
    Stage("cascade", (*_ROBUST, "cascade_train.json"), 40, "robust", "model_outline.pt", 0.24),
)
_BY_NAME = {stage.name: stage for stage in RECIPE}


class RecipeError(Exception):
    """Why the recipe cannot run or go on, in one line."""


@dataclass
class RecipeResult:
    """What a recipe run did.

    Args:
        stages: per stage of the plan, its ``done.json`` record, with ``status`` ``"trained"``
            (this run) or ``"done earlier"`` (skipped).
        bundle_models: bundle file name -> its path in ``OUTPUT/bundle_models``.
        sources: bundle file name -> the stage whose model it is.
        missing: bundle files not assembled, with why.
    """

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    bundle_models: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


def stage_epochs(stage: Stage, epochs_scale: float = 1.0) -> int:
    """The stage's epochs times ``epochs_scale``, rounded, at least 1."""
    return max(1, round(stage.epochs * epochs_scale))


def plan_stages(with_tumor_free: bool, with_tumor_boxes: bool = False) -> tuple[Stage, ...]:
    """The stages that run: all of :data:`RECIPE`, less those needing splits (tumor-free, tumor-box) not given."""
    return tuple(
        s
        for s in RECIPE
        if (with_tumor_free or not s.needs_tumor_free) and (with_tumor_boxes or not s.needs_tumor_boxes)
    )


def bundle_sources(plan: Sequence[Stage]) -> dict[str, str]:
    """Bundle file -> the stage of ``plan`` whose model becomes it.

    A stage left out of the plan (one whose splits were not given) passes on the model it would have
    started from: without tumor-box splits the free stage's model is ``model.pt``, without real
    tumor-free slices the robust stage's.
    """
    names = {s.name for s in plan}
    sources: dict[str, str] = {}
    for stage in RECIPE:
        if not stage.weights:
            continue
        source: Stage | None = stage
        while source is not None and source.name not in names:
            source = _BY_NAME.get(source.start_from) if source.start_from else None
        if source is not None:
            sources[stage.weights] = source.name
    return sources


# ----------------------------------------------------------------------------------------- helpers


def _say(text: str) -> None:
    print(text, flush=True)  # progress lines: shown as they happen, also when stdout is a pipe


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


class _NoConfigRootWarning(logging.Filter):
    """Drops MONAI's warning that the stage's configs lie outside the bundle's ``configs/``.

    The override files are the repository's, by design, and the metadata and logging files
    are passed explicitly, which is what that warning asks for.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Not all config files are in")


def _write_json(data: Any, path: Path) -> None:
    """Atomically: a run killed mid-write leaves no half file that a rerun would take for a finished stage."""
    from scripts.io import atomic_output

    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")


def _copy_atomic(src: Path, dst: Path) -> None:
    """Copy, unless ``dst`` already holds the same bytes; renamed into place so a reader never sees half a file."""
    from brainseg_monai.bundle_zip import sha256_file
    from scripts.io import atomic_output

    if dst.is_file() and dst.stat().st_size == src.stat().st_size and sha256_file(dst) == sha256_file(src):
        return
    with atomic_output(dst) as tmp:
        shutil.copyfile(src, tmp)


def _read_done(folder: Path) -> dict[str, Any] | None:
    """The stage's ``done.json`` when the stage finished and its weights are there, else None."""
    done = folder / DONE_FILE
    if not (done.is_file() and (folder / "models" / "model.pt").is_file()):
        return None
    try:
        record = json.loads(done.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: treated as not finished, so it is resumed or refused, never trusted
    return record if isinstance(record, dict) else None


def _started(folder: Path) -> bool:
    """A run of the stage made weights or a checkpoint here (and did not finish, when not done)."""
    models = folder / "models"
    return (models / "checkpoint_latest.pt").is_file() or (models / "model.pt").is_file()


def _check_data(
    dataset_dir: Path,
    splits: Sequence[str],
    tumor_free_splits: Sequence[Path],
    tumor_box_splits: Sequence[Path],
    category_map: Mapping[str | int, int] | None,
    max_label: int | None,
) -> None:
    """Every problem of the dataset's splits, the tumor-free and the tumor-box splits on stderr, one line each.

    Raises:
        RecipeError: any of them has errors (nothing has been trained or written).
    """
    from scripts.coco import ANNOTATION_FILE, DataProblem, load_coco_json, split_dir, validate_split

    failed = []
    checks = [(Path(split_dir(dataset_dir, s)), category_map) for s in dict.fromkeys(splits)]
    # the config reads the extra splits with the default category map ("Tumor" -> 1)
    checks += [(s, None) for s in [*tumor_free_splits, *tumor_box_splits]]
    for folder, mapping in checks:
        problems = validate_split(folder, mapping, max_label=max_label)
        if folder in [*tumor_free_splits, *tumor_box_splits] and not any(p.severity == "error" for p in problems):
            data = load_coco_json(folder / ANNOTATION_FILE)
            annotations = data.get("annotations") or []
            if folder in tumor_free_splits and annotations:  # they would be trained on as tumors
                message = f"a tumor-free split has no annotations, this one has {len(annotations)}"
                problems.append(DataProblem("error", str(folder / ANNOTATION_FILE), "", "annotations", message))
            if folder in tumor_box_splits:
                boxed = {a.get("image_id") for a in annotations}
                bare = [im.get("file_name") for im in data.get("images") or [] if im.get("id") not in boxed]
                if bare:  # an image without its box would be trained on as tumor-free
                    message = f"every image of a tumor-box split needs a tumor box; {len(bare)} have none: {bare[0]}"
                    problems.append(DataProblem("error", str(folder / ANNOTATION_FILE), "", "annotations", message))
        for problem in problems:
            print(problem, file=sys.stderr)
        if any(p.severity == "error" for p in problems):
            failed.append(str(folder))
    if failed:
        raise RecipeError(f"{', '.join(failed)}: errors (listed above); no stage started")


class _StageWatch:
    """Counts a stage's finished epochs and, with a time limit, ends the training in time.

    After each epoch the run stops when the next epoch (as long as the longest so far) would not
    end within ``time_limit_s``; during an epoch it stops once the limit has passed. The epochs
    finished keep their checkpoint and weights.
    """

    def __init__(self, time_limit_s: float | None) -> None:
        self.time_limit_s = time_limit_s
        self.began = time.monotonic()
        self.epoch_began = self.began
        self.longest = 0.0
        self.epochs_done = 0
        self.stopped_early = False

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        # attached after the config's handlers: on STARTED a resumed checkpoint is already loaded,
        # on EPOCH_COMPLETED the epoch's checkpoint is already saved
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if self.time_limit_s is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)

    def _started(self, engine: Any) -> None:
        self.epochs_done = engine.state.epoch

    def _epoch_started(self, engine: Any) -> None:
        self.epoch_began = time.monotonic()

    def _epoch_completed(self, engine: Any) -> None:
        now = time.monotonic()
        self.epochs_done = engine.state.epoch
        self.longest = max(self.longest, now - self.epoch_began)
        if (
            self.time_limit_s is not None
            and engine.state.epoch < engine.state.max_epochs
            and now + self.longest > self.began + self.time_limit_s
        ):
            self._stop(engine)

    def _iteration_completed(self, engine: Any) -> None:
        if time.monotonic() > self.began + self.time_limit_s:
            self._stop(engine)

    def _stop(self, engine: Any) -> None:
        if not self.stopped_early:
            logging.getLogger(__name__).info("time limit of %.0f s: the stage stops here", self.time_limit_s)
        self.stopped_early = True
        engine.terminate()


# ----------------------------------------------------------------------------------------- the run


def run_recipe(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    tumor_free_splits: Sequence[str | os.PathLike] = (),
    tumor_box_splits: Sequence[str | os.PathLike] = (),
    resume: bool = False,
    device: torch.device | str | None = None,
    epochs_scale: float = 1.0,
    stages: Sequence[str] | None = None,
    bundle_dir: str | os.PathLike | None = None,
    configs_dir: str | os.PathLike | None = None,
    extra_configs: Sequence[str | os.PathLike] = (),
    category_map: Mapping[str | int, int] | None = None,
    train_split: str = "train",
    val_split: str = "valid",
    overrides: Mapping[str, Any] | None = None,
    progress_bar: bool | None = None,
    time_limit_s: float | None = None,
) -> RecipeResult:
    """Train the recipe's stages into ``output_dir``, skipping those done, and assemble the bundle's weights.

    Args:
        dataset_dir: the COCO dataset root holding ``train_split`` and ``val_split``.
        output_dir: the run folder: ``<stage>/models``, ``<stage>/eval``, ``<stage>/done.json``,
            ``<stage>/train.log`` and, at the end, ``bundle_models/``.
        tumor_free_splits: COCO split folders of real tumor-free slices (images, no annotation)
            for the free and tumor_boxes stages; none: both are skipped.
        tumor_box_splits: COCO split folders of other sources' tumor slices, each image with its
            tumor boxes (``benchmarks/make_lgg_splits.py`` writes one), for the tumor_boxes
            stage; none: it is skipped and the free stage's model is ``model.pt``.
        resume: continue an interrupted stage from its ``checkpoint_latest.pt``; without it a
            stage that was started and did not finish is refused, never overwritten.
        device: the training device (default: the config's, CUDA when present).
        epochs_scale: multiplies every stage's epochs (rounded, at least 1).
        stages: the stages to run (default: all of the plan); those they start from must be done.
        bundle_dir: the bundle (default: the shipped one).
        configs_dir: the folder of the stages' override files (default: the repository's ``configs/``).
        extra_configs: override files layered after each stage's (e.g. another network or size).
        category_map: as ``brainseg train --category-map``.
        train_split: the training split's folder name under ``dataset_dir``.
        val_split: the validation split's folder name under ``dataset_dir``.
        overrides: more config ids to set in every stage (after everything else).
        progress_bar: ignite's per-epoch progress bar (default: when stderr is a terminal).
        time_limit_s: the seconds each stage may take; a stage stopped by it counts as done,
            with the epochs it finished (for a session with a deadline).

    Returns:
        What each stage did and where the bundle's weights files are.

    Raises:
        RecipeError: bad arguments or data, a stage interrupted without ``resume``, a stage's
            start missing, or a stage that ended without weights; one line.
    """
    import torch
    from monai.bundle import ConfigWorkflow

    from brainseg_monai.bundle_code import default_bundle_dir, use_bundle_scripts

    bundle = Path(bundle_dir or default_bundle_dir()).resolve()
    train_json = bundle / "configs" / "train.json"
    if not train_json.is_file():
        raise RecipeError(f"{bundle}: not a brainseg bundle (configs/train.json missing)")
    use_bundle_scripts(bundle)
    from scripts.coco import bundle_max_label

    configs = Path(configs_dir or CONFIGS_DIR).resolve()
    if not (isinstance(epochs_scale, (int, float)) and math.isfinite(epochs_scale) and epochs_scale > 0):
        raise RecipeError(f"epochs scale {epochs_scale!r}: must be a number above 0")
    free_splits = [Path(s).resolve() for s in tumor_free_splits]
    box_splits = [Path(s).resolve() for s in tumor_box_splits]
    extras = [Path(c).resolve() for c in extra_configs]
    for extra in extras:
        if not extra.is_file():
            raise RecipeError(f"--config {extra}: file not found")
    device = torch.device(device) if isinstance(device, str) else device
    on_cuda = (device.type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"

    plan = plan_stages(bool(free_splits), bool(box_splits))
    selected = _select(plan, stages, bool(free_splits), bool(box_splits))
    for stage in selected:
        for name in stage.configs + (stage.cuda_configs if on_cuda else ()):
            if not (configs / name).is_file():
                raise RecipeError(f"{configs / name}: the {stage.name} stage's config is missing")

    dataset = Path(dataset_dir).resolve()
    _check_data(dataset, (train_split, val_split), free_splits, box_splits, category_map, bundle_max_label(bundle))

    out = Path(output_dir).resolve()
    from scripts.coco import split_dir
    from scripts.io import check_output_dir

    reads = {
        "the dataset": dataset,
        "the train split": split_dir(dataset, train_split),
        "the val split": split_dir(dataset, val_split),
        "the tumor-free split": free_splits,
        "the tumor-box split": box_splits,
        "--config": extras,
    }
    try:
        check_output_dir(output_dir, reads, "--output-dir", bundle)
    except ValueError as e:
        raise RecipeError(str(e)) from None
    _check_states(out, plan, selected, resume)
    _check_training_data(out, dataset, train_split, val_split, category_map, resume)
    result = RecipeResult()
    numbers = {stage.name: k + 1 for k, stage in enumerate(RECIPE)}
    chosen = {s.name for s in selected}
    for stage in RECIPE:
        head = f"stage {numbers[stage.name]}/{len(RECIPE)} {stage.name}"
        if stage not in plan:
            if stages is None:
                source = bundle_sources(plan).get(stage.weights)
                because = f"the {source} stage's model becomes {stage.weights}" if source else "nothing replaces it"
                missing = "--tumor-free-split" if stage.needs_tumor_free and not free_splits else "--tumor-box-split"
                _say(f"{head}: skipped, no {missing} given ({because})")
            continue
        if stage.name not in chosen:
            continue
        folder = out / stage.name
        epochs = stage_epochs(stage, epochs_scale)
        done = _read_done(folder)
        if done is not None:
            _say(f"{head}: done earlier ({folder / DONE_FILE}), skipped")
            differs = _differs(done, epochs, stage, free_splits, box_splits)
            if differs:
                _say(f"  note: it was trained with {differs}; to train it again, delete {folder}")
            result.stages[stage.name] = {**done, "status": "done earlier"}
            continue
        record = _run_stage(
            stage,
            head,
            folder,
            out,
            epochs=epochs,
            train_json=train_json,
            configs=[configs / c for c in stage.configs + (stage.cuda_configs if on_cuda else ())] + extras,
            workflow_class=ConfigWorkflow,
            overrides={
                "bundle_root": str(bundle),
                "dataset_dir": str(dataset),
                "train_split": train_split,
                "val_split": val_split,
                "category_map": category_map,
                **({"device": device} if device is not None else {}),  # an object, not text for a $ expression
                **({"tumor_free_splits": [str(s) for s in free_splits]} if stage.needs_tumor_free else {}),
                **({"tumor_box_splits": [str(s) for s in box_splits]} if stage.needs_tumor_boxes else {}),
            },
            extra_overrides=overrides or {},
            resume=resume,
            progress_bar=sys.stderr.isatty() if progress_bar is None else progress_bar,
            time_limit_s=time_limit_s,
        )
        result.stages[stage.name] = {**record, "status": "trained"}
    _assemble(out, plan, result)
    _print_usage(out, result, extras)
    return result


def _select(
    plan: Sequence[Stage], stages: Sequence[str] | None, with_tumor_free: bool, with_tumor_boxes: bool
) -> list[Stage]:
    """The stages of ``plan`` named in ``stages`` (all when None), in the recipe's order."""
    if stages is None:
        return list(plan)
    names = [s.strip() for s in stages if s.strip()]
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown or not names:
        raise RecipeError(
            f"--stages {','.join(stages)}: {'unknown stage ' + ', '.join(unknown) if unknown else 'no stage named'}"
            f" (the stages: {','.join(_BY_NAME)})"
        )
    for name in names:
        stage = _BY_NAME[name]
        if stage.needs_tumor_free and not with_tumor_free:
            raise RecipeError(f"--stages: the {name} stage trains on real tumor-free slices: give --tumor-free-split")
        if stage.needs_tumor_boxes and not with_tumor_boxes:
            raise RecipeError(f"--stages: the {name} stage trains on boxed tumor slices: give --tumor-box-split")
    return [s for s in plan if s.name in names]


def _check_states(out: Path, plan: Sequence[Stage], selected: Sequence[Stage], resume: bool) -> None:
    """Before any training: no interrupted stage without ``resume``, every stage's start there or to be made.

    Raises:
        RecipeError: naming the stage and what to do.
    """
    chosen = {s.name for s in selected}
    for stage in selected:
        folder = out / stage.name
        owner = _held_by(folder / "models")
        if owner is not None:
            raise RecipeError(
                f"stage {stage.name} is being trained in {folder} by another run (process {owner}): wait for it to end"
            )
        if _read_done(folder) is None and _started(folder) and not resume:
            raise RecipeError(
                f"stage {stage.name} was started in {folder} and did not finish: add --resume to continue it "
                f"(or delete {folder} to train it again)"
            )
        start = stage.start_from
        if start and start not in chosen and _read_done(out / start) is None:
            raise RecipeError(
                f"stage {stage.name} starts from the {start} stage, which is not done in {out} "
                f"(no {out / start / DONE_FILE}): add {start} to --stages"
            )


def _check_training_data(
    out: Path,
    dataset: Path,
    train_split: str,
    val_split: str,
    category_map: Mapping[str | int, int] | None,
    resume: bool,
) -> None:
    """The recipe goes on in ``out`` only with the data its stages were trained on (:mod:`brainseg_monai.run_record`).

    Checked on every run, not only with ``resume``: a rerun reuses the stages done and trains the next ones
    from their models. A fresh folder gets the record.

    Raises:
        RecipeError: the data differ, each difference named.
    """
    from brainseg_monai.run_record import RunDataError, check_training_data, training_data

    data = training_data(dataset, train_split, val_split, category_map)
    try:
        note = check_training_data(out, data, "--resume" if resume else "a rerun of the recipe")
    except RunDataError as e:
        raise RecipeError(f"{e}; nothing trained") from None
    if note and any(_started(out / stage.name) or _read_done(out / stage.name) for stage in RECIPE):
        _say(note)


def _held_by(models: Path) -> str | None:
    """The process id in a checkpoint folder's training lock while another run holds it, else None.

    ``scripts.handlers.RunFolderLock`` holds the lock for a run's life; without this check a second
    recipe over a stage in training would be told to add ``--resume`` and then refused by the lock.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no lock to ask
        return None
    from scripts.handlers import RunFolderLock

    lock = models / RunFolderLock.LOCK_NAME
    if not lock.is_file():
        return None
    with open(lock, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return f.read().decode(errors="replace").strip() or "unknown"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def _differs(
    done: Mapping[str, Any], epochs: int, stage: Stage, free_splits: Sequence[Path], box_splits: Sequence[Path]
) -> str:
    """How a finished stage's recorded settings differ from this run's ('' when they do not)."""
    differences = []
    if done.get("epochs") != epochs:
        differences.append(f"{done.get('epochs')} epochs ({epochs} now)")
    if stage.needs_tumor_free and done.get("tumor_free_splits") != [str(s) for s in free_splits]:
        differences.append(f"the tumor-free splits {done.get('tumor_free_splits')}")
    if stage.needs_tumor_boxes and done.get("tumor_box_splits") != [str(s) for s in box_splits]:
        differences.append(f"the tumor-box splits {done.get('tumor_box_splits')}")
    return ", ".join(differences)


def _run_stage(
    stage: Stage,
    head: str,
    folder: Path,
    out: Path,
    *,
    epochs: int,
    train_json: Path,
    configs: Sequence[Path],
    workflow_class: Any,
    overrides: Mapping[str, Any],
    extra_overrides: Mapping[str, Any],
    resume: bool,
    progress_bar: bool,
    time_limit_s: float | None,
) -> dict[str, Any]:
    """One stage through MONAI's ``ConfigWorkflow``, then its ``done.json``; returns that record."""
    models = folder / "models"
    checkpoint = models / "checkpoint_latest.pt"
    resumed = resume and checkpoint.is_file()
    restart = resume and not resumed and (models / "model.pt").is_file()
    source = f"from {stage.start_from}" if stage.start_from else "from scratch"
    how = f", resuming {checkpoint}" if resumed else (", starting again (no checkpoint to resume)" if restart else "")
    _say(f"{head}: {_epochs(epochs)}, {source}{how}")
    settings: dict[str, Any] = {
        **overrides,
        "ckpt_dir": str(models),
        "output_dir": str(folder / "eval"),
        "resume": resumed,
        # a stopped stage without a checkpoint (killed between its weights and its checkpoint): its weights
        # are this stage's own, made by an earlier call of this recipe, so the guard may let them be replaced
        "overwrite_weights": restart,
        "progress_bar": progress_bar,
        "train#trainer#max_epochs": epochs,
    }
    if stage.start_from:
        settings["pretrained"] = str(out / stage.start_from / "models" / "model.pt")
    settings.update(extra_overrides)
    folder.mkdir(parents=True, exist_ok=True)
    quiet = _NoConfigRootWarning()
    monai_logger = logging.getLogger("monai.bundle.workflows")
    monai_logger.addFilter(quiet)
    try:
        workflow = workflow_class(
            config_file=[str(train_json), *map(str, configs)],
            meta_file=str(train_json.parent / "metadata.json"),
            logging_file=str(train_json.parent / "logging.conf"),
            workflow_type="train",
            **settings,
        )
    finally:
        monai_logger.removeFilter(quiet)
    # after the workflow applied the bundle's logging.conf (which resets the root logger's handlers)
    log_file = logging.FileHandler(folder / LOG_FILE, encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    logging.getLogger().addHandler(log_file)
    watch = _StageWatch(time_limit_s)
    began = time.time()
    try:
        with training_workflow(workflow) as trainer:  # finalized (TensorBoard writers closed) once built
            watch.attach(trainer)
            workflow.run()
            evaluator = workflow.parser.get_parsed_content("validate#evaluator")
            best = getattr(evaluator.state, "best_metric", None)
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
        del workflow
        gc.collect()  # the cached datasets of a stage are not kept through the next one
    weights = models / "model.pt"
    if not weights.is_file():
        raise RecipeError(f"stage {stage.name} ended without weights in {models} (its log: {folder / LOG_FILE})")
    seconds = time.time() - began
    record = {
        "stage": stage.name,
        "epochs": epochs,
        "epochs_done": watch.epochs_done,
        "stopped_early": watch.stopped_early,
        "seconds": round(seconds, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "start_from": stage.start_from,
        "configs": ["train.json", *(c.name for c in configs)],
        "tumor_free_splits": overrides.get("tumor_free_splits", []),
        "tumor_box_splits": overrides.get("tumor_box_splits", []),
        "resumed": resumed,
        "best_val_dice": float(best) if isinstance(best, (int, float)) and best >= 0 else None,
    }
    _write_json(record, folder / DONE_FILE)
    stopped = f", stopped by the time limit after {watch.epochs_done}" if watch.stopped_early else ""
    _say(f"{head}: done in {_duration(seconds)} ({_epochs(epochs)}{stopped}); weights {weights}")
    return record


def _assemble(out: Path, plan: Sequence[Stage], result: RecipeResult) -> None:
    """Copy each bundle file's model from the stage that makes it into ``OUTPUT/bundle_models``."""
    target = out / BUNDLE_MODELS
    for name, stage in bundle_sources(plan).items():
        folder = out / stage
        if _read_done(folder) is None:
            result.missing[name] = f"the {stage} stage is not done"
            continue
        _copy_atomic(folder / "models" / "model.pt", target / name)
        result.bundle_models[name] = target / name
        result.sources[name] = stage
    outline_config = target / OUTLINE_CONFIG
    if "model_outline.pt" in result.bundle_models:
        # the inference config reads the outline network from the bundle's models/: this points it here
        _write_json({"refine_ckpt_path": str(result.bundle_models["model_outline.pt"])}, outline_config)


def _print_usage(out: Path, result: RecipeResult, extras: Sequence[Path]) -> None:
    if not result.bundle_models:
        _say(f"no bundle weights yet: {'; '.join(f'{k}: {v}' for k, v in result.missing.items())}")
        return
    target = out / BUNDLE_MODELS
    made = ", ".join(f"{name} (the {result.sources[name]} stage's)" for name in result.bundle_models)
    _say(f"bundle weights in {target}: {made}")
    for name, why in result.missing.items():
        _say(f"  not there: {name} ({why})")
    if "model.pt" not in result.bundle_models:
        return
    options = f"--model {target / 'model.pt'}"
    if "model_outline.pt" in result.bundle_models:
        options += f" --config {target / OUTLINE_CONFIG}"
        _say("use them:")
    else:
        _say("use them (the outline network stays the bundle's own models/model_outline.pt):")
    same = "".join(f" --config {c}" for c in extras)  # the network and size they were trained with
    _say(f"  brainseg evaluate DATASET/valid --output-dir out/recipe_valid {options}{same}")
    _say(f"  brainseg segment IMAGES --output-dir masks {options}{same}")
    _say(f"  or copy {target}/*.pt into a copy of the bundle's models/ folder")
