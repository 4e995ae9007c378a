"""Terminal and process niceties shared by the fit, the prior training and the CLI: a progress
bar, torch thread pinning, and errors as one line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cardioinr.core.errors import CardioInrError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


def progress_bar(total: int, description: str, enabled: bool = True, *, eta_label: bool = False,
                 stderr: bool = False) -> tuple[Progress, TaskID] | None:
    """A started, transient rich progress bar of ``total`` steps, or None when not ``enabled``.

    Columns: description, bar, ``completed/total``, elapsed time, remaining time (preceded by
    the word "ETA" with ``eta_label``). ``stderr`` draws it on standard error, leaving standard
    output to results. Update it as ``bar[0].update(bar[1], ...)`` and stop it with
    ``bar[0].stop()``.
    """
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn()]
    if eta_label:
        columns.append(TextColumn("ETA"))
    columns.append(TimeRemainingColumn())
    console = None
    if stderr:
        from rich.console import Console

        console = Console(stderr=True)
    p = Progress(*columns, console=console, transient=True)
    task = p.add_task(description, total=total)
    p.start()
    return p, task


def pin_threads(n: int | None, *, interop: bool = False) -> None:
    """Let torch use ``n`` threads (nothing when ``n`` is None or 0). ``interop``: also one
    inter-op thread, where the process still allows it (settable only once, before any
    parallel work), for many fits side by side on one machine."""
    if not n:
        return
    import torch

    torch.set_num_threads(n)
    if interop:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable once per process, before any parallel work
            pass


def _first_line_of(text: str) -> str:
    """The first line of ``text`` once surrounding whitespace is stripped ("" for blank text)."""
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


def first_line(e: BaseException, limit: int | None = 200) -> str:
    """The first line of an error's message (its type name when the message is blank), at most
    ``limit`` characters (None: all of it): for quoting a library's error inside one of ours."""
    return (_first_line_of(str(e)) or type(e).__name__)[:limit]


def one_line(e: BaseException, limit: int = 300) -> str:
    """An error as one line for a table or a terminal: the message of a :class:`CardioInrError`
    as is, otherwise ``Type: first line``, at most ``limit`` characters. Ray wraps task errors;
    their cause is used."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    text = _first_line_of(str(e)).strip()
    if not isinstance(e, CardioInrError):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text[:limit]


def collapse_whitespace(text: str) -> str:
    """``text`` on one line: every run of whitespace (newlines included) becomes one space."""
    return " ".join(text.split())


__all__ = ["collapse_whitespace", "first_line", "one_line", "pin_threads", "progress_bar"]
