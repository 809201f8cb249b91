"""Imported first by every script: makes this checkout's src/ importable, so script jobs use
the workflow's own package even in environments where it is not installed (--sdm conda).
Snakemake puts this directory on sys.path for script jobs.

Jobs never use the network: weights come from the cache that the fetch_weights rule fills on
the login node. With HF_HUB_OFFLINE set, a hub lookup fails at once instead of retrying for a
minute on a compute node without internet.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SRC = str(Path(__file__).resolve().parents[2] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
