"""Conventions shared by every ``patron`` command.

A command that produces a result prints it as one JSON object on the last line of stdout;
progress and logs go to stderr; failures exit non-zero with a one-line message.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import typer

P = ParamSpec("P")
R = TypeVar("R")


class UserError(Exception):
    """A failure caused by the caller's input: reported as one line, exit code 2."""


def emit(result: dict[str, Any]) -> None:
    """Print the command's result as one JSON line on stdout."""
    sys.stdout.write(json.dumps(result, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> typer.Exit:
    """Write a one-line error to stderr and return the exit to raise."""
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    return typer.Exit(code)


# MLflow's codes for a name or version that does not exist / a bad argument
_CALLER_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def _caller_error(exc: Exception) -> bool:
    """A failure the caller's input explains: a directory that is not a Patron bundle, or
    an MLflow model or version that does not exist (MLflow is not imported here)."""
    from patron.bundle import BundleError

    if isinstance(exc, BundleError):
        return True
    return type(exc).__module__.startswith("mlflow") and (
        getattr(exc, "error_code", None) in _CALLER_CODES
    )


def command(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn domain errors raised below a command into a one-line message and exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (UserError, ValueError, FileNotFoundError, PermissionError) as exc:
            raise fail(str(exc), 2) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except Exception as exc:
            if _caller_error(exc):  # a bundle or registry entry the caller named is not there
                raise fail(getattr(exc, "message", None) or str(exc), 2) from None
            # unexpected: still one line, but a distinct exit code
            logging.getLogger("patron").debug("unexpected failure", exc_info=True)
            raise fail(f"{type(exc).__name__}: {exc}", 1) from None

    return wrapper


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # faiss's loader reports at INFO which CPU features it probed: noise, not news
    logging.getLogger("faiss").setLevel(max(logging.WARNING, logging.getLogger().level))
