"""Installing the packages the module needs into Slicer's Python: plan, confirm, install, verify.

Qt-free. Every effect is injected: how pip runs (``slicer.util.pip_install`` in Slicer,
:func:`subprocess_pip` elsewhere), how torch is installed (PyTorch Utils picks the CUDA or CPU
build), and how the user is asked. So the logic runs, and is tested, outside Slicer with a real
pip process.

pip gets a constraints file pinning the torch and numpy already in Slicer's Python
(:func:`pinned_constraints`): resolving MONAI must never replace the torch build that PyTorch
Utils chose, or the numpy that Slicer itself was built with. pip picks versions of the other
packages that fit those, or fails with its own message, which is passed on.

Slicer's ``pip_install`` prints pip's output line by line to the Python console and raises a
``CalledProcessError`` whose output is the spent stream; so the installer keeps the last lines
printed while a runner works (:class:`PrintedTail`) and passes those on instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from .dependencies import REQUIREMENTS, TORCH, Requirement, Status, check, needs_restart

__all__ = ["DependencyInstaller", "InstallOutcome", "PrintedTail", "pinned_constraints", "subprocess_pip"]

#: Distributions pip must keep at their installed version.
PINNED = ("torch", "numpy")
#: How many of a failed command's last output lines the user is shown.
TAIL_LINES = 8
#: What to try when a download failed.
NETWORK_ADVICE = "Check the network connection and apply again."


class PrintedTail(io.TextIOBase):
    """A text stream that writes through to ``target`` and keeps the last ``lines`` lines written to it.

    Used as ``sys.stdout`` while an install runs (:meth:`capture`): what Slicer's ``pip_install``
    prints still reaches the Python console, and the end of it can be shown when the install fails.
    """

    def __init__(self, target: Any = None, lines: int = TAIL_LINES) -> None:
        super().__init__()
        self.target, self.limit = target, int(lines)
        self.lines: list[str] = []
        self._partial = ""

    def write(self, text: str) -> int:
        if self.target is not None:
            self.target.write(text)
        *complete, self._partial = (self._partial + text).split("\n")
        self.lines = (self.lines + [line.rstrip() for line in complete if line.strip()])[-self.limit :]
        return len(text)

    def flush(self) -> None:
        if self.target is not None:
            self.target.flush()

    def text(self) -> str:
        """The last lines written (a line not yet ended included)."""
        return "\n".join((self.lines + ([self._partial.rstrip()] if self._partial.strip() else []))[-self.limit :])

    @classmethod
    @contextlib.contextmanager
    def capture(cls, lines: int = TAIL_LINES) -> Any:
        """``with PrintedTail.capture() as tail:``: ``sys.stdout`` goes through a new tail for the block."""
        tail = cls(sys.stdout, lines)
        with contextlib.redirect_stdout(tail):
            yield tail


@dataclass
class InstallOutcome:
    """What :meth:`DependencyInstaller.run` did.

    Attributes:
        ready: every package is there at a usable version, loaded or loadable without a restart.
        message: for the user when not ready (empty when the user cancelled).
        restart: distributions this process had loaded at an older version: Slicer must restart.
        installed: the pip requirement strings that were installed.
    """

    ready: bool
    message: str = ""
    restart: list[str] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)


def pinned_constraints(statuses: Sequence[Status]) -> list[str]:
    """``name==version`` for each :data:`PINNED` distribution that is installed."""
    return [
        f"{s.requirement.distribution}=={s.installed}"
        for s in statuses
        if s.requirement.distribution in PINNED and s.installed is not None
    ]


def subprocess_pip(python: str = sys.executable, extra_args: Sequence[str] = ()) -> Callable[[list[str]], None]:
    """A pip runner: ``python -m pip install <args> <extra_args>`` in a child process.

    Raises (when called):
        RuntimeError: pip failed; the message holds the end of its output.
    """

    def pip_install(args: list[str]) -> None:
        command = [python, "-m", "pip", "install", "--disable-pip-version-check", *args, *extra_args]
        proc = subprocess.run(command, capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise RuntimeError(f"pip install failed (exit {proc.returncode}):\n{tail}")

    return pip_install


class DependencyInstaller:
    """Install what the module needs: torch through ``install_torch``, the rest with pip.

    Args:
        pip_install: runs ``pip install`` with the given arguments (requirements, ``-c FILE``);
            raises on failure.
        install_torch: installs torch (PyTorch Utils); returns False when it did not. What it raises
            (PyTorch Utils' ``subprocess.CalledProcessError`` offline) becomes the outcome's message.
        confirm: shows the text (what will be installed) and returns whether to go on.
        requirements: the pip-installed packages (default :data:`~.dependencies.REQUIREMENTS`).
        torch: torch's requirement (default :data:`~.dependencies.TORCH`); None to leave torch alone.
    """

    def __init__(
        self,
        pip_install: Callable[[list[str]], Any],
        install_torch: Callable[[], bool],
        confirm: Callable[[str], bool] = lambda text: True,
        requirements: Sequence[Requirement] = REQUIREMENTS,
        torch: Requirement | None = TORCH,
    ) -> None:
        self.pip_install = pip_install
        self.install_torch = install_torch
        self.confirm = confirm
        self.requirements = tuple(requirements)
        self.torch = torch

    def statuses(self) -> list[Status]:
        """Each requirement's installed version (torch first)."""
        return check(((self.torch,) if self.torch else ()) + self.requirements)

    def run(self) -> InstallOutcome:
        """Check, ask, install, check again."""
        statuses = self.statuses()
        missing = [s for s in statuses if not s.ok]
        if not missing:
            return InstallOutcome(ready=True)
        torch = next((s for s in statuses if self.torch and s.requirement == self.torch), None)
        if torch is not None and torch.installed is not None and not torch.ok:
            return InstallOutcome(
                ready=False,
                message=f"PyTorch {torch.installed} is installed, but {self.torch.spec} is needed.\n"
                "Open the PyTorch Utils module, uninstall PyTorch, restart Slicer, and apply again.",
            )
        takes = "several minutes (PyTorch alone is 1-3 GB)" if torch is not None and not torch.ok else "a few minutes"
        text = (
            "Brain Tumor Segmentation needs Python packages that will now be downloaded and installed "
            f"into Slicer's Python. This can take {takes}.\n\n" + "\n".join(f"  {s.describe()}" for s in missing)
        )
        if not self.confirm(text):
            return InstallOutcome(ready=False)
        if torch is not None and not torch.ok:
            failure = self._install_torch()
            if failure:
                return InstallOutcome(ready=False, message=failure)
        specs = [s.requirement.spec for s in missing if s.requirement in self.requirements]
        if specs:
            with PrintedTail.capture() as printed:
                try:
                    self._pip(specs)
                    failure = None
                except Exception as e:  # noqa: BLE001 - pip's failure, whatever its type, is the user's message
                    logging.getLogger(__name__).exception("installing Python packages failed")
                    failure = e
            if failure is not None:
                message = f"Installing Python packages failed: {_failure_text(failure, printed.text())}"
                return InstallOutcome(ready=False, message=f"{message}\n\n{NETWORK_ADVICE}")
        still = [s.describe() for s in self.statuses() if not s.ok]
        if still:
            return InstallOutcome(ready=False, message="These packages are still missing:\n" + "\n".join(still))
        restart = needs_restart(statuses)
        return InstallOutcome(ready=not restart, restart=restart, installed=specs)

    def _install_torch(self) -> str:
        """Run ``install_torch``; the message for the user when PyTorch was not installed, else ``""``.

        PyTorch Utils raises (``subprocess.CalledProcessError`` from its pip run when offline, an
        ``OSError``...) rather than returning False: caught here like pip's failures, so the user
        gets a dialog saying what failed and what to do, not a traceback in the Python console.
        """
        advice = (
            "Check the network connection (PyTorch is downloaded, 1-3 GB) and apply again, or install PyTorch "
            "with the PyTorch Utils module (PyTorch extension, Extensions Manager), restart Slicer and apply again."
        )
        with PrintedTail.capture() as printed:
            try:
                installed = self.install_torch()
            except Exception as e:  # noqa: BLE001 - whatever PyTorch Utils or pip raised, the user is told
                logging.getLogger(__name__).exception("installing PyTorch failed")
                return f"Installing PyTorch failed: {_failure_text(e, printed.text())}\n\n{advice}"
        return "" if installed else f"PyTorch was not installed.\n\n{advice}"

    def _pip(self, specs: list[str]) -> None:
        pins = pinned_constraints(check((TORCH, Requirement("numpy", "numpy", "0"))))
        if not pins:
            self.pip_install(specs)
            return
        fd, path = tempfile.mkstemp(prefix="brainseg_constraints_", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("\n".join(pins) + "\n")
            self.pip_install([*specs, "-c", path])
        finally:
            os.unlink(path)


def _failure_text(error: BaseException, printed: str = "") -> str:
    """What failed, in words: the exception, and the end of a failed command's output.

    The output is the one the error kept (a ``CalledProcessError`` with text output), else what was
    ``printed`` while the command ran (Slicer's ``pip_install`` prints it and keeps only the spent stream),
    unless the error's message holds it already.
    """
    text = str(error) or type(error).__name__
    output: Any = None
    if isinstance(error, subprocess.CalledProcessError):
        output = error.output if error.output is not None else error.stderr
        if isinstance(output, bytes):
            output = output.decode("utf-8", "replace")
    if not (isinstance(output, str) and output.strip()):
        output = printed
    tail = "\n".join(output.strip().splitlines()[-TAIL_LINES:])
    return f"{text}\n{tail}" if tail and tail not in text else text
