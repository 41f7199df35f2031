"""What a training loop shows while it runs: a rich progress bar in a terminal, else plain lines.

The display only receives numbers that the loop has already brought to the host between
compiled chunks; it never touches device arrays.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence


def _eta(seconds: float) -> str:
    if not seconds or seconds != seconds or seconds == float("inf"):
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class PlainDisplay:
    """One line per chunk: for logs, CI and anything that is not an interactive terminal."""

    def __init__(self, file=None):
        self.file = file or sys.stdout
        self.total = 0
        self.started = time.perf_counter()

    def _print(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def begin(self, header: str, total_updates: int, done_updates: int) -> None:
        self.total = total_updates
        self.started = time.perf_counter()
        self._print(header)
        if done_updates:
            self._print(f"resuming at update {done_updates}/{total_updates}")

    def compiled(self, seconds: float) -> None:
        self.started = time.perf_counter()  # elapsed and ETA count training only
        self._print(f"compiled in {seconds:.1f}s")

    def message(self, text: str) -> None:
        self._print(text)

    def advance(self, update: int, env_steps: int, sps: float, ret: float, eta: float) -> None:
        elapsed = time.perf_counter() - self.started
        self._print(
            f"update {update}/{self.total}  steps {env_steps:,}  {sps:,.0f} steps/s  "
            f"return {ret:.2f}  elapsed {_eta(elapsed)}  eta {_eta(eta)}"
        )

    def abort(self) -> None:
        """The run failed: leave the terminal as it was."""

    def end(self, rows: Sequence[tuple[str, str]], findings: Sequence[str]) -> None:
        width = max(len(k) for k, _ in rows)
        self._print("summary")
        for key, value in rows:
            self._print(f"  {key:<{width}}  {value}")
        self._print("health check: " + ("no findings" if not findings else ""))
        for finding in findings:
            self._print(f"  {finding}")


class RichDisplay(PlainDisplay):
    """A live progress bar (updates, env steps, steps/s, return, elapsed, ETA) and a table."""

    def __init__(self, console):
        super().__init__(console.file)
        self.console = console
        self.progress = None
        self.task = None

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def begin(self, header: str, total_updates: int, done_updates: int) -> None:
        super().begin(header, total_updates, done_updates)
        self.done = done_updates

    def compiled(self, seconds: float) -> None:
        # The bar starts after compiling, so its elapsed time and ETA are training time.
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        super().compiled(seconds)
        self.progress = Progress(
            TextColumn("[bold]{task.completed}/{task.total} updates"),
            BarColumn(),
            TextColumn("{task.fields[steps]} steps"),
            TextColumn("{task.fields[sps]} steps/s"),
            TextColumn("return {task.fields[ret]}"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=self.console,
            refresh_per_second=2,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train",
            total=self.total,
            completed=self.done,
            steps="0",
            sps="-",
            ret="-",
            eta="-",
        )

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def advance(self, update: int, env_steps: int, sps: float, ret: float, eta: float) -> None:
        self.progress.update(
            self.task,
            completed=update,
            steps=f"{env_steps:,}",
            sps=f"{sps:,.0f}",
            ret=f"{ret:.2f}",
            eta=_eta(eta),
        )

    def abort(self) -> None:
        if self.progress is not None:
            self.progress.stop()

    def end(self, rows: Sequence[tuple[str, str]], findings: Sequence[str]) -> None:
        from rich.table import Table

        if self.progress is not None:
            self.progress.stop()
        table = Table(title="summary", show_header=False)
        for key, value in rows:
            table.add_row(key, value)
        self.console.print(table)
        if findings:
            health = Table(title="health check", show_header=False)
            for finding in findings:
                health.add_row(finding)
            self.console.print(health)
        else:
            self.console.print("health check: no findings")


def make_display(interactive: bool | None = None):
    """A rich bar on an interactive terminal (not in CI), else one plain line per chunk."""
    from rich.console import Console

    console = Console()
    if interactive is None:
        interactive = console.is_terminal and not console.is_dumb_terminal
        interactive = interactive and not os.environ.get("CI")
    return RichDisplay(console) if interactive else PlainDisplay()
