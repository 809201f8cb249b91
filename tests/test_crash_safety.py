"""Crash safety: the micro demo killed with SIGKILL again and again, at a dozen different
points, resumes each time with the documented command (README, "Resuming": the same command
with --unlock, then the same command with --rerun-incomplete), and ends with tables identical to an
uninterrupted run's; what had finished before a kill is never recomputed.

The kill points are found from outside, by watching the run directory: Snakemake's markers of
the jobs running (.snakemake/incomplete/), an extraction's progress record in its
``.partial`` store, a fit job's log line. The whole process group (Snakemake and its jobs)
is killed, as a node failure would.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import ROOT, run_snakemake
from test_determinism import CONFIG, RUN, assert_same_tables, uninterrupted_micro_run

MODELS = [model["name"] for model in CONFIG["models"]]
POLL_S = 0.02
DEADLINE_S = 900  # a hung run fails the test instead of CI


def running_outputs(workdir: Path) -> set[str]:
    """Outputs of the jobs running now: Snakemake marks each (base64 of its path) until the
    job has finished."""
    markers = workdir / ".snakemake" / "incomplete"
    names = set()
    for marker in markers.iterdir() if markers.is_dir() else ():
        try:
            names.add(base64.b64decode(marker.name).decode())
        except ValueError:  # not a marker (a temporary file)
            continue
    return names


def running(prefix):
    return lambda workdir, outputs: any(name.startswith(prefix) for name in outputs)


def store_half_written(workdir: Path, outputs) -> bool:
    """An extraction has recorded some chunks of its stores, not all."""
    for record in workdir.glob("results/features/*/group-*.partial/progress.json"):
        try:
            progress = json.loads(record.read_text())
        except (OSError, ValueError):  # replaced under us: look again next poll
            continue
        if 0 < progress["finished"] < progress["fingerprint"]["n_images"]:
            return True
    return False


def fit_mid_block(workdir: Path, outputs) -> bool:
    """A fit job has scored some layers of its block and is scoring more."""
    for name in outputs:
        if name.startswith("results/scores/"):
            log = workdir / "logs/fit" / Path(name).relative_to("results/scores")
            log = log.with_suffix(".log")
            if log.is_file() and "mean versa" in log.read_text():
                return True
    return False


def generalize_store_write(workdir: Path, outputs) -> bool:
    return any(workdir.glob("results/generalization/*.features.partial/*.zarr"))


# (name, predicate on the run directory and the running outputs). They may come in any order;
# each is used once.
KILL_POINTS = {
    "generating the demo tree": running("resources/demo-nsd/"),
    "writing a brain response store": running("results/brain/sub-"),
    "writing the train stimuli": running("results/stimuli/train.zarr"),
    "inventorying layers": running("results/layers/"),
    "extraction, a feature store half written": store_half_written,
    f"extraction of {MODELS[1]}": running(f"results/features/{MODELS[1]}/"),
    "fit, between the layers of a block": fit_mid_block,
    f"fit of {MODELS[1]}": running(f"results/scores/{MODELS[1]}/"),
    "writing test stimuli": running("results/stimuli/test-sub-"),
    "generalization, its feature store being written": generalize_store_write,
    "reference ceilings": running("results/ceilings.parquet"),
    "writing the voxel table": running("results/brain/voxels.parquet"),
    "aggregating the score table": running("results/tables/scores.parquet"),
    "drawing the figure": running("results/figures/"),
}


@dataclass
class KilledRun:
    workdir: Path
    hit: list[str] = field(default_factory=list)  # kill points survived, in order
    # path -> mtime (ns) of every output file that was finished at some kill
    finished: dict[str, int] = field(default_factory=dict)
    second_run_output: str = ""
    resumes: int = 0


def start(workdir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *RUN,
               "-d", str(workdir), *extra]
    log = open(workdir / f"run-{time.monotonic_ns()}.log", "w")  # noqa: SIM115 - closed by kill
    # A process group of its own: the kill takes Snakemake and every job it started.
    return subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill(process: subprocess.Popen, workdir: Path) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # Nothing of the run may survive it (a job outside the group would go on writing). The
    # group's other processes take a moment to die after its leader.
    give_up = time.monotonic() + 10
    while processes_in(workdir) and time.monotonic() < give_up:
        time.sleep(POLL_S)
    assert not processes_in(workdir), "a job survived the kill of its process group"


def processes_in(workdir: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(workdir).encode() in command and b"pytest" not in command:
                found.append(int(entry.name))
    return found


def finished_outputs(workdir: Path, outputs: set[str]) -> dict[str, int]:
    """Output files on disk that no running job is writing (not temporaries)."""
    files = {}
    for top in ("results", "resources"):
        for path in (workdir / top).rglob("*"):
            name = str(path.relative_to(workdir))
            unfinished = any(name == out or name.startswith(out + "/") for out in outputs)
            if path.is_file() and not unfinished and ".partial" not in name \
                    and ".tmp" not in name and not name.startswith("results/features/"):
                files[name] = path.stat().st_mtime_ns
    return files


def run_with_kills(workdir: Path) -> KilledRun:
    record = KilledRun(workdir)
    pending = dict(KILL_POINTS)
    deadline = time.monotonic() + DEADLINE_S
    process = start(workdir)
    while True:
        assert time.monotonic() < deadline, f"run did not finish; killed at {record.hit}"
        if process.poll() is not None:
            assert process.returncode == 0, f"run failed after kills at {record.hit}"
            return record
        outputs = running_outputs(workdir)
        point = next((name for name, seen in pending.items() if seen(workdir, outputs)), None)
        if point is None:
            time.sleep(POLL_S)
            continue
        if not record.hit:
            # A second workflow on the same directory while this one runs: refused at once.
            second = run_snakemake(*RUN, "-d", str(workdir), cwd=workdir, check=False)
            record.second_run_output = f"{second.returncode}\n{second.stdout}{second.stderr}"
        kill(process, workdir)
        del pending[point]
        record.hit.append(point)
        record.finished.update(finished_outputs(workdir, running_outputs(workdir)))
        # The documented resume: the same command with --unlock, then with --rerun-incomplete
        # (without it, a job killed after writing its output but before Snakemake recorded it
        # stops the resumed run with IncompleteFilesException).
        run_snakemake(*RUN, "-d", str(workdir), "--unlock", cwd=workdir)
        record.resumes += 1
        process = start(workdir, "--rerun-incomplete")


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("micro-killed")
    return run_with_kills(workdir)


def test_the_run_survives_kills_at_10_or_more_points(killed_run):
    hit = killed_run.hit
    assert len(hit) >= 10, hit
    # During extraction, fit and aggregation, and during a feature store write (a store write
    # is brief on a fast machine, so either of the two such points will do).
    assert any(point.startswith("extraction") for point in hit), hit
    assert any(point.startswith("fit") for point in hit), hit
    assert "aggregating the score table" in hit
    assert {"extraction, a feature store half written",
            "generalization, its feature store being written"} & set(hit), hit


def test_after_the_kills_the_tables_equal_an_uninterrupted_run(killed_run, tmp_path_factory):
    reference = uninterrupted_micro_run(tmp_path_factory)
    assert assert_same_tables(killed_run.workdir, reference) >= 10


def test_outputs_finished_before_a_kill_were_not_recomputed(killed_run):
    checked = 0
    for name, mtime in killed_run.finished.items():
        path = killed_run.workdir / name
        if path.exists():  # temp() outputs are deleted once used
            assert path.stat().st_mtime_ns == mtime, f"{name} was written again"
            checked += 1
    assert checked >= 10


def test_nothing_half_written_is_left_behind(killed_run):
    workdir = killed_run.workdir
    leftovers = [str(path.relative_to(workdir)) for path in (workdir / "results").rglob("*")
                 if ".partial" in path.name or ".tmp" in path.name]
    assert not leftovers
    assert not list((workdir / "results").glob("features/*/group-*"))


def test_a_second_workflow_on_the_same_directory_is_refused(killed_run):
    status, output = killed_run.second_run_output.split("\n", 1)
    assert status != "0"
    # Refused by the lock, or before that by the running job's outputs marked incomplete.
    assert "Directory cannot be locked" in output or "IncompleteFilesException" in output, output
    assert "Execute" not in output  # no job of its own was started
