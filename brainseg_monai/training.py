"""Running the bundle's training workflow: initialize, build the trainer, and finalize only what was built."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["training_workflow"]


@contextlib.contextmanager
def training_workflow(workflow: Any) -> Iterator[Any]:
    """Initialize a ``ConfigWorkflow`` of the bundle's ``train.json`` and yield its trainer (``train#trainer``).

    The workflow is finalized on the way out, also after an error or an interrupt, but only once the
    trainer exists. ``finalize`` runs the config's ``finalize`` expressions, and ``train.json``'s closes
    the TensorBoard writers of ``@train#handlers`` and ``@validate#handlers``: before the trainer is
    built, resolving those would build the validator and its datasets, reading and caching every image
    of the splits while the user waits for Ctrl-C or SIGTERM to take effect.

    Args:
        workflow: the workflow (``monai.bundle.ConfigWorkflow`` with ``workflow_type="train"``).

    Yields:
        the trainer instance ``workflow.run()`` runs, to attach handlers to.
    """
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    try:
        yield trainer
    finally:
        workflow.finalize()
