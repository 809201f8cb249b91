import os
import subprocess
import sys
from pathlib import Path

import pytest

# No network at run time: hub lookups fail at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"


def run_snakemake(*args, cwd=ROOT, check=True):
    """Run the workflow's snakemake in a subprocess; on failure, raise with its output."""
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One full run of the tiny demo (tests/configs/tiny.yaml), shared by every test module
    that checks its outputs. Tests must not modify it."""
    workdir = tmp_path_factory.mktemp("tiny")
    run_snakemake("--cores", "2", "--configfile", str(TINY), "-d", str(workdir))
    return workdir
