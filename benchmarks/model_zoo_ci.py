"""Run the MONAI Model Zoo's own CI checks on the bundle and print one line per check.

    python benchmarks/model_zoo_ci.py [--model-zoo ../shared/model-zoo] [--bundle bundle] [--name NAME]

What the Model Zoo repository runs on a bundle submitted as ``models/<name>``, with its own
files (not copies of them):

- ``ci/verify_bundle.py`` in ``min`` and ``full`` mode: required files, the metadata against its
  schema, version and changelog, the properties of every workflow, the network's input and
  output shapes, the TorchScript export;
- ``runtests.sh --codeformat``: isort, black ``--skip-magic-trailing-comma`` and flake8 (with the
  plugins of its ``requirements-dev.txt`` that are installed) under its ``setup.cfg`` and
  ``pyproject.toml``, on the bundle's code;
- the pre-commit hooks of its ``.pre-commit-config.yaml`` that ``pre-commit-hooks`` provides, on
  the bundle's files (fixers run on the copy and must change nothing).

The bundle is copied to a temporary ``models/<name>``. The metadata schema comes from
``../shared/monai`` when that offline copy exists (the CI downloads it). Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from brainseg_monai.package import DEFAULT_BUNDLE_NAME

REPO = Path(__file__).resolve().parent.parent
TEXT_SUFFIXES = {".py", ".json", ".md", ".yml", ".yaml", ".conf", ".txt", ""}
# pre-commit's file types for the hooks that check one kind of file
HOOK_SUFFIXES = {"check-docstring-first": {".py"}, "check-yaml": {".yml", ".yaml"}, "pretty-format-json": {".json"}}
# hook id -> console script of pre-commit-hooks (where they differ)
HOOK_SCRIPTS = {"trailing-whitespace": "trailing-whitespace-fixer"}
# hooks about the git repository itself (submodules, keys, executables, case), not a bundle's content
REPOSITORY_HOOKS = {
    "check-added-large-files",
    "forbid-new-submodules",
    "detect-private-key",
    "check-executables-have-shebangs",
    "check-case-conflict",
    "check-toml",
}


def _run(command: list[str], cwd: Path) -> tuple[bool, str]:
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


def _copy_bundle(bundle: Path, root: Path, name: str) -> Path:
    dst = root / "models" / name
    shutil.copytree(bundle, dst, ignore=shutil.ignore_patterns("eval", "__pycache__", "checkpoint*.pt", "*.ts"))
    schema = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
    if schema.is_file():  # verify_metadata downloads it to eval/schema.json unless it is there
        (dst / "eval").mkdir()
        shutil.copy(schema, dst / "eval" / "schema.json")
    (root / "models" / "model_info.json").write_text("{}")  # no earlier release of this bundle
    return dst


def verify_bundle(zoo: Path, root: Path, name: str, mode: str) -> tuple[bool, str]:
    """``ci/verify_bundle.py -b NAME -m MODE`` from the copy's repository root."""
    return _run([sys.executable, str(zoo / "ci" / "verify_bundle.py"), "-b", name, "-m", mode], root)


def code_format(zoo: Path, code: Path) -> list[tuple[str, bool, str]]:
    """isort, black and flake8 as ``runtests.sh --codeformat`` runs them, on ``code``."""
    files = sorted(str(p) for p in code.rglob("*.py"))
    checks = [
        ("isort", [sys.executable, "-m", "isort", "--settings-path", str(zoo / "setup.cfg"), "--check", *files]),
        (
            "black",
            [sys.executable, "-m", "black", "--config", str(zoo / "pyproject.toml")]
            + ["--skip-magic-trailing-comma", "--check", *files],
        ),
        ("flake8", [sys.executable, "-m", "flake8", "--config", str(zoo / "setup.cfg"), *files]),
    ]
    return [(f"runtests.sh {name}", *_run(cmd, zoo)) for name, cmd in checks]


def flake8_plugins() -> list[str]:
    """The flake8 plugins of Model Zoo's requirements-dev.txt that are installed here."""
    wanted = ["flake8-bugbear", "flake8-comprehensions", "flake8-executable", "pep8-naming"]
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in wanted:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return found


def pre_commit_hooks(zoo: Path, bundle_copy: Path) -> list[tuple[str, bool, str]]:
    """Model Zoo's pre-commit-hooks entries, run on the bundle's text files."""
    config = yaml.safe_load((zoo / ".pre-commit-config.yaml").read_text())
    hooks = next(r["hooks"] for r in config["repos"] if r["repo"].endswith("pre-commit/pre-commit-hooks"))
    files = [p for p in bundle_copy.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES and "eval" not in p.parts]
    results, seen = [], set()
    for hook in hooks:
        hook_id = hook["id"]
        if hook_id in seen or hook_id in REPOSITORY_HOOKS:
            continue
        seen.add(hook_id)
        exe = Path(sys.executable).with_name(HOOK_SCRIPTS.get(hook_id, hook_id))
        if not exe.is_file():
            results.append((f"pre-commit {hook_id}", False, f"{exe.name} not installed (pip install pre-commit-hooks)"))
            continue
        args = [a for a in hook.get("args", []) if a != "--autofix"]  # check, do not fix
        targets = [p for p in files if p.suffix in HOOK_SUFFIXES.get(hook_id, TEXT_SUFFIXES)]
        before = {p: p.read_bytes() for p in targets}
        ok, out = _run([str(exe), *args, *map(str, targets)], bundle_copy)
        changed = [p for p in targets if p.read_bytes() != before[p]]
        for p in changed:
            p.write_bytes(before[p])
        ok = ok and not changed
        results.append((f"pre-commit {hook_id}", ok, out if not ok else f"{len(targets)} files"))
    return results


def large_files(bundle_copy: Path) -> tuple[bool, str]:
    """check-added-large-files (--maxkb=1024): only the weights listed in large_files.yml may exceed it."""
    listed = {e["path"] for e in yaml.safe_load((bundle_copy / "large_files.yml").read_text())["large_files"]}
    big = sorted(
        p.relative_to(bundle_copy).as_posix()
        for p in bundle_copy.rglob("*")
        if p.is_file() and p.stat().st_size > 1024 * 1024 and "eval" not in p.parts
    )
    unlisted = [b for b in big if b not in listed]
    return not unlisted, f"over 1 MB: {big}; not in large_files.yml: {unlisted}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-zoo", default=str(REPO.parent / "shared" / "model-zoo"))
    ap.add_argument("--bundle", default=str(REPO / "bundle"))
    ap.add_argument("--name", default=DEFAULT_BUNDLE_NAME, help="the bundle's folder name in models/")
    args = ap.parse_args()
    zoo, bundle = Path(args.model_zoo).resolve(), Path(args.bundle).resolve()
    if not (zoo / "ci" / "verify_bundle.py").is_file():
        print(f"{zoo}: not a Model Zoo checkout (no ci/verify_bundle.py)", file=sys.stderr)
        return 2
    name = args.name
    results: list[tuple[str, bool, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        copy = _copy_bundle(bundle, root, name)
        results.append(("check-added-large-files --maxkb=1024", *large_files(copy)))  # before verify writes a .ts
        for mode in ("min", "full"):
            results.append((f"verify_bundle.py -m {mode}", *verify_bundle(zoo, root, name, mode)))
        results += code_format(zoo, copy / "scripts")
        results += pre_commit_hooks(zoo, copy)
        unchanged = filecmp.dircmp(bundle / "configs", copy / "configs")
        assert not unchanged.diff_files, unchanged.diff_files  # the checks ran on the copy only
    plugins = flake8_plugins()
    print(f"Model Zoo CI on {bundle} as models/{name} (flake8 plugins: {', '.join(plugins) or 'none'})")
    for check, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {check}")
        if not ok:
            print("      " + detail[-2000:].replace("\n", "\n      "))
    failed = sum(not ok for _, ok, _ in results)
    print(f"{len(results) - failed} of {len(results)} checks pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
