"""Logging for workflow jobs: to the rule's log file and to stderr, warnings included.

Also the package's one base class for errors in what the user gave (config, input files,
checkpoints): a job that stops on one logs a single line that names the file or key and what
was expected, not a Python traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# The exit status of a job stopped by a user error (1, like any failed script).
USER_ERROR_EXIT = 1


class UserError(ValueError):
    """Bad input: the message names the file or config key and says what was expected.

    A ValueError, so code that caught the specific errors (ConfigError, NsdError, ...) before
    they shared this base still does.
    """


def setup_job_logging(log_path) -> logging.Logger:
    """Log to ``log_path`` and stderr, and report an uncaught UserError as one logged line
    (see ``report_user_errors``)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stderr)]
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    log = logging.getLogger("nsdbench")
    report_user_errors(log)
    return log


def report_user_errors(log: logging.Logger) -> None:
    """From now on, an uncaught UserError is logged as one ERROR line and the process exits
    with status 1; any other exception keeps Python's usual traceback.

    Job scripts are module-level code run by Snakemake; an exception hook reaches all of it
    without wrapping every script in a try block.
    """
    previous = sys.excepthook

    def hook(kind, error, traceback):
        if issubclass(kind, UserError):
            log.error("%s: %s", kind.__name__, error)
            logging.shutdown()  # flush the log file before the process ends
            # The interpreter exits with status 1 after an uncaught exception, hook or not.
            return
        previous(kind, error, traceback)

    sys.excepthook = hook
