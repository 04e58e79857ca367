"""Long runs say how far they are: a bar with the time left on a terminal, a short line now and then in a log.

``brainseg evaluate`` counts images, ``segment`` images and a volume's slices, ``train`` epochs; on a
terminal the bar is tqdm's on stderr, elsewhere a line such as ``evaluate: 5 of 12 images, about 40 s
left``. Evaluate ends with a few lines for a person instead of MONAI's one-line dump of every metric.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainseg_monai.cli import main
from conftest import CONFIGS, SAMPLE_OUTLINES, SAMPLE_ROOT, SAMPLE_SPLIT, SMOKE_NETWORK
from scripts.handlers import Progress

TIME_LEFT = re.compile(r"about \d+ (s|min) left")


def _on_a_terminal(*args: str) -> tuple[int, str, str]:
    """``brainseg ARGS`` with stderr on a pseudo-terminal (120 columns) and stdout on a pipe: (code, stdout, stderr)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 0 wide gets no bar
    chunks: list[bytes] = []

    def pump() -> None:  # drain while the command runs: a pty's buffer is gone once its last writer closes
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=pump)
    reader.start()
    # TQDM_MININTERVAL 0: every update is drawn, also those of a volume the smoke model segments in 0.1 s
    env = {**os.environ, "TQDM_MININTERVAL": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "brainseg_monai.cli", *args], stdout=subprocess.PIPE, stderr=slave, text=True, env=env
    )
    os.close(slave)
    try:
        out = proc.stdout.read()
        code = proc.wait(timeout=600)
    finally:
        reader.join(timeout=60)
        os.close(master)
    return code, out, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def lines_every_update(monkeypatch):
    """A log gets a progress line at every step (normally one per Progress.interval seconds)."""
    monkeypatch.setattr(Progress, "interval", 0.0)


def _volume(path: Path, n: int) -> Path:
    itk = pytest.importorskip("itk")
    grey = np.asarray(Image.open(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0]).convert("L").resize((64, 64)), np.float32)
    itk.imwrite(itk.image_from_array(np.stack([grey] * n)), str(path))
    return path


# -- the reporter ------------------------------------------------------------------------


def test_a_log_gets_short_lines_with_the_time_left_and_a_short_run_stays_silent(lines_every_update):
    stream = io.StringIO()
    progress = Progress(4, "evaluate", "image", stream=stream, tty=False)
    progress.update(1)
    progress.update(0.5, note="case.nii.gz slice 3 of 6")
    progress.update(0.5, note="")
    progress.update(2)  # the end: the command's summary says it
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue()
    assert lines[0].startswith("evaluate: 1 of 4 images, about ") and TIME_LEFT.search(lines[0])
    assert lines[1].startswith("evaluate: 1 of 4 images (case.nii.gz slice 3 of 6), about ")
    assert lines[2].startswith("evaluate: 2 of 4 images, about ")


def test_a_run_shorter_than_the_interval_prints_no_progress_line():
    quiet = io.StringIO()
    progress = Progress(3, "segment", stream=quiet, tty=False)
    for _ in range(3):
        progress.update(1)
    assert quiet.getvalue() == ""


def test_a_terminal_gets_a_bar_that_is_removed_at_the_end():
    stream = io.StringIO()
    progress = Progress(10, "segment", "image", stream=stream, tty=True)
    progress.update(2.5, note="case.nii.gz slice 5 of 10")
    progress.write("a line printed during the run", file=stream)
    progress.close()
    text = stream.getvalue()
    assert "\r" in text and "segment:" in text and "of 10 images (case.nii.gz slice 5 of 10)" in text
    assert "a line printed during the run\n" in text
    assert text.endswith("\r")  # the bar is cleared, not left behind (leave=False)


# -- evaluate ----------------------------------------------------------------------------


def test_evaluate_on_a_terminal_shows_a_bar_then_a_short_summary_not_monai_metrics(smoke_model, tmp_path):
    out = tmp_path / "ev"
    code, stdout, stderr = _on_a_terminal(
        "evaluate", str(SAMPLE_SPLIT), "--output-dir", str(out), "--model", str(smoke_model),
        "--config", str(SMOKE_NETWORK), "--device", "cpu",
    )  # fmt: skip
    assert code == 0, stdout[-2000:] + stderr[-2000:]
    assert "\revaluate:" in stderr and re.search(r"[1-9]\d* of 12 images\]", stderr)  # tqdm redraws 10 times a second
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", stderr), "the bar shows the time left"
    everything = stdout + stderr
    # MONAI's StatsHandler: every metric on one line, "None" glued to the next name, a training "best value"
    for dumped in ("Metrics --", "best value", "at epoch", "Noneoutline", "Nonetumor", "Logging file is set"):
        assert dumped not in everything
    assert max(map(len, stdout.splitlines())) < 200
    summary = stdout.splitlines()[-4:]
    assert re.fullmatch(r"(tumor found on \d+|no tumor found on any) of 12 images.*; nothing found on \d+", summary[0])
    assert re.fullmatch(
        r"of the 12 images with an annotated tumor, \d+ show nothing; "
        r"at the annotated tumor itself, \d+ show a tumor and \d+ nothing",
        summary[1],
    )
    assert summary[2].startswith("Dice ") and "(masks against the COCO annotations)" in summary[2]
    assert summary[3] == f"files in {out}: metrics_per_image.csv, metrics_summary.json, masks/, gallery.png"


def test_evaluate_in_a_log_prints_progress_lines_and_the_outline_dice(
    smoke_model, tmp_path, capsys, lines_every_update
):
    out = tmp_path / "ev"
    args = ["evaluate", str(SAMPLE_SPLIT), "--output-dir", str(out), "--outlines", str(SAMPLE_OUTLINES)]
    assert main([*args, "--model", str(smoke_model), "--config", str(SMOKE_NETWORK), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    progress = [line for line in captured.err.splitlines() if line.startswith("evaluate: ")]
    assert [line.split(",")[0] for line in progress] == [f"evaluate: {k} of 12 images" for k in range(1, 12)]
    assert all(TIME_LEFT.search(line) for line in progress) and "\r" not in captured.err
    dice = [line for line in captured.out.splitlines() if line.startswith("outline Dice ")]
    assert len(dice) == 1 and dice[0].endswith("(mean over 12 outlines)")


# -- segment -----------------------------------------------------------------------------


def test_segment_moves_through_a_volume_slice_by_slice(smoke_model, tmp_path, capsys, lines_every_update):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0], inputs / "a.jpg")
    _volume(inputs / "case.nii.gz", 6)
    args = ["segment", str(inputs), "--output-dir", str(tmp_path / "out"), "--batch-size", "2"]
    assert main([*args, "--model", str(smoke_model), "--config", str(SMOKE_NETWORK), "--device", "cpu"]) == 0
    err = capsys.readouterr().err.splitlines()
    progress = [line.split(", about")[0] for line in err if line.startswith("segment: ")]
    assert progress == [
        "segment: 1 of 2 images",
        "segment: 1 of 2 images (case.nii.gz)",  # its first batch is running
        "segment: 1 of 2 images (case.nii.gz slice 2 of 6)",
        "segment: 1 of 2 images (case.nii.gz slice 4 of 6)",
    ]  # the volume's end is the end of the run: the summary says it
    assert err[-1].startswith("tumor found on") or err[-1].startswith("no tumor found on")
    assert "; nothing found on " in err[-1] and "per-image report: " in err[-1]
    assert err[-1].endswith("; per slice: <volume>_slices.csv beside each volume's mask")


def test_segment_on_a_terminal_draws_the_bar_and_keeps_stdout_to_mask_paths(smoke_model, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(sorted(SAMPLE_SPLIT.glob("*.jpg"))[0], inputs / "a.jpg")
    _volume(inputs / "case.nii.gz", 4)
    out = tmp_path / "out"
    code, stdout, stderr = _on_a_terminal(
        "segment", str(inputs), "--output-dir", str(out), "--batch-size", "2", "--model", str(smoke_model),
        "--config", str(SMOKE_NETWORK), "--device", "cpu",
    )  # fmt: skip
    assert code == 0, stderr[-2000:]
    assert stdout.splitlines() == [str(out / "a.png"), str(out / "case.nii.gz")]
    assert "\rsegment:" in stderr and re.search(r"case\.nii\.gz slice [1-4] of 4", stderr)
    assert "segmented 2 of 2 image(s)" in stderr


# -- train -------------------------------------------------------------------------------


def test_train_counts_epochs_with_the_time_left(tmp_path, capsys, lines_every_update):
    args = ["train", "--dataset-dir", str(SAMPLE_ROOT), "--train-split", "valid", "--val-split", "valid"]
    args += ["--config", str(SMOKE_NETWORK), "--config", str(CONFIGS / "smoke_cpu.json"), "--epochs", "2"]
    assert main([*args, "--device", "cpu", "--output-dir", str(tmp_path / "run")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train: ")]
    assert len(lines) == 1 and lines[0].startswith("train: 1 of 2 epochs, about ") and TIME_LEFT.search(lines[0])
