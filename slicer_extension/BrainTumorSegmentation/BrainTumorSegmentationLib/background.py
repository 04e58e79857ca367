"""Segmentation in a background process (``worker.py``), without Qt: start, follow, cancel, collect.

The Slicer module polls a :class:`WorkerRun` from a Qt timer and applies the result to the
scene; everything else lives here, so it is tested with a real subprocess outside Slicer. The
process is started by an injected ``launcher`` (Slicer's passes its startup environment), in a
session of its own, so Cancel stops the worker and anything it started (the whole process
group), not only the Python launcher.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .inference import resolve_device

__all__ = ["Launcher", "WorkerResult", "WorkerRun", "default_launcher", "worker_command"]

#: ``launcher(command, environment_update) -> Popen`` with text stdout (stderr merged into it).
Launcher = Callable[[Sequence[str], "Mapping[str, str] | None"], subprocess.Popen]

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
#: Seconds between asking the process group to stop and killing it.
KILL_AFTER = 3.0


def default_launcher(command: Sequence[str], environment: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``command`` in a new session (its own process group), stdout and stderr as text lines."""
    env = {**os.environ, **(environment or {})}
    return subprocess.Popen(
        list(command),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        errors="replace",  # a stray byte (a Windows code page) must not stop the reader draining the pipe
        bufsize=1,
        start_new_session=True,
    )


def worker_command(
    python: str,
    input_path: str,
    output_path: str,
    bundle_dir: str,
    *,
    batch_size: int = 8,
    ckpt_path: str | None = None,
    config_files: Sequence[str] = (),
    axis: int | None = None,
    probability: bool = False,
    force_cpu: bool = False,
    device: str | None = None,
    worker: str = WORKER,
) -> list[str]:
    """The command line of one worker run (a list: nothing goes through a shell).

    ``device`` (see :func:`~BrainTumorSegmentationLib.inference.resolve_device`) becomes ``--device``,
    except the CPU, which is ``--force-cpu`` as for ``force_cpu``; None and ``"auto"`` add nothing (the
    bundle's choice).

    Raises:
        ValueError: ``device`` is not spelled like a device.
    """
    device = resolve_device(device, force_cpu)
    command = [python, worker, "--input", input_path, "--output", output_path, "--batch-size", str(int(batch_size))]
    command += ["--bundle-dir", os.fspath(bundle_dir)]
    if ckpt_path:
        command += ["--ckpt-path", os.fspath(ckpt_path)]
    for config in config_files:
        command += ["--config-file", os.fspath(config)]
    if axis is not None:
        command += ["--axis", str(int(axis))]
    if probability:
        command.append("--probability")
    if device == "cpu":
        command.append("--force-cpu")
    elif device is not None:
        command += ["--device", device]
    return command


@dataclass
class WorkerResult:
    """What a finished run left: the mask, the probability (if asked), how many slices looked unusual."""

    mask: np.ndarray
    probability: np.ndarray | None
    unusual_slices: int | None


class WorkerRun:
    """One background segmentation of a volume's voxels by ``worker.py``.

    Args:
        volume: the voxels to segment (as ``volume_array`` of the Lib returns them).
        bundle_dir: the bundle folder.
        python: the interpreter for the worker (default: this one; Slicer passes ``PythonSlicer``).
        launcher: starts the process (default: :func:`default_launcher`).
        worker: the worker script (default: ``worker.py`` beside this file).
        force_cpu: run on the CPU (``CUDA_VISIBLE_DEVICES=-1``), whatever ``device`` says.
        device: where the model runs: None or ``"auto"`` (the bundle's choice, CUDA when available),
            ``"cpu"`` (as ``force_cpu``), ``"cuda"``, ``"cuda:<index>"``, ``"mps"``. A device this machine
            lacks is reported by the worker, naming it, in :attr:`error`.
        on_progress: ``on_progress(fraction, bundle_name)``.
        on_log: ``on_log(line)`` for each line the worker writes but progress lines, in order: its log
            output (also logged at info level) and the ``BUNDLE``, ``DONE`` and ``ERROR`` messages.
        **options: ``batch_size``, ``ckpt_path``, ``config_files``, ``axis``, ``probability``
            (see :func:`worker_command`).

    Call :meth:`poll` until it returns True (it never blocks), then read :attr:`result`,
    :attr:`error` or :attr:`cancelled`. The callbacks are called from :meth:`poll`, so in the thread
    that polls (a Qt timer's: the main thread).

    Raises:
        ValueError: ``device`` is not spelled like a device.
    """

    def __init__(
        self,
        volume: np.ndarray,
        bundle_dir: str,
        *,
        python: str | None = None,
        launcher: Launcher = default_launcher,
        worker: str = WORKER,
        force_cpu: bool = False,
        device: str | None = None,
        on_progress: Callable[[float, str], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        **options,
    ) -> None:
        self.device = resolve_device(device, force_cpu)  # checked before anything is started
        self.on_progress = on_progress
        self.on_log = on_log
        self.bundle_name = ""
        self.error: str | None = None
        self.result: WorkerResult | None = None
        self.cancelled = False
        self.finished = False
        self.log: list[str] = []
        self._kill_at: float | None = None
        self._temp = tempfile.mkdtemp(prefix="BrainTumorSegmentation-")
        input_path = os.path.join(self._temp, "input.npy")
        self._output = os.path.join(self._temp, "output.npz")
        np.save(input_path, np.asarray(volume))
        python = python or sys.executable
        command = worker_command(
            python, input_path, self._output, bundle_dir, worker=worker, device=self.device, **options
        )
        self.command = command
        try:
            environment = {"PYTHONIOENCODING": "utf-8"}  # the worker writes UTF-8 whatever the console's code page
            if self.device == "cpu":
                environment["CUDA_VISIBLE_DEVICES"] = "-1"
            self.process = launcher(command, environment)
        except BaseException:
            shutil.rmtree(self._temp, ignore_errors=True)
            raise
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self.process.stdout.close()

    def cancel(self) -> None:
        """Stop the worker and every process it started; the result is dropped."""
        if self.finished or self.cancelled:
            return
        self.cancelled = True
        self._signal(signal.SIGTERM)
        self._kill_at = time.monotonic() + KILL_AFTER

    def _signal(self, sig: int) -> None:
        try:
            if os.name == "posix":
                os.killpg(self.process.pid, sig)  # the worker's whole process group (its own session)
            elif sig == signal.SIGTERM:
                self.process.terminate()
            else:
                self.process.kill()
        except (ProcessLookupError, PermissionError):
            pass

    def poll(self) -> bool:
        """Handle what the worker said since the last call; True once the run is over."""
        if self.finished:
            return True
        while True:
            try:
                self._handle(self._lines.get_nowait())
            except queue.Empty:
                break
        if self._kill_at is not None and time.monotonic() > self._kill_at:
            self._signal(signal.SIGKILL)
            self._kill_at = None
        if self.process.poll() is None or self._reader.is_alive():
            return False
        self._finish()
        return True

    def _handle(self, line: str) -> None:
        word, _, rest = line.partition(" ")
        if word != "PROGRESS" and self.on_log is not None:
            self.on_log(line)
        if word == "PROGRESS":
            try:
                fraction = float(rest)
            except ValueError:
                return
            if self.on_progress is not None:
                self.on_progress(fraction, self.bundle_name)
        elif word == "BUNDLE":
            self.bundle_name = rest
            if self.on_progress is not None:
                self.on_progress(0.0, rest)
        elif word == "ERROR":
            self.error = rest
        else:
            self.log = (self.log + [line])[-200:]
            logging.getLogger(__name__).info(f"worker: {line}")

    def _finish(self) -> None:
        self.finished = True
        try:
            if self.cancelled:  # a result written just before the cancel is dropped all the same
                return
            code = self.process.returncode
            if code != 0 or not os.path.isfile(self._output):
                details = "\n".join(self.log[-40:])
                self.error = f"{self.error or f'the process exited with code {code}'}\n\n{details}".strip()
                return
            with np.load(self._output) as out:
                self.result = WorkerResult(
                    out["mask"],
                    out["probability"] if "probability" in out.files else None,
                    int(out["input_unusual"].sum()) if "input_unusual" in out.files else None,
                )
        finally:
            self._signal(signal.SIGKILL)  # nothing of the run outlives it
            shutil.rmtree(self._temp, ignore_errors=True)

    def wait(self, timeout: float = 600.0, interval: float = 0.05) -> bool:
        """Block until the run is over (scripts and tests); cancels and returns False on timeout."""
        end = time.monotonic() + timeout
        while not self.poll():
            if time.monotonic() > end:
                self.cancel()
                while not self.poll():
                    time.sleep(interval)
                return False
            time.sleep(interval)
        return True
