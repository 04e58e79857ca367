"""Run a mutant's tests in a fork of a process that has imported torch and MONAI already.

Each mutant's test command is a fresh ``python -m pytest``, and on a 2-core machine most of its time
goes to importing torch, MONAI, ITK and scikit-image (about 5 s of 7 s for ``tests/test_tumor_crops.py``).
``serve`` imports those once, in the spare worktree, and forks for every test run: the child imports
the project's own code (``scripts``, ``brainseg_monai``, the tests) fresh from disk, mutant included,
and runs pytest. ``run`` is the test command cosmic-ray calls; it sends the pytest arguments, prints
the output and exits with pytest's status. When no server answers, ``run`` runs pytest itself, so the
numbers never depend on the server, only the time does.

    # in the spare worktree, from its root, before ``cosmic-ray exec``:
    PYTHONPATH=.:bundle .venv/bin/python benchmarks/mutation/forkserver.py serve /tmp/brainseg-mutation.sock &
    # test-command in the toml:
    .venv/bin/python benchmarks/mutation/forkserver.py run /tmp/brainseg-mutation.sock -- -x -q tests/test_volumes.py

The parent never imports the project's code (it would be cached there, unmutated, for every child).
If the client goes away (cosmic-ray's timeout kills it), the child is killed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys

PRELOAD = (
    "numpy",
    "scipy.ndimage",
    "skimage.measure",
    "skimage.filters",
    "PIL.Image",
    "torch",
    "torch.nn.functional",
    "monai",
    "monai.transforms",
    "monai.data",
    "monai.bundle",
    "monai.networks.nets",
    "itk",
    "pytest",
)
TRAILER = b"\0forkserver-rc:"


def serve(path: str) -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    import itk
    import numpy as np

    # ITK loads its wrappers lazily: load the image ones now, not in every child
    itk.image_from_array(np.zeros((2, 2, 2), np.float32))
    ours = ("scripts.", "brainseg_monai", "conftest")
    leaked = sorted(m for m in sys.modules if m == "scripts" or m.startswith(ours))
    if leaked:
        raise SystemExit(f"forkserver: the project's code was imported before forking: {leaked}")
    sys.dont_write_bytecode = True
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` ends it with its socket file removed
    print(f"forkserver: ready on {path} (pid {os.getpid()})", flush=True)
    try:
        while True:
            conn, _ = server.accept()
            _handle(conn)
    finally:
        server.close()
        os.unlink(path)


def _handle(conn: socket.socket) -> None:
    with conn, conn.makefile("rb") as f:
        request = json.loads(f.readline())
        pid = os.fork()
        if pid == 0:  # the child: pytest with the output going to the client
            code = 1
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                os.dup2(conn.fileno(), 1)
                os.dup2(conn.fileno(), 2)
                os.chdir(request["cwd"])
                import pytest

                code = int(pytest.main(request["args"]))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        status = None
        while status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
                break
            readable, _, _ = select.select([conn], [], [], 0.1)
            if readable and not conn.recv(1, socket.MSG_PEEK):  # the client is gone: a timeout
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
        try:
            conn.sendall(TRAILER + str(status).encode())
        except OSError:
            pass


def run(path: str, args: list[str]) -> int:
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
    except OSError:  # no server: the same tests, in a fresh interpreter
        return subprocess.call([sys.executable, "-m", "pytest", *args])
    with conn:
        conn.sendall(json.dumps({"cwd": os.getcwd(), "args": args}).encode() + b"\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    output, _, rc = data.rpartition(TRAILER)
    if not _:
        output, rc = data, b"1"  # the server died mid-run
    sys.stdout.buffer.write(output)
    sys.stdout.flush()
    return int(rc)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "run" and sys.argv[3] == "--":
        sys.exit(run(sys.argv[2], sys.argv[4:]))
    else:
        sys.exit(__doc__)
