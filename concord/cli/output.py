"""
What a CLI command prints, in the three formats of `-w`: `table` (rich, aligned),
`json` (one JSON document; streams print one per line) and `simple` (plain lines for
scripts: a single value alone, rows as space-separated fields).

Pure formatting; rich is imported only when a table or a progress bar is drawn, so
`concord get` does not pay for it.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["FORMATS", "Output", "Progressbar", "Streamer", "dumps", "progressbar", "render", "text_of"]

FORMATS = ("table", "json", "simple")


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: object) -> str:
    """One line of JSON (bytes as {"base64": ...})."""
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))


def text_of(value: object) -> str:
    """A value as one cell of text: strings as they are, nil as empty, the rest JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return dumps(value)


@dataclass
class Output:
    """
    One command's result.

    Attributes:
        columns: the table's columns, also the fields of `simple` lines.
        rows: one map per row.
        data: what `-w json` prints (default: the rows).
        single: a command whose answer is one value (`get KEY`) prints it alone in
            `simple`.
        note: a line for stderr after a table or simple output (e.g. "more results").
        exit_code: 0, or the documented non-zero code for a failed check.
    """

    columns: Sequence[str] = ()
    rows: list[dict[str, object]] = field(default_factory=list)
    data: object = None
    single: bool = False
    note: str = ""
    exit_code: int = 0


def render(out: Output, fmt: str, stream: TextIO | None = None) -> None:
    """Print `out` in format `fmt` (one of FORMATS)."""
    stream = stream or sys.stdout
    if fmt == "json":
        stream.write(dumps(out.rows if out.data is None else out.data) + "\n")
        return
    if fmt == "simple" or not out.columns:
        if out.single and out.rows:
            stream.write(text_of(out.rows[0].get(out.columns[0])) + "\n")
        else:
            for row in out.rows:
                stream.write(" ".join(text_of(row.get(c)) for c in out.columns) + "\n")
    else:
        from rich.console import Console  # noqa: PLC0415 (lazy: start-up time)
        from rich.table import Table  # noqa: PLC0415

        table = Table(show_edge=False, header_style="bold")
        for column in out.columns:
            table.add_column(column.upper(), overflow="fold")
        for row in out.rows:
            table.add_row(*(text_of(row.get(c)) for c in out.columns))
        Console(file=stream, soft_wrap=False, width=None if stream.isatty() else 200).print(table)
    if out.note:
        sys.stderr.write(out.note + "\n")


class Streamer:
    """Prints rows one by one as they come (watch): JSON lines, or aligned text."""

    def __init__(self, columns: Sequence[str], fmt: str, stream: TextIO | None = None) -> None:
        self.columns = columns
        self.fmt = fmt
        self.stream = stream or sys.stdout
        if fmt == "table":
            self.stream.write("  ".join(c.upper() for c in columns) + "\n")

    def emit(self, row: dict[str, object]) -> None:
        if self.fmt == "json":
            line = dumps(row)
        else:
            line = " ".join(text_of(row.get(c)) for c in self.columns)
        self.stream.write(line + "\n")
        self.stream.flush()


class Progressbar:
    """A progress bar on stderr (rich), drawn only when stderr is a terminal."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    def advance(self, amount: float) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def total(self, total: float | None) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=total)


@contextmanager
def progressbar(
    description: str, total: float | None, in_bytes: bool = True, enabled: bool = True
) -> Iterator[Progressbar]:
    """
    A rich progress bar on stderr while the block runs; inert when stderr is not a
    terminal (scripts, tests) or `enabled` is false.
    """
    if not (enabled and sys.stderr.isatty()):
        yield Progressbar(None, None)
        return
    from rich.console import Console  # noqa: PLC0415 (lazy: start-up time)
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns: tuple[ProgressColumn, ...] = (
        (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()) if in_bytes
        else (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()))
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        progress.console.print(description)
        yield Progressbar(progress, progress.add_task(description, total=total))
