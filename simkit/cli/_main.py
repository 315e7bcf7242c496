"""The ``simkit`` command's entry point: parse, dispatch, stop signals, and errors as one line
with an exit code."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from typing import Any

from simkit import _stop
from simkit.cli._files import (
    _cmd_export,
    _cmd_inspect,
    _cmd_list,
    _cmd_plot,
    _cmd_recover,
    _cmd_schema,
    _cmd_stop,
    _cmd_tensorboard,
    _cmd_watch,
)
from simkit.cli._parser import _parser
from simkit.cli._running import _cmd_resume, _cmd_run, _cmd_sweep, _cmd_validate
from simkit.errors import EXIT_FAILURE, RunInterrupted, SimkitError

_COMMANDS = {"run": _cmd_run, "resume": _cmd_resume, "recover": _cmd_recover,
             "inspect": _cmd_inspect, "list": _cmd_list, "validate": _cmd_validate,
             "schema": _cmd_schema, "plot": _cmd_plot, "sweep": _cmd_sweep,
             "export": _cmd_export, "tensorboard": _cmd_tensorboard, "watch": _cmd_watch,
             "stop": _cmd_stop}


#: Signals that stop a command: batch schedulers send SIGTERM before they kill, a closed
#: terminal or ssh session sends SIGHUP, Ctrl-C SIGINT.
_STOP_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT")


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """Stop cleanly on SIGTERM, SIGHUP and SIGINT: a run stops at its next block boundary (queued
    captures written, the file closed and marked interrupted, ready for ``simkit resume``), any
    other command by KeyboardInterrupt.

    During a run a signal is only a flag (``simkit._stop``) the run loop checks: raised as an
    exception it could land in a library's callback, which swallows it, and the run would go on.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can only be installed from the main thread
        return
    _stop.clear()

    def interrupt(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if not _stop.note(name):  # no run under way: stop whatever the command is doing
            raise KeyboardInterrupt(name)

    previous = {}
    for name in _STOP_SIGNALS:
        number = getattr(signal, name, None)  # no SIGHUP on Windows
        if number is not None:
            previous[number] = signal.signal(number, interrupt)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _interrupted(error: KeyboardInterrupt) -> int:
    """Say what an interrupted command left behind; the exit code is 128 + the signal."""
    reason = str(error) or "SIGINT"  # Ctrl-C's KeyboardInterrupt carries no name
    if isinstance(error, RunInterrupted) and error.path is not None:
        message = (f"interrupted by {reason}; the run so far is in {error.path}: continue it "
                   f"with `simkit resume {error.path}`")
    elif isinstance(error, RunInterrupted):
        message = f"interrupted by {reason} before anything was written"
    else:
        message = f"interrupted by {reason}"
    with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
        print(f"simkit: {message}", file=sys.stderr)
    number = getattr(signal, reason, None)
    return 128 + int(number) if number is not None else 130


def _stdout_closed() -> int:
    """The reader of our output went away (`simkit inspect f.nc | head`): not an error of ours.
    Exit quietly, as a command killed by SIGPIPE would (141)."""
    # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail.
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 128 + 13


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """simkit's own warnings as one line like its errors; others as Python shows them."""
    if category.__name__ == "SimkitWarning":
        print(f"simkit: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``simkit`` command; returns the exit code."""
    with _stop_signals_interrupt(), contextlib.ExitStack() as deferring:
        # Until the command is known a stop signal is only noted: a run takes it at its first
        # block boundary, any other command raises it below.
        deferring.enter_context(_stop.deferred())
        args = _parser().parse_args(argv)
        args.verbose += getattr(args, "verbose_after", 0)
        import logging

        level = logging.ERROR if args.log_quiet else \
            (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
        logging.basicConfig(level=level, format="simkit: %(levelname)s: %(message)s")
        warnings.showwarning = _show_warning
        return _command(args, deferring)


def _command(args: argparse.Namespace, deferring: contextlib.ExitStack) -> int:
    """Run the command; its errors as one line and an exit code."""
    try:
        # A run takes stop signals as a flag throughout: its loop stops at a block boundary, the
        # gradients of an objective between their segments and before they are written.
        runs = args.command in ("sweep", "resume", "run")
        if not runs:
            deferring.close()
            _stop.check()
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, while BrokenPipeError is caught
        if runs and code == 0 and _stop.received():
            with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
                print(f"simkit: {_stop.received()} arrived once the run was complete; nothing "
                      f"to stop", file=sys.stderr)
        return code
    except BrokenPipeError:
        return _stdout_closed()
    except SimkitError as error:
        print(f"simkit: error: {error}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return error.exit_code
    except KeyboardInterrupt as error:
        return _interrupted(error)
    except Exception as error:  # noqa: BLE001 - one line, then the traceback on request
        text = " ".join(str(error).split("\n"))
        print(f"simkit: error: {type(error).__name__}: {text}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_FAILURE

