"""What the CLI shows while a run goes and when it fails: one line per event, no tracebacks.

Dagster's console logger prints a failed step's whole chain of tracebacks. The CLI uses
`concise_console` instead (unless `--debug`): every log record is cut to its first paragraph,
and the failure is summarised once, on one line, by `failure_line`. An error raised because of
the user's input (a `ValueError` or a missing file, which the ops raise with a message naming the
value and the fix) makes the CLI exit 2 like any other bad input.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import dagster as dg

# Errors the ops raise for bad input: their messages name the value and the fix.
BAD_INPUT_ERRORS = frozenset({"ValueError", "ParamsError", "FileNotFoundError",
                              "NotADirectoryError", "IsADirectoryError",
                              "UnsafeWeightsError"})


class _FirstParagraph(logging.Formatter):
    """`time - LEVEL - message`, the message cut before its first blank line (the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().split("\n\n", 1)[0]
        return f"{self.formatTime(record)} - {record.levelname} - {message}"


@dg.logger(config_schema={"log_level": dg.Field(str, default_value="INFO")},
           description="Dagster events on stderr, one line each, without tracebacks")
def concise_console(init_context: dg.InitLoggerContext) -> logging.Logger:
    """A console logger that prints every record on one line (tracebacks are left to --debug)."""
    logger = logging.Logger("synthfactory", level=init_context.logger_config["log_level"])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FirstParagraph())
    logger.addHandler(handler)
    return logger


@dataclass(frozen=True)
class StepFailure:
    """The error that failed a step: the user code's own exception, not Dagster's wrapper."""

    step: str
    error_class: str
    message: str

    @property
    def bad_input(self) -> bool:
        """True when the step failed on the user's input rather than on a bug or the machine."""
        return self.error_class in BAD_INPUT_ERRORS


def step_failures(result: dg.ExecuteInProcessResult) -> list[StepFailure]:
    """The failed steps of a run with their root errors, in the order they failed."""
    failures = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        error = event.event_specific_data.error
        # Dagster wraps the exception the op raised; that one (not what it was raised from,
        # e.g. the OSError under a DiskFullError) carries the message for the user.
        while error.cls_name.startswith("Dagster") and error.cause is not None:
            error = error.cause
        message = " ".join(error.message.split()).removeprefix(f"{error.cls_name}: ")
        failures.append(StepFailure(step=event.step_key, error_class=error.cls_name,
                                    message=message))
    return failures


def failure_line(failure: StepFailure) -> str:
    """One line for the user: the step, and the error's own message (which names value and fix)."""
    if failure.bad_input:
        return f"{failure.step}: {failure.message}"
    return (f"{failure.step} failed with {failure.error_class}: {failure.message} "
            "(run again with --debug for the traceback)")
