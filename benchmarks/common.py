"""Shared helpers for the benchmark scripts: timing compiled runs and writing RESULTS.md."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

# This checkout's jppo when none is importable; a jppo already on the path (PYTHONPATH, as
# compare_revisions.py sets for the tree it measures, or an install) is left to win.
if importlib.util.find_spec("jppo") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jppo import bench  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


# One definition of the device line, versions and timing, shared with `jppo bench`.
device_description = bench.device_description
versions = bench.versions
header = bench.header
time_compiled = bench.time_compiled


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    """Replace (or append) the block between `<!-- name -->` markers in RESULTS.md."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: block, current)
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(current)


def markdown_table(header_row, rows) -> str:
    lines = ["| " + " | ".join(header_row) + " |", "|" + "---|" * len(header_row)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
