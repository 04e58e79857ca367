"""Ignite handlers for checkpoints that a crash cannot corrupt and a resume can trust, and for progress.

MONAI's ``CheckpointSaver`` names interval checkpoints by epoch, keeps device tensors and
writes in place; the bundle needs a fixed-name latest state to resume from, a best model
that is a plain CPU state dict, and writes that are atomic. :class:`Progress` shows how far
a long run is, with the time left, as a bar on a terminal and as a line now and then in a log.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.handlers import MetricsSaver

from .config_values import switch
from .io import atomic_output, staged_outputs

__all__ = [
    "AtomicMetricsSaver",
    "BEST_METRIC_KEYS",
    "BestModelSaver",
    "EpochSeeder",
    "ExistingWeightsGuard",
    "Progress",
    "ProgressHandler",
    "RunFolderLock",
    "SafeCheckpointLoader",
    "TrainingStateLoader",
    "TrainingStateSaver",
    "cpu_state_dict",
    "load_weights",
    "weights_mismatch",
    "safe_load",
    "save_atomic",
]

# Evaluator state that must survive a resume so the best model is not overwritten by a worse one.
BEST_METRIC_KEYS = ("best_metric", "best_metric_epoch")


def cpu_state_dict(obj: Any) -> Any:
    """``obj.state_dict()`` (or ``obj`` itself) with every tensor moved to the CPU."""
    state = obj.state_dict() if hasattr(obj, "state_dict") else obj
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, Mapping):
        return {k: cpu_state_dict(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cpu_state_dict(v) for v in state)
    return state


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename onto it.

    Raises:
        OSError: the file could not be written, naming it and, when the disk is full, saying so
            (torch reports a full disk as ``[enforce fail at inline_container.cc...]``).
    """
    try:
        with atomic_output(path) as tmp:
            torch.save(obj, tmp)
    except RuntimeError as e:
        if not any(s in str(e) for s in ("enforce fail", "write failed", "PytorchStreamWriter")):
            raise
        folder = os.path.dirname(os.path.abspath(os.fspath(path)))
        free = shutil.disk_usage(folder).free if os.path.isdir(folder) else 0
        why = "the disk is full" if free < 64 * 2**20 else "the write failed"
        raise OSError(
            errno.ENOSPC if free < 64 * 2**20 else errno.EIO,
            f"cannot write {path}: {why} " f"({free / 2**20:.0f} MiB free in {folder}); the previous file is unchanged",
        ) from None


def _unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel/DataParallel, so keys carry no ``module.``."""
    return network.module if hasattr(network, "module") else network


class BestModelSaver:
    """Save the network's CPU state dict to ``save_dir/filename`` whenever the evaluator's key metric improves.

    Attach to the evaluator; MONAI's evaluator updates ``state.best_metric_epoch`` when the
    key metric improves, which is the trigger. Only rank 0 writes under torch.distributed.

    Args:
        save_dir: folder of the best model (created if missing).
        network: the network whose weights are saved.
        filename: the file name, ``model.pt`` by default.
        save_last: save after every validation instead, so the file holds the last epoch's
            weights; for training whose validation metric cannot rank models (box Dice ranks
            box-shaped predictions first, which is wrong for an outline model).
    """

    def __init__(
        self, save_dir: str | os.PathLike, network: torch.nn.Module, filename: str = "model.pt", save_last: bool = False
    ) -> None:
        self.path = os.path.join(os.fspath(save_dir), filename)
        self.network = network
        self.save_last = save_last

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        improved = engine.state.best_metric_epoch == engine.state.epoch
        if not (improved or self.save_last) or not _is_rank0():
            return
        save_atomic(cpu_state_dict(_unwrap(self.network)), self.path)


class TrainingStateSaver:
    """Save the full training state to one fixed file at the end of every ``interval`` epochs.

    The file holds the state dicts of ``save_dict`` (network, optimizer, scheduler), of the
    trainer it is attached to (key ``trainer``) and the evaluator's best metric (key
    ``validator``), so :class:`TrainingStateLoader` restores the run and training continues at
    the next epoch. Written atomically; only rank 0 writes.

    Args:
        save_dir: folder of the checkpoint (created if missing).
        save_dict: objects with ``state_dict()``; keys become the checkpoint's keys.
        filename: fixed file name, ``checkpoint_latest.pt`` by default.
        evaluator: the validation engine whose best metric is kept (optional).
        interval: save every this many epochs.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "checkpoint_latest.pt",
        evaluator: Engine | None = None,
        interval: int = 1,
    ) -> None:
        self.path = os.path.join(os.fspath(save_dir), filename)
        self.save_dict = dict(save_dict)
        self.evaluator = evaluator
        self.interval = interval
        if evaluator is not None:
            # ignite's Engine.state_dict carries these user keys, so CheckpointLoader restores them
            for key in BEST_METRIC_KEYS:
                if key not in evaluator.state_dict_user_keys:
                    evaluator.state_dict_user_keys.append(key)
            self.save_dict.setdefault("validator", evaluator)

    def attach(self, engine: Engine) -> None:
        self.save_dict.setdefault("trainer", engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        if not _is_rank0():
            return
        state = {
            k: cpu_state_dict(_unwrap(v) if isinstance(v, torch.nn.Module) else v) for k, v in self.save_dict.items()
        }
        save_atomic(state, self.path)


class TrainingStateLoader:
    """Resume a run from :class:`TrainingStateSaver`'s file, before the trainer's first epoch.

    Wraps MONAI's ``CheckpointLoader`` (``weights_only=True`` loading) and adds the trainer it
    is attached to and the evaluator, which configs cannot reference from the trainer's own
    handler list without a cycle.

    Args:
        load_path: the checkpoint written by :class:`TrainingStateSaver`.
        load_dict: network, optimizer, scheduler (as saved).
        evaluator: the validation engine whose best metric is restored.
        map_location: where tensors go, e.g. the training device.

    Raises:
        FileNotFoundError: at attach time, when ``load_path`` does not exist.
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: Mapping[str, Any],
        evaluator: Engine | None = None,
        map_location: Any = None,
    ) -> None:
        self.load_path = os.fspath(load_path)
        self.load_dict = dict(load_dict)
        self.evaluator = evaluator
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        if not os.path.isfile(self.load_path):
            raise FileNotFoundError(f"{self.load_path}: no training state to resume from (resume=true)")
        load_dict = {**self.load_dict, "trainer": engine}
        if self.evaluator is not None:
            for key in BEST_METRIC_KEYS:
                if key not in self.evaluator.state_dict_user_keys:
                    self.evaluator.state_dict_user_keys.append(key)
            load_dict["validator"] = self.evaluator
        SafeCheckpointLoader(self.load_path, load_dict, map_location=self.map_location).attach(engine)
        engine.add_event_handler(Events.STARTED, self._stretch_schedules)  # runs after the loading above

    def _stretch_schedules(self, engine: Engine) -> None:
        """A run resumed with more (or fewer) epochs: its epoch-based schedule ends at the new last epoch.

        The checkpoint restores the scheduler as saved, ``T_max`` included, so a cosine schedule
        resumed with more epochs would climb back up after its old end. Setting ``T_max`` to the
        run's ``max_epochs`` continues the curve from the current learning rate down to
        ``eta_min`` at the new end (PyTorch's recursive cosine form), without a jump.
        """
        for obj in self.load_dict.values():
            if hasattr(obj, "T_max") and hasattr(obj, "last_epoch") and obj.T_max != engine.state.max_epochs:
                logging.getLogger(__name__).info(
                    "resume: learning-rate schedule now ends at epoch %d (was %d)", engine.state.max_epochs, obj.T_max
                )
                obj.T_max = engine.state.max_epochs


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed that depends only on the run's ``seed``, the ``epoch`` and the process ``rank``."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(rank)]).generate_state(1)[0])


class EpochSeeder:
    """Re-seed every random source at the start of each epoch from ``(seed, epoch, rank)`` alone.

    A run resumed from a checkpoint then draws the same shuffle order and the same random
    augmentations in epoch ``k`` as an uninterrupted run: without it the resumed run starts
    from the random states of process start, not those reached after ``k - 1`` epochs.

    At ``EPOCH_STARTED`` (before ignite creates the epoch's data iterator) it seeds torch
    (the shuffle sampler and workers draw from its default generator), numpy, ``random``, and
    the random transforms of the trainer's dataset (MONAI ``set_rnd``; with ``num_workers=0``
    these use their own ``RandomState``, seeded once when the data loader is built).

    Args:
        seed: the run's seed (the bundle's ``seed``).
        data: the dataset or transform whose random transforms to seed (default: the
            dataset of the attached trainer's data loader).
    """

    def __init__(self, seed: int = 0, data: Any = None) -> None:
        self.seed = int(seed)
        self.data = data

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        import random

        import numpy as np
        from monai.data.utils import set_rnd

        dist = torch.distributed
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        seed = epoch_seed(self.seed, engine.state.epoch, rank)  # ranks augment their shards independently
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        data = self.data
        if data is None:
            loader = getattr(engine, "data_loader", None) or engine.state.dataloader
            data = getattr(loader, "dataset", None)
        if data is not None:
            transform = getattr(data, "transform", None)
            set_rnd(data if transform is None else transform, seed)


#: How a Git LFS pointer file starts: a clone without ``git lfs`` holds these where the weights should be.
GIT_LFS_POINTER = b"version https://git-lfs"


def safe_load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load(path, weights_only=True)``, with a one-line error that names the file.

    ``weights_only=True`` unpickles tensors, containers and numbers only; a file whose pickle
    would call anything else (a crafted ``__reduce__`` that runs code) is refused before
    that call happens.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: not a regular file (a device such as ``/dev/zero``, a FIFO, a folder), a Git LFS
            pointer, the file holds pickled code or objects (refused), or is not a torch file.
    """
    import pickle

    p = os.fspath(path)
    _check_weights_file(p)
    if isinstance(map_location, (str, torch.device)) and torch.device(map_location).type == "cpu":
        map_location = "cpu"  # torch.load cannot restore tensors onto "cpu:0", a device torch.device accepts
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line), "")
        if not detail:  # not a pickle that names code: bytes torch cannot read at all (a damaged or foreign file)
            said = next((line.strip() for line in str(e).splitlines() if line.strip().startswith("Unsupported")), "")
            raise ValueError(
                f"{p}: not a readable torch checkpoint: damaged, or not a weights file" + (f" ({said})" if said else "")
            ) from None
        detail = detail.split(" was not an allowed global")[0].replace("WeightsUnpickler error: ", "")
        raise ValueError(
            f"{p}: refused: not a plain weights file, its pickle calls code (torch.load weights_only=True) [{detail}]"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a file that is not a checkpoint
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"{p}: not a readable torch checkpoint ({first})") from None


def _check_weights_file(path: str) -> None:
    """Refuse a weights path that holds no file, or something other than a regular file, naming which.

    ``/dev/zero`` would be read forever, a FIFO would wait for a writer, a folder is no weights file: each
    is said as such, never as "not found".

    Raises:
        FileNotFoundError: ``"<path>: model weights not found"``.
        ValueError: ``"<path>: not a regular file (a character device): not a weights file"``.
    """
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: model weights not found") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read the weights file ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        kinds = {
            stat.S_ISDIR: "a folder",
            stat.S_ISCHR: "a character device",
            stat.S_ISBLK: "a block device",
            stat.S_ISFIFO: "a FIFO (named pipe)",
            stat.S_ISSOCK: "a socket",
        }
        kind = next((name for test, name in kinds.items() if test(mode)), "not a file")
        raise ValueError(f"{path}: not a regular file ({kind}): not a weights file")
    with open(path, "rb") as f:
        head = f.read(len(GIT_LFS_POINTER))
    if head == GIT_LFS_POINTER:
        raise ValueError(f"{path}: a Git LFS pointer, not the weights: fetch them with 'git lfs pull'")


def _checkpoint_loader_base():
    from monai.handlers import CheckpointLoader

    return CheckpointLoader


class SafeCheckpointLoader(_checkpoint_loader_base()):
    """MONAI's ``CheckpointLoader`` (which loads with ``weights_only=True``) with clear refusals.

    MONAI's loader lets torch's multi-paragraph ``UnpicklingError`` through, which names
    neither the file nor the offending global; this one checks the file first with
    :func:`safe_load` and fails with one line naming both. Same arguments as MONAI's.
    """

    def __call__(self, engine: Engine) -> None:
        state = safe_load(self.load_path, map_location="cpu")  # refuse unsafe or unreadable files by name
        network = self.load_dict.get("model")
        if isinstance(network, torch.nn.Module) and self.strict and self.strict_shape:
            weights = state.get("model", state) if isinstance(state, Mapping) else state
            module = network.module if hasattr(network, "module") else network  # DistributedDataParallel
            problem = weights_mismatch(module, weights)
            if problem:
                raise ValueError(f"{self.load_path}: weights do not fit the bundle's network: {problem}")
        super().__call__(engine)


def _is_rank0() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class AtomicMetricsSaver(MetricsSaver):
    """MONAI's ``MetricsSaver`` whose report files appear whole or not at all.

    The reports are written into a staging folder inside ``save_dir`` and each one is renamed
    into place, so a crash or a full disk never leaves a truncated ``metrics.csv`` beside
    complete ones from an earlier run. Arguments are those of ``MetricsSaver``.
    """

    def __call__(self, engine: Engine) -> None:
        if idist.get_rank() != self.save_rank:
            super().__call__(engine)  # other ranks only take part in gathering the file names
            return
        target = self.save_dir
        try:
            with staged_outputs(target, name="metrics") as staging:
                self.save_dir = staging
                super().__call__(engine)
        finally:
            self.save_dir = target


def load_weights(
    network: torch.nn.Module, ckpt_path: str | os.PathLike, device: torch.device | str = "cpu"
) -> torch.nn.Module:
    """Load a state dict into ``network`` safely (:func:`safe_load`: no pickled code runs).

    Accepts a plain state dict or a checkpoint holding one under ``model``.

    Returns:
        ``network``, in eval mode, so a config can build and load a network in one expression.

    Raises:
        FileNotFoundError: no file at ``ckpt_path``.
        ValueError: the file is not a loadable weights file or does not fit the network.
    """
    path = os.fspath(ckpt_path)
    state = safe_load(path, map_location=device)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    problem = weights_mismatch(network, state)
    if problem:
        raise ValueError(f"{path}: weights do not fit the bundle's network: {problem}")
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: weights do not fit the bundle's network ({str(e).splitlines()[0][:200]})") from None
    return network.eval()


def weights_mismatch(network: torch.nn.Module, state: Any) -> str | None:
    """How a state dict differs from a network's, in one line (None when it fits).

    Names the first tensors whose shapes differ, with both shapes (the channel counts), and
    how many tensors are missing or unexpected: a network built with another ``network_def``.
    """
    if not isinstance(state, Mapping):
        return f"not a state dict ({type(state).__name__})"
    own = network.state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    differ = [k for k in own if k in shapes and tuple(own[k].shape) != shapes[k]]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if not (differ or missing or unexpected):
        return None
    parts = []
    if differ:
        shown = "; ".join(f"{k}: file {list(shapes[k])}, network {list(own[k].shape)}" for k in differ[:2])
        parts.append(f"{len(differ)} tensor(s) differ in shape ({shown})")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return ", ".join(parts) + "; they were made with another network config: pass that config (--config)"


class ExistingWeightsGuard:
    """Refuse, before the first iteration, to train into a folder holding weights this run did not make.

    ``ckpt_dir`` defaults to the bundle's ``models/``, which holds the shipped weights: a new run
    there would replace ``model.pt`` at its first validation. At ``STARTED`` this stops the run,
    naming the file and the ways on, unless the run resumes (``resume``: the weights are its own)
    or was told to replace them (``overwrite``).

    Args:
        folder: the run's checkpoint folder (``ckpt_dir``).
        resume: the run continues the one that made the weights.
        overwrite: replace them anyway.
        names: the files a run writes there.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        resume: bool = False,
        overwrite: bool = False,
        names: tuple[str, ...] = ("model.pt",),
    ) -> None:
        self.folder = Path(folder)
        self.resume = switch(resume, "resume")
        self.overwrite = switch(overwrite, "overwrite_weights")
        self.names = names

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        if self.resume or self.overwrite or self._in_use():
            return
        existing = [name for name in self.names if (self.folder / name).exists()]
        if existing:
            raise RuntimeError(
                f"{self.folder / existing[0]}: already there (the bundle's own weights, or another run's), and a new "
                "training would replace it; give another --ckpt_dir, --resume true to continue that run, or "
                "--overwrite_weights true to replace it"
            )

    def _in_use(self) -> bool:
        """Another run holds the folder's lock: :class:`RunFolderLock` says so, naming it."""
        lock = self.folder / RunFolderLock.LOCK_NAME
        try:
            import fcntl
        except ImportError:
            return False
        if not lock.is_file():
            return False
        with open(lock, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
        return False


class RunFolderLock:
    """One training run at a time per checkpoint folder, and no temporary files left from a killed one.

    At ``STARTED`` the process takes an exclusive lock on ``<folder>/.training.lock`` (``flock``:
    the operating system releases it when the process ends, however it ends, so a crash leaves
    no stale lock). A second run into the same folder stops at once with a message naming the
    folder and the other run's process id, before it writes anything. Holding the lock, it
    removes the hidden temporary files that a run killed in the middle of an atomic write left
    behind (``.checkpoint_latest.*.pt``, ``.model.*.pt``). Only rank 0 locks under
    torch.distributed (the other ranks write nothing there). Without ``fcntl`` (Windows) there
    is no lock. The lock file stays in the folder after the run: deleting it would let two
    later runs lock two different files of the same name.

    Args:
        folder: the run's checkpoint folder (``ckpt_dir``).
        temp_prefixes: names whose hidden temporary copies are cleaned up.
    """

    LOCK_NAME = ".training.lock"

    def __init__(
        self, folder: str | os.PathLike, temp_prefixes: tuple[str, ...] = ("checkpoint_latest.pt", "model.pt")
    ) -> None:
        self.folder = Path(folder)
        self.temp_prefixes = temp_prefixes
        self._file = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.acquire)
        engine.add_event_handler(Events.COMPLETED, self.release)

    def acquire(self, engine: Engine | None = None) -> None:
        """Take the lock and clean up, or raise ``RuntimeError`` naming the run that holds it."""
        if not _is_rank0():
            return
        try:
            import fcntl
        except ImportError:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / self.LOCK_NAME
        handle = open(path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise RuntimeError(
                f"{self.folder}: another training run (process {owner}) is writing to this folder; "
                "wait for it to finish or choose another output folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        for prefix in self.temp_prefixes:  # atomic_output names its temporary files .<name[:24]>.<random><suffix>
            for stale in self.folder.glob(f".{prefix[:24]}.*"):
                if stale.is_file():
                    stale.unlink()

    def release(self, engine: Engine | None = None) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    """A time left as a person says it: "40 s", "12 min", "2 h 05 min"."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """How far a long run is, on stderr: a tqdm bar with the time left on a terminal, else a short line now and then.

    A log file or a pipe gets no bar (its carriage returns would fill the file with redraws): it gets
    one line such as ``evaluate: 5 of 12 images, about 40 s left`` each time :attr:`interval` seconds
    have passed since the last one, so a short run stays silent and a long one says it is alive.
    Work may advance by fractions (a volume's slices move its image forward bit by bit).

    Args:
        total: how much work the run has (images, epochs...).
        desc: what runs, the first word of the bar and of the lines (``"evaluate"``).
        unit: what ``total`` counts, singular (``"image"``, ``"epoch"``).
        stream: where it goes (default: ``sys.stderr`` at the time the object is made).
        tty: draw a bar (default: whether ``stream`` is a terminal).
        initial: work done before this run (a resumed training's epochs); the time left is
            estimated from this run's pace only.
    """

    #: Seconds between two lines when ``stream`` is not a terminal.
    interval: float = 20.0

    def __init__(
        self,
        total: float,
        desc: str,
        unit: str = "image",
        stream: Any = None,
        tty: bool | None = None,
        initial: float = 0,
    ) -> None:
        import sys

        self.total = max(float(total), 0.0)
        self.desc, self.unit = desc, unit
        self.stream = sys.stderr if stream is None else stream
        self.tty = _is_terminal(self.stream) if tty is None else bool(tty)
        self.initial = self.done = float(initial)
        self.note = ""
        self._start = self._last = time.monotonic()
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            # the count and the note go in the postfix: tqdm would print a fractional count as 2.4000000001/10
            self.bar = tqdm(
                total=self.total,
                initial=self.initial,
                desc=desc,
                file=self.stream,
                leave=False,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
                postfix=self._count(),
            )

    def _count(self) -> str:
        total = int(self.total) if float(self.total).is_integer() else self.total
        units = self.unit if total == 1 else f"{self.unit}s"
        return f"{int(self.done + 1e-9)} of {total} {units}" + (f" ({self.note})" if self.note else "")

    def time_left(self) -> float | None:
        """Seconds left at this run's pace so far; None before any work is done."""
        done = self.done - self.initial
        if done <= 0:
            return None
        return (time.monotonic() - self._start) / done * max(self.total - self.done, 0.0)

    def line(self) -> str:
        """The line a log gets: ``"segment: 3 of 10 images (case.nii.gz slice 40 of 120), about 2 min left"``."""
        left = self.time_left()
        return f"{self.desc}: {self._count()}" + ("" if left is None else f", about {_duration(left)} left")

    def update(self, amount: float = 1.0, note: str | None = None) -> None:
        """Advance by ``amount`` (a fraction for part of an item); ``note`` names what runs now ("" clears it)."""
        self.set(self.done + float(amount), note)

    def set(self, done: float, note: str | None = None) -> None:
        """Be at ``done``: a caller going through an item by fractions sets ``item + fraction``, since fractions
        added one by one can fall short of the item's end (0.1 ten times is 0.9999999999999999)."""
        if note is not None:
            self.note = note
        self.done = min(max(float(done), self.done), self.total)
        if self.bar is not None:
            self.bar.set_postfix_str(self._count(), refresh=False)
            self.bar.update(self.done - self.bar.n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval and self.done < self.total:  # the end is the caller's summary
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def write(self, text: str, file: Any = None) -> None:
        """Print a line without tearing the bar (tqdm clears it, prints, draws it again)."""
        import sys

        file = sys.stderr if file is None else file
        if self.bar is not None:
            self.bar.write(text, file=file)
            file.flush()
        else:
            print(text, file=file, flush=True)

    def close(self) -> None:
        """Remove the bar (the run's summary takes its place)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ProgressHandler:
    """Ignite handler: the :class:`Progress` of an engine's run, by item (an evaluator's images) or by epoch.

    With ``unit="epoch"`` it counts a trainer's epochs up to ``max_epochs`` (a resumed run starts at
    the epoch it resumes from); otherwise the items of each iteration's decollated output, out of
    the data loader's dataset. Only the first rank shows anything under torch.distributed.

    Args:
        desc: what runs (``"evaluate"``, ``"train"``).
        unit: ``"epoch"``, or what one item is (``"image"``).
        stream: as :class:`Progress`.
        tty: as :class:`Progress`.
    """

    def __init__(
        self, desc: str = "evaluate", unit: str = "image", stream: Any = None, tty: bool | None = None
    ) -> None:
        self.desc, self.unit, self.stream, self.tty = desc, unit, stream, tty
        self.progress: Progress | None = None

    def attach(self, engine: Engine) -> None:
        if self.unit == "epoch":
            engine.add_event_handler(Events.STARTED, self._start_epochs)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_done)
        else:
            engine.add_event_handler(Events.EPOCH_STARTED, self._start_items)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._items_done)
        engine.add_event_handler(Events.COMPLETED, self.close)
        engine.add_event_handler(Events.TERMINATE, self.close)

    def _open(self, total: float, initial: float = 0) -> None:
        self.close()
        if _is_rank0():
            self.progress = Progress(total, self.desc, self.unit, self.stream, self.tty, initial)

    def _start_epochs(self, engine: Engine) -> None:
        # STARTED handlers of the config (a resume's state loader) have set the epoch already
        self._open(engine.state.max_epochs or 0, initial=engine.state.epoch)

    def _epoch_done(self, engine: Engine) -> None:
        if self.progress is not None:
            self.progress.update(1)

    def _start_items(self, engine: Engine) -> None:
        loader = getattr(engine, "data_loader", None) or engine.state.dataloader
        try:
            total = len(loader.dataset)
        except (AttributeError, TypeError):  # an iterable without a sized dataset: count iterations
            total = engine.state.epoch_length or 0
        self._open(total)

    def _items_done(self, engine: Engine) -> None:
        if self.progress is not None:
            output = engine.state.output
            self.progress.update(len(output) if isinstance(output, (list, tuple)) else 1)

    def close(self, engine: Engine | None = None) -> None:
        """Remove the bar; also for a run that failed (call it from a ``finally``)."""
        if self.progress is not None:
            self.progress.close()
            self.progress = None
