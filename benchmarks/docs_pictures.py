"""Regenerate the documentation's pictures from a bundle's model and the repository's sample data.

    python benchmarks/docs_pictures.py [--bundle-dir bundle] [--output-dir bundle/docs/images]
        [--search-split ../shared/data/brain_tumor_coco/valid] [--tumor-free-split DIR]

Writes into ``--output-dir``:

* ``evaluate_terminal.png``: what ``brainseg evaluate`` prints for the sample split, as a
  terminal shows it. The README's first command runs in a detached tmux session of a fixed size
  (``--columns`` x ``--rows``), from a scratch folder where ``bundle`` points at ``--bundle-dir``;
  when it has ended, the pane is captured (``tmux capture-pane -p -e``) and drawn with a monospace
  TrueType font on a dark background. Needs ``tmux`` (``apt-get install tmux``).
* ``overlay_tumor.png``, ``overlay_possible_tumor.png``, ``overlay_tumor_free.png``: the overlays
  ``brainseg segment --overlays`` writes, exactly as a user gets them, for three slices picked
  from its ``tumor_report.csv``: the sample slice with the highest tumor score among those with
  the verdict "tumor"; the slice with the highest score among those with the verdict "possible
  tumor" (from the sample split, or, where it has none, from ``--search-split``); and the
  tumor-free slice with the lowest score among those with the verdict "no tumor found": a
  synthetic one (``benchmarks/make_tumor_free_split.py`` on the sample split), or a real one
  from ``--tumor-free-split`` (e.g. the ``tumor_free`` split of ``benchmarks/make_lgg_splits.py``).

Nothing is trained: every picture comes from the bundle's weights as they are, so after a new
model is installed this one command brings the pictures up to date. It prints which slice each
picture shows.
"""

from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundle"
SEARCH_SPLIT = REPO.parent / "shared" / "data" / "brain_tumor_coco" / "valid"
REPORT = "tumor_report.csv"
TUMOR, POSSIBLE, NO_TUMOR = "tumor", "possible tumor", "no tumor found"

#: Terminal colours (a dark theme): background, default foreground, and the 16 ANSI colours.
BACKGROUND = (30, 30, 30)
FOREGROUND = (212, 212, 212)
ANSI16 = [
    (0, 0, 0), (205, 49, 49), (13, 188, 121), (229, 229, 16), (36, 114, 200), (188, 63, 188), (17, 168, 205),
    (229, 229, 229), (102, 102, 102), (241, 76, 76), (35, 209, 139), (245, 245, 67), (59, 142, 234),
    (214, 112, 214), (41, 184, 219), (255, 255, 255),
]  # fmt: skip
SGR = re.compile(r"\x1b\[([0-9;:]*)m")
OTHER_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-ln-z]|\][^\x07]*\x07|[()][A-Za-z0-9])")


class Failed(Exception):
    """A step that cannot go on; its message says why."""


# -------------------------------------------------------------------------------------- commands


def brainseg_executable() -> str:
    """The ``brainseg`` command of the environment running this script (else the one on the PATH)."""
    beside = Path(sys.executable).parent / "brainseg"
    found = str(beside) if beside.is_file() else shutil.which("brainseg")
    if not found:
        raise Failed("no brainseg command: install the package first (pip install -e .)")
    return found


def run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise Failed(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc


def segment(brainseg: str, inputs: list[str], out: Path, bundle_args: list[str], overlays: bool) -> list[dict]:
    """``brainseg segment`` into ``out``; the rows of its tumor report."""
    cmd = [brainseg, "segment", *inputs, "--output-dir", str(out), *bundle_args, *(["--overlays"] if overlays else [])]
    run(cmd, f"brainseg segment {' '.join(inputs)}")
    with open(out / REPORT, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pick(rows: list[dict], verdict: str, highest: bool = True) -> dict | None:
    chosen = [r for r in rows if r.get("verdict") == verdict]
    if not chosen:
        return None
    return sorted(chosen, key=lambda r: float(r["tumor_score"]), reverse=highest)[0]


def overlay_of(out: Path, row: dict) -> Path:
    path = out / "overlays" / (Path(row["file_name"]).stem + ".png")
    if not path.is_file():
        raise Failed(f"{path}: brainseg segment --overlays wrote no overlay for {row['file_name']}")
    return path


# -------------------------------------------------------------------------------------- terminal


def monospace_font() -> str:
    """A monospace TrueType font on this machine (fontconfig's choice first)."""
    if shutil.which("fc-match"):
        proc = subprocess.run(
            ["fc-match", "-f", "%{file}", "DejaVu Sans Mono:style=Book"], capture_output=True, text=True
        )
        if proc.returncode == 0 and proc.stdout.endswith((".ttf", ".otf")) and "Mono" in proc.stdout:
            return proc.stdout
    for pattern in (
        "/usr/share/fonts/**/DejaVuSansMono.ttf",
        "/usr/share/fonts/**/LiberationMono-Regular.ttf",
        "/usr/share/fonts/**/*Mono*.ttf",
        "/Library/Fonts/*Mono*.ttf",
        "C:/Windows/Fonts/consola.ttf",
    ):
        found = sorted(glob.glob(pattern, recursive=True))
        if found:
            return found[0]
    raise Failed("no monospace TrueType font found (install fonts-dejavu-core)")


def _colour(params: list[int], i: int) -> tuple[tuple[int, int, int] | None, int]:
    """The colour of an extended SGR colour (``38;5;n`` or ``38;2;r;g;b``) at ``params[i]``, and the next index."""
    if i + 1 < len(params) and params[i + 1] == 5 and i + 2 < len(params):
        n = params[i + 2]
        if n < 16:
            return ANSI16[n], i + 3
        if n < 232:
            n -= 16
            steps = [0, 95, 135, 175, 215, 255]
            return (steps[n // 36], steps[n // 6 % 6], steps[n % 6]), i + 3
        grey = 8 + 10 * (n - 232)
        return (grey, grey, grey), i + 3
    if i + 1 < len(params) and params[i + 1] == 2 and i + 4 < len(params):
        return tuple(params[i + 2 : i + 5]), i + 5  # type: ignore[return-value]
    return None, len(params)


def styled_runs(line: str) -> list[tuple[str, tuple[int, int, int], bool]]:
    """A captured line with SGR escapes as ``(text, colour, bold)`` runs."""
    line = OTHER_ESCAPE.sub("", line)
    runs: list[tuple[str, tuple[int, int, int], bool]] = []
    fg: tuple[int, int, int] | None = None
    bold = False
    pos = 0
    for m in SGR.finditer(line):
        if m.start() > pos:
            runs.append((line[pos : m.start()], fg or FOREGROUND, bold))
        pos = m.end()
        params = [int(p) if p.isdigit() else 0 for p in re.split("[;:]", m.group(1))] if m.group(1) else [0]
        i = 0
        while i < len(params):
            p = params[i]
            if p == 0:
                fg, bold = None, False
            elif p == 1:
                bold = True
            elif p == 22:
                bold = False
            elif 30 <= p <= 37:
                fg = ANSI16[p - 30 + (8 if bold else 0)]
            elif 90 <= p <= 97:
                fg = ANSI16[p - 90 + 8]
            elif p == 39:
                fg = None
            elif p == 38:
                fg, i = _colour(params, i)
                continue
            elif p == 48:
                _, i = _colour(params, i)  # backgrounds are not drawn
                continue
            i += 1
    if pos < len(line):
        runs.append((line[pos:], fg or FOREGROUND, bold))
    return runs


def render_terminal(text: str, path: Path, columns: int, font_size: int = 15) -> None:
    from PIL import Image, ImageDraw, ImageFont

    regular = monospace_font()
    bold_file = regular.replace("Mono.ttf", "Mono-Bold.ttf").replace("Regular", "Bold")
    font = ImageFont.truetype(regular, font_size)
    font_bold = ImageFont.truetype(bold_file, font_size) if os.path.isfile(bold_file) else font
    cell_w = font.getlength("M")
    ascent, descent = font.getmetrics()
    cell_h = int(round((ascent + descent) * 1.15))
    lines = text.rstrip("\n").split("\n")
    while lines and not OTHER_ESCAPE.sub("", SGR.sub("", lines[-1])).strip():
        lines.pop()
    pad = 18
    image = Image.new("RGB", (int(columns * cell_w) + 2 * pad, len(lines) * cell_h + 2 * pad), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        col = 0
        for chunk, colour, bold in styled_runs(line):
            for ch in chunk:  # cell by cell, as the terminal lays them out
                draw.text((pad + col * cell_w, pad + row * cell_h), ch, font=font_bold if bold else font, fill=colour)
                col += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    image.save(tmp)
    os.replace(tmp, path)


def evaluate_in_tmux(brainseg: str, bundle_dir: Path, work: Path, columns: int, rows: int, timeout_s: float) -> str:
    """Run the README's first command in a fresh tmux pane; the pane's text once the command has ended."""
    tmux = shutil.which("tmux")
    if not tmux:
        raise Failed("tmux is missing: it runs the command in a terminal of a fixed size (apt-get install tmux)")
    folder = work / "terminal"
    folder.mkdir()
    (folder / "bundle").symlink_to(bundle_dir.resolve(), target_is_directory=True)
    command = (
        "brainseg evaluate bundle/sample_data/valid --output-dir out/sample "
        "--outlines bundle/sample_data/valid_outlines --overlays"
    )
    if bundle_dir.resolve() != BUNDLE.resolve():
        command += " --bundle-dir bundle"
    marker = work / "prompt_shown"
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(brainseg).parent}{os.pathsep}{env.get('PATH', '')}",
        PROMPT_COMMAND=f"PS1='$ '; touch {marker}",  # bash resets PS1 from the environment; set it here
        TERM="xterm-256color",
        HISTFILE="/dev/null",
    )
    socket = f"brainseg-docs-{os.getpid()}"
    base = [tmux, "-L", socket, "-f", os.devnull]
    subprocess.run(
        [*base, "new-session", "-d", "-s", "docs", "-x", str(columns), "-y", str(rows), "-c", str(folder),
         "bash --noprofile --norc"],
        env=env, check=True,
    )  # fmt: skip
    try:
        _wait_for(marker, 30, "the tmux shell's prompt")
        marker.unlink()
        subprocess.run([*base, "send-keys", "-t", "docs", "clear", "Enter"], check=True)
        _wait_for(marker, 30, "the cleared tmux pane")
        marker.unlink()
        subprocess.run([*base, "send-keys", "-t", "docs", "-l", command], check=True)
        subprocess.run([*base, "send-keys", "-t", "docs", "Enter"], check=True)
        _wait_for(marker, timeout_s, f"{command} (in tmux)")
        time.sleep(0.5)  # let the pane draw the last prompt
        proc = subprocess.run([*base, "capture-pane", "-p", "-e", "-t", "docs"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise Failed(f"tmux capture-pane failed: {proc.stderr.strip()}")
    finally:
        subprocess.run([*base, "kill-server"], capture_output=True)
    if not (folder / "out" / "sample" / "metrics_summary.json").is_file():
        raise Failed(f"brainseg evaluate did not finish in tmux; the pane read:\n{SGR.sub('', proc.stdout).strip()}")
    return proc.stdout


def _wait_for(path: Path, timeout_s: float, what: str) -> None:
    end = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > end:
            raise Failed(f"waited {timeout_s:.0f} s for {what}")
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------ main


def overlays(
    brainseg: str, bundle_dir: Path, work: Path, search_split: Path | None, tumor_free_split: Path | None
) -> dict[str, tuple[Path, dict]]:
    bundle_args = [] if bundle_dir.resolve() == BUNDLE.resolve() else ["--bundle-dir", str(bundle_dir)]
    sample = bundle_dir / "sample_data" / "valid"
    if not sample.is_dir():
        raise Failed(f"{sample}: no sample split in the bundle")
    rows = segment(brainseg, [str(sample)], work / "sample", bundle_args, overlays=True)
    chosen: dict[str, tuple[Path, dict]] = {}
    tumor = pick(rows, TUMOR)
    if tumor is None:
        raise Failed(f"no sample slice has the verdict {TUMOR!r}: {work / 'sample' / REPORT}")
    chosen["overlay_tumor.png"] = (overlay_of(work / "sample", tumor), tumor)

    possible = pick(rows, POSSIBLE)
    if possible is not None:
        chosen["overlay_possible_tumor.png"] = (overlay_of(work / "sample", possible), possible)
    else:
        if search_split is None or not search_split.is_dir():
            raise Failed(f"no sample slice is a {POSSIBLE!r} and there is no --search-split ({search_split})")
        found = pick(segment(brainseg, [str(search_split)], work / "search", bundle_args, overlays=False), POSSIBLE)
        if found is None:
            raise Failed(f"no slice of {search_split} is a {POSSIBLE!r} either")
        image = search_split / found["file_name"]
        again = segment(brainseg, [str(image)], work / "possible", bundle_args, overlays=True)
        chosen["overlay_possible_tumor.png"] = (overlay_of(work / "possible", again[0]), again[0])

    free = tumor_free_split
    if free is None:  # synthetic tumor-free slices made from the sample split
        free = work / "tumor_free_split"
        script = REPO / "benchmarks" / "make_tumor_free_split.py"
        run([sys.executable, str(script), str(sample), str(free)], "make_tumor_free_split.py")
    free_rows = segment(brainseg, [str(free)], work / "tumor_free", bundle_args, overlays=True)
    nothing = pick(free_rows, NO_TUMOR, highest=False)
    if nothing is None:
        raise Failed(f"every tumor-free slice of {free} shows a tumor: {work / 'tumor_free' / REPORT}")
    chosen["overlay_tumor_free.png"] = (overlay_of(work / "tumor_free", nothing), nothing)
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--bundle-dir", type=Path, default=BUNDLE, help="the bundle whose model draws (default: %(default)s)"
    )
    ap.add_argument(
        "--output-dir", type=Path, default=BUNDLE / "docs" / "images", help="where the PNGs go (default: %(default)s)"
    )
    ap.add_argument(
        "--search-split",
        type=Path,
        default=SEARCH_SPLIT,
        help="a split searched for a possible tumor when the sample split has none (default: %(default)s)",
    )
    ap.add_argument(
        "--tumor-free-split",
        type=Path,
        default=None,
        help="a folder of real tumor-free slices (e.g. the tumor_free split of benchmarks/make_lgg_splits.py) to "
        "pick the tumor-free picture from (default: synthetic ones made from the sample split)",
    )
    ap.add_argument("--columns", type=int, default=132, help="terminal width in characters (default: %(default)s)")
    ap.add_argument("--rows", type=int, default=34, help="terminal height in lines (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for brainseg evaluate")
    ap.add_argument("--keep-work", action="store_true", help="keep the scratch folder and print where it is")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="docs_pictures_"))
    try:
        if not shutil.which("tmux"):  # before any work
            raise Failed(
                "tmux is missing: it runs brainseg evaluate in a terminal of a fixed size (apt-get install tmux)"
            )
        if not (args.bundle_dir / "configs" / "inference.json").is_file():
            raise Failed(f"{args.bundle_dir}: not a bundle (no configs/inference.json)")
        brainseg = brainseg_executable()
        monospace_font()
        args.output_dir.mkdir(parents=True, exist_ok=True)

        pane = evaluate_in_tmux(brainseg, args.bundle_dir, work, args.columns, args.rows, args.timeout)
        target = args.output_dir / "evaluate_terminal.png"
        render_terminal(pane, target, args.columns)
        print(f"{target}: brainseg evaluate on the sample split, {args.columns}x{args.rows} tmux pane")

        if args.tumor_free_split is not None and not args.tumor_free_split.is_dir():
            raise Failed(f"--tumor-free-split {args.tumor_free_split}: no such folder")
        chosen = overlays(brainseg, args.bundle_dir, work, args.search_split, args.tumor_free_split)
        for name, (source, row) in chosen.items():
            shutil.copyfile(source, args.output_dir / name)
            score = float(row["tumor_score"])
            print(f"{args.output_dir / name}: {row['file_name']}, {row['verdict']}, tumor score {score:.2f}")
    except Failed as e:
        print(f"docs_pictures: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep_work:
            print(f"scratch folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
