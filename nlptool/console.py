"""What the user sees on the console: the start and end panels, tables, the progress bar.

(What is written down, metrics.jsonl and the trackers, is `nlptool.training.loggers`.)
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console(highlight=False)
# Into a file or a pipe (logs, CI, cluster jobs) a line stays one line, paths and all, so that
# it can be grepped; rich would break it at 80 columns there. A terminal wraps as it likes.
console.soft_wrap = not console.is_terminal


def table_box() -> dict[str, Any]:
    """Table() keywords: rich's lines on a terminal, none in a log file (plain columns)."""
    return {} if console.is_terminal else {"box": None}


def format_value(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4f}"
    return str(value)


def show_start(title: str, rows: list[tuple[str, str]], quiet: bool = False) -> None:
    """The start-up panel: what will run (model, data, steps, device...). On a terminal a rich
    panel; otherwise (CI logs, files) plain `key  value` lines; nothing when quiet."""
    if quiet:
        return
    if console.is_terminal:
        console.print(Panel(summary_table("", rows), title=title, title_align="left", expand=False))
        return
    width = max(len(key) for key, _ in rows)
    console.print(title)
    for key, value in rows:
        console.print(f"  {key:<{width}}  {value}", soft_wrap=True)


def show_end(
    title: str,
    history: dict[str, dict[str, Any]],
    rows: list[tuple[str, str]],
    quiet: bool = False,
) -> None:
    """The end panel: the validation metrics (start, end, best), then time, throughput, MFU and
    the checkpoint. A rich panel on a terminal, plain aligned text otherwise."""
    if quiet:
        return
    if console.is_terminal:
        body = Group(metrics_table("", history), summary_table("", rows))
        console.print(Panel(body, title=title, title_align="left", expand=False))
        return
    console.print(title)
    columns = list(history)
    names: list[str] = []
    for metrics in history.values():
        names.extend(k for k in metrics if k not in names and k != "step")
    cells = [["metric", *columns]] + [
        [name, *(format_value(history[c][name]) if name in history[c] else "" for c in columns)]
        for name in names
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        console.print(
            "  " + "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            ),
            soft_wrap=True,
        )  # fmt: skip
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        console.print(f"  {key:<{width}}  {value}", soft_wrap=True)


def summary_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


def metrics_table(title: str, records: dict[str, dict[str, Any]]) -> Table:
    """records: column name (e.g. "start", "end") -> metrics; one row per metric name."""
    table = Table(title=title, title_justify="left", **table_box())
    table.add_column("metric", style="bold")
    names: list[str] = []
    for metrics in records.values():
        names.extend(k for k in metrics if k not in names and k != "step")
    for column in records:
        table.add_column(column, justify="right")
    for name in names:
        table.add_row(name, *(format_value(m.get(name, "")) for m in records.values()))
    return table


class TrainingProgress:
    """A rich progress bar (step, loss, lr, tokens/s, ETA) on a terminal; log lines otherwise."""

    def __init__(
        self, total_steps: int, start_step: int, enabled: bool = True, quiet: bool = False
    ) -> None:
        self.live = enabled and console.is_terminal and not quiet
        self.quiet = quiet  # no bar and no log lines (trainer.quiet)
        self.total, self.start = total_steps, start_step
        self.started = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold blue]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.live,
        )
        self.task = self.progress.add_task(
            "train", total=total_steps, completed=start_step, stats=""
        )

    def __enter__(self) -> TrainingProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def advance(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def log(self, record: dict[str, Any]) -> None:
        loss = record.get("train/loss")  # absent when every step of the window was skipped
        stats = (
            f"loss {'-' if loss is None else format(loss, '.4f')}  lr {record['train/lr']:.2e}  "
            f"{record['train/tokens_per_s']:,.0f} tok/s"
        )
        if "train/mfu" in record:
            stats += f"  MFU {record['train/mfu']:.2f}"
        if record.get("train/nonfinite_skips"):
            stats += f"  {record['train/nonfinite_skips']} skipped"
        self.progress.update(self.task, stats=stats)
        if not self.live and not self.quiet:
            done = record["step"] - self.start
            elapsed = time.perf_counter() - self.started
            eta = elapsed / max(done, 1) * (self.total - record["step"])
            console.print(f"step {record['step']:>6}/{self.total}  {stats}  eta {eta:,.0f}s")

    def note(self, message: str) -> None:
        if not self.quiet:
            self.progress.console.print(message)
