"""Imported first by every script: makes this checkout's src/ importable, so script jobs use
the workflow's own package even in environments where it is not installed (--sdm conda).
Snakemake puts this directory on sys.path for script jobs."""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
