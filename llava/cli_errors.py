"""One-line errors for every command: `run_main(main)` turns a user error into `error: ...` and exit 2.

A user error is a `UserError`, a `ValueError` or a missing/unreadable file (`FileNotFoundError`,
`IsADirectoryError`, `NotADirectoryError`, `PermissionError`): bad input that the message names.
Anything else is a bug and keeps its traceback. `--debug` (anywhere on the command line) or
`FASTERVLM_DEBUG=1` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

DEBUG_FLAG = "--debug"
DEBUG_ENV = "FASTERVLM_DEBUG"
USER_ERROR_EXIT = 2


class UserError(ValueError):
    """Bad input from the user (a flag, a file, a row): the message says what and what to do."""


USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def add_debug_arg(parser: argparse.ArgumentParser) -> None:
    """Declare `--debug` so that `--help` shows it (`run_main` acts on it before parsing)."""
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help=f"print the full traceback of an error (or set {DEBUG_ENV}=1)")


def debug_requested(argv: Sequence[str]) -> bool:
    """True when `--debug` is on the command line or FASTERVLM_DEBUG is set to a true value."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


_WORKER_PREFIX = "Caught "  # torch's DataLoader re-raises a worker's error as "Caught X in DataLoader worker ..."
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def _worker_message(text: str) -> str:
    """A DataLoader worker's re-raised error -> the original error's own message (its traceback dropped)."""
    if not text.startswith(_WORKER_PREFIX) or _WORKER_TRACEBACK not in text:
        return text
    lines = text.split(_WORKER_TRACEBACK, 1)[1].splitlines()
    last = max((i for i, line in enumerate(lines) if line and not line[0].isspace()), default=None)
    if last is None:
        return text
    head, sep, message = lines[last].partition(": ")
    first = message if sep and " " not in head else lines[last]  # "pkg.ErrorType: message" -> "message"
    return "\n".join([first, *lines[last + 1:]]).strip() or text


def one_line(err: BaseException) -> str:
    """The error's message on one line (the lines of a multi-line message joined by '; ')."""
    text = _worker_message(str(err).strip()) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def run_main(main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> None:
    """Call `main(argv)` (default `sys.argv[1:]`, without `--debug`) and exit.

    The exit status is main's return value when it is an int (merge returns one), else 0, and 2 on
    a user error.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        status = main(argv)
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status if isinstance(status, int) and not isinstance(status, bool) else 0)
