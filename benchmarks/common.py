"""Shared helpers for the benchmark scripts: timing compiled runs and writing RESULTS.md."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import statistics
import time
from pathlib import Path

import jax

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def device_description() -> str:
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    if dev.platform == "cpu":
        return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    return f"{dev.platform.upper()} {kind}"


def versions() -> str:
    names = ("jax", "jaxlib", "flax", "optax", "distrax", "gymnax")
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(parts) + f", Python {platform.python_version()}"


def header() -> str:
    today = datetime.date.today().isoformat()
    return f"Device: {device_description()}; {versions()}; {today}."


def time_compiled(fn, *args, repeats: int = 3):
    """(compile seconds, median run seconds) of `jax.jit(fn)(*args)`, compile excluded."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up run
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - start)
    return compile_s, statistics.median(runs)


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
