"""`llmos eval`: measure an agent's memory on a model of the user's choice, as the papers do.

Tasks (one module each): `nested_kv` (MemGPT's nested key-value retrieval),
`dmr` (generated multi-session deep memory retrieval), `locomo` and
`longmemeval` (from the user's data file), `archival` (retrieval quality of
archival search on a labelled set, no model needed). `harness.py` puts a
question to an agent or, for the no-memory baseline, to the bare model;
`scoring.py` scores; `runner.py` runs, resumes and reports.

The package sits just above the kernel: it uses `Kernel` as a user would
(create an agent, send, read the reply) and nothing under it imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASKS = ("nested-kv", "dmr", "locomo", "longmemeval", "archival")
NEEDS_FILE = ("locomo", "longmemeval")


def make_task(
    name: str, file: Path | None = None, *, size: int | None = None, seed: int = 0
) -> Any:
    """The task object for a task name; raises ValueError for a bad name or missing file."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    if name in NEEDS_FILE and file is None:
        raise ValueError(f"the {name} task reads a data file: llmos eval {name} FILE --model ...")
    if name not in NEEDS_FILE and file is not None:
        raise ValueError(f"the {name} task takes no data file (it is generated)")
    if name == "nested-kv":
        from llmos.evals.nested_kv import NestedKV

        return NestedKV(size or 10, seed)
    if name == "dmr":
        from llmos.evals.dmr import DeepMemoryRetrieval

        return DeepMemoryRetrieval(size or 10, seed)
    if name == "locomo":
        from llmos.evals.locomo import LoCoMo

        return LoCoMo(file, size)  # type: ignore[arg-type]
    if name == "longmemeval":
        from llmos.evals.longmemeval import LongMemEval

        return LongMemEval(file, size)  # type: ignore[arg-type]
    from llmos.evals.archival import ArchivalRetrieval

    return ArchivalRetrieval()
