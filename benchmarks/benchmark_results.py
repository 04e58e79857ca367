"""How the benchmarks hand their figures over: shares as counts and percentages, printed as JSON and written
to ``--json`` when given."""

from __future__ import annotations

import json
from typing import Any


def share(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a count and a percentage: "4 of 376 (1.1%)"."""
    return f"{part} of {whole} ({part / max(1, whole):.1%})"


def emit(results: dict[str, Any], json_path: str | None = None) -> None:
    """Print ``results`` as indented JSON and, with ``json_path``, write the same text there."""
    text = json.dumps(results, indent=2)
    print(text)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as f:
            f.write(text + "\n")
