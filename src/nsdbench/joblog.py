"""Logging for workflow jobs: to the rule's log file and to stderr, warnings included."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_job_logging(log_path) -> logging.Logger:
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    handlers = [logging.FileHandler(log_path, mode="w"), logging.StreamHandler(sys.stderr)]
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    return logging.getLogger("nsdbench")
