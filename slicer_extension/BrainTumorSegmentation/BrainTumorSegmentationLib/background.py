"""Segmentation in a background process (``worker.py``), without Qt: start, follow, cancel, collect.

The Slicer module polls a :class:`WorkerRun` from a Qt timer and applies the result to the
scene; everything else lives here, so it is tested with a real subprocess outside Slicer. The
process is started by an injected ``launcher`` (Slicer's passes its startup environment) through
:func:`start_process`, so that Cancel stops the worker and anything it started, not only the
``PythonSlicer`` launcher (which runs the real interpreter, ``python-real``, as its child):

- POSIX: the process starts a session of its own, and the whole process group is signalled;
- Windows: the process starts without a console window (``CREATE_NO_WINDOW``, and a hidden
  window as ``slicer.util.launchConsoleProcess`` asks), and ``taskkill /F /T`` ends its process
  tree (a console process without a window cannot be asked to close: it is ended at once).
"""

from __future__ import annotations

import json
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
from typing import Any

import numpy as np

from .inference import check_batch_size, resolve_device

__all__ = [
    "Launcher",
    "WorkerResult",
    "WorkerRun",
    "default_launcher",
    "kill_process_tree",
    "leads_process_group",
    "popen_options",
    "start_process",
    "worker_command",
]

#: ``launcher(command, environment_update) -> Popen`` with text stdout (stderr merged into it).
Launcher = Callable[[Sequence[str], "Mapping[str, str] | None"], subprocess.Popen]

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
#: Seconds between asking the process group to stop and killing it (POSIX).
KILL_AFTER = 3.0
#: Windows' process creation flag for a console process without a console window (``subprocess`` has it on
#: Windows only; the value is Windows' own).
CREATE_NO_WINDOW = 0x08000000
#: ``STARTUPINFO.dwFlags``: use ``wShowWindow``; and its value that hides the window (Windows' values).
STARTF_USESHOWWINDOW = 0x00000001
SW_HIDE = 0


def popen_options() -> dict[str, Any]:
    """``subprocess.Popen`` keyword arguments that make the worker's process tree stoppable as one, windowless.

    POSIX: a new session, so the process leads its own process group and :func:`kill_process_tree` signals the
    group (the launcher, the interpreter it runs, their children). Windows: no console window for the process
    and the console processes it starts (``CREATE_NO_WINDOW``; they share its hidden console instead of each
    opening one), and a hidden window (``STARTUPINFO``, as ``slicer.util.launchConsoleProcess`` does) for a
    launcher that is a GUI program.
    """
    if os.name == "nt":
        info = subprocess.STARTUPINFO()
        info.dwFlags |= getattr(subprocess, "STARTF_USESHOWWINDOW", STARTF_USESHOWWINDOW)
        info.wShowWindow = getattr(subprocess, "SW_HIDE", SW_HIDE)
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", CREATE_NO_WINDOW), "startupinfo": info}
    return {"start_new_session": True}


def start_process(command: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``command`` with :func:`popen_options`, its stdout and stderr merged as UTF-8 text lines.

    Args:
        command: the program and its arguments (no shell).
        env: the whole environment of the process (None: this process's).
    """
    return subprocess.Popen(
        list(command),
        env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        errors="replace",  # a stray byte (a Windows code page) must not stop the reader draining the pipe
        bufsize=1,
        **popen_options(),
    )


def default_launcher(command: Sequence[str], environment: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``command`` (:func:`start_process`) with this process's environment updated by ``environment``."""
    return start_process(command, {**os.environ, **(environment or {})})


def leads_process_group(process: subprocess.Popen) -> bool:
    """POSIX: whether ``process`` leads its own process group (it was started in a session of its own).

    Asked while the process exists (running, or exited but not yet waited for); False on Windows, or when it
    is gone.
    """
    if os.name == "nt":
        return False
    try:
        return os.getpgid(process.pid) == process.pid
    except (ProcessLookupError, PermissionError):
        return False


def kill_process_tree(process: subprocess.Popen, force: bool = False, process_group: bool | None = None) -> None:
    """Stop ``process`` and every process it started.

    POSIX: SIGTERM (SIGKILL when ``force``) to its process group when it leads one (started by
    :func:`start_process`), else to the process alone. Windows: ``taskkill /F /T /PID``, always forced: the
    worker's console processes have no window to close, and ``Popen.terminate`` would end only the
    ``PythonSlicer`` launcher, leaving ``python-real`` running. Popen keeps the process's handle open, so
    its PID is not reused by another process while ``process`` exists: the tree killed is the worker's.
    A process already gone is not an error.

    Args:
        process: the process started by the launcher.
        force: kill at once (POSIX SIGKILL) rather than ask to stop.
        process_group: POSIX: whether ``process`` leads its own group, as :func:`leads_process_group` said
            while it ran; None asks now. Remembered from the start, the group's leftovers are still killed
            once the process itself has exited and was waited for (the group outlives its leader).
    """
    if os.name == "nt":
        try:
            subprocess.run(
                ["taskkill", "/F", "/T", "/PID", str(process.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", CREATE_NO_WINDOW),
                timeout=30,
                check=False,  # "not found": the tree has already ended
            )
        except (OSError, subprocess.TimeoutExpired):
            logging.getLogger(__name__).warning("taskkill could not stop process %s", process.pid, exc_info=True)
            process.kill()
        return
    sig = signal.SIGKILL if force else signal.SIGTERM
    if process_group is None:
        process_group = leads_process_group(process)
    try:
        if process_group:
            os.killpg(process.pid, sig)  # the whole group: the worker's own session
        elif process.poll() is None:  # a launcher that did not start a session: the group is not the worker's
            process.send_signal(sig)
    except (ProcessLookupError, PermissionError):
        pass


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
    direction: Any = None,
    spacing: Any = None,
) -> list[str]:
    """The command line of one worker run (a list: nothing goes through a shell).

    ``direction``, the volume's 3x3 IJK-to-RAS direction matrix (``volume_direction`` of the Lib), becomes
    ``--direction=`` and its nine numbers row by row, one argument so that a first number below zero is not
    taken for an option: the worker cuts the volume's axial slices as the bundle's slice loop reads them from
    it. ``spacing``, the volume's voxel spacing along I, J and K (``volume_spacing`` of the Lib), becomes
    ``--spacing=`` and its three numbers: the worker gives planes with rectangular pixels to the network with
    square ones.

    ``device`` (see :func:`~BrainTumorSegmentationLib.inference.resolve_device`) becomes ``--device``,
    except the CPU, which is ``--force-cpu`` as for ``force_cpu``; None and ``"auto"`` add nothing (the
    bundle's choice).

    Raises:
        ValueError: ``device`` is not spelled like a device, or ``batch_size`` is not a positive whole number.
    """
    device = resolve_device(device, force_cpu)
    # "--option=value", one argument each: a value starting with a minus (most directions, "-1.0,0.0,...", or a
    # folder named "-scans") would be taken for an option
    command = [
        python,
        worker,
        f"--input={input_path}",
        f"--output={output_path}",
        f"--batch-size={check_batch_size(batch_size)}",
    ]
    command.append(f"--bundle-dir={os.fspath(bundle_dir)}")
    if ckpt_path:
        command.append(f"--ckpt-path={os.fspath(ckpt_path)}")
    for config in config_files:
        command.append(f"--config-file={os.fspath(config)}")
    if axis is not None:
        command.append(f"--axis={int(axis)}")
    if direction is not None:
        command.append("--direction=" + ",".join(repr(float(v)) for v in np.asarray(direction, dtype=float).ravel()))
    if spacing is not None:
        command.append("--spacing=" + ",".join(repr(float(v)) for v in np.asarray(spacing, dtype=float).ravel()))
    if probability:
        command.append("--probability")
    if device == "cpu":
        command.append("--force-cpu")
    elif device is not None:
        command.append(f"--device={device}")
    return command


@dataclass
class WorkerResult:
    """What a finished run left: the mask, the probability (if asked), how many slices looked unusual and the
    per-slice report (``scripts.tumor_report.slice_rows``; None from a worker that wrote none)."""

    mask: np.ndarray
    probability: np.ndarray | None
    unusual_slices: int | None
    slice_rows: list[dict] | None = None


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
        **options: ``batch_size``, ``ckpt_path``, ``config_files``, ``axis``, ``probability``,
            ``direction``, ``spacing`` (see :func:`worker_command`).

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
        self._process_group = leads_process_group(self.process)  # asked now, while the process surely exists
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self.process.stdout.close()

    def cancel(self) -> None:
        """Stop the worker and every process it started (:func:`kill_process_tree`); the result is dropped."""
        if self.finished or self.cancelled:
            return
        self.cancelled = True
        kill_process_tree(self.process, process_group=self._process_group)
        self._kill_at = time.monotonic() + KILL_AFTER

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
            kill_process_tree(self.process, force=True, process_group=self._process_group)
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
                    json.loads(str(out["slice_rows"])) if "slice_rows" in out.files else None,
                )
        finally:
            kill_process_tree(self.process, force=True, process_group=self._process_group)  # nothing outlives the run
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
