"""Two processes on 127.0.0.1, 4 host CPU devices each, against one process
with 8: training and meta-training across processes equal the single-process
run, and a killed process stops the other instead of leaving it hanging.

Each test starts `tests/_multiprocess_worker.py` in subprocesses (their own
process groups, `JAX_PLATFORMS=cpu`, the device count in `XLA_FLAGS`, a free
port for JAX's coordinator), so the test process's own JAX settings do not
matter; the single-process run is started beside the two-process one. Every
wait has a timeout and every process group is killed in a `finally`. Slow
(about a minute each on 2 cores): run by `.ci/run`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import sharded_problem

from mnemosyne.meta import read_checkpoint_header
from mnemosyne.meta._checkpoint import list_checkpoints

pytestmark = pytest.mark.slow

WORKER = pathlib.Path(__file__).with_name("_multiprocess_worker.py")
# Bounds a hung run (each takes well under a minute here); a test fails, and
# its processes are killed, when one is exceeded.
RUN_TIMEOUT_S = 300
# Bounds the survivor of a killed process: the worker's heartbeat timeout is
# 20 s (the survivor stopped within 4 s of a 5 s timeout when measured).
SURVIVOR_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(num_devices: int) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
    }
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    return env


class _Run:
    """The processes of one run (`num_processes` of them, 8 devices in all)
    and their logs."""

    def __init__(self, scenario: str, out: pathlib.Path, num_processes: int, *extra):
        out.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        self.logs = [
            out / f"{scenario}-{num_processes}-{i}.log" for i in range(num_processes)
        ]
        self.processes = []
        for i, log in enumerate(self.logs):
            with open(log, "w") as f:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), scenario, str(out),
                         "--num-processes", str(num_processes),
                         "--process-id", str(i), "--port", str(port), *extra],
                        env=_environment(8 // num_processes),
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group
                    )
                )

    def output(self) -> str:
        return "\n".join(
            f"--- {log.name}\n"
            + "\n".join(
                line for line in log.read_text().splitlines() if "[Gloo]" not in line
            )[-4000:]
            for log in self.logs
        )

    def wait(self, timeout_s: float = RUN_TIMEOUT_S) -> list[int]:
        deadline = time.monotonic() + timeout_s
        for p in self.processes:
            try:
                p.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"still running after {timeout_s} s:\n{self.output()}")
        return [p.returncode for p in self.processes]

    def succeed(self) -> None:
        codes = self.wait()
        assert codes == [0] * len(codes), f"exit codes {codes}:\n{self.output()}"

    def kill(self, i: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.processes[i].pid, signal.SIGKILL)
        self.processes[i].wait(timeout=30)


@contextlib.contextmanager
def _runs():
    """`start(scenario, out, num_processes, *extra) -> _Run`; every process
    group still alive at the end is killed."""
    started: list[_Run] = []

    def start(*args) -> _Run:
        started.append(_Run(*args))
        return started[-1]

    try:
        yield start
    finally:
        for run in started:
            for i, p in enumerate(run.processes):
                if p.poll() is None:
                    run.kill(i)


def _load(path: pathlib.Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_sharded_training_equals_the_single_process_run(tmp_path):
    """`mnemosyne.mnemosyne()` under `jax.jit` and `sharded_update` under
    `shard_map`, on leaves of several ranks (some not divisible by 8, kept
    replicated) split over the 8 devices of two processes: the state is placed
    like the parameters on every process (checked in the worker), a
    checkpoint of the optimizer state (gathered with `multihost_utils`, written
    by process 0) resumes exactly (checked in the worker), and the parameters
    equal those of one process with 8 devices on both processes."""
    with _runs() as start:
        single = start("train", tmp_path / "one", 1)
        pair = start("train", tmp_path / "two", 2)
        single.succeed()
        pair.succeed()
    want = _load(tmp_path / "one" / "train-0.npz")
    first = _load(tmp_path / "two" / "train-0.npz")
    second = _load(tmp_path / "two" / "train-1.npz")
    initial, _, _ = sharded_problem()
    assert sorted(want) == sorted(first) == sorted(second)
    for name, value in want.items():
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
        # the same program, split the same way: only the order of the
        # float32 sums of the RMS statistics across devices could differ
        # (the tolerance of test_sharding.py); measured: equal
        np.testing.assert_allclose(first[name], value, rtol=2e-5, atol=1e-7,
                                   err_msg=name)
        assert not np.array_equal(value, initial[name.split("/")[1]]), name


def test_meta_training_equals_the_single_process_run(tmp_path):
    """Three outer steps of truncated BPTT, antithetic ES and PES with a
    global batch of 8 trajectories, 4 on each process: θ is bit-identical on
    both processes and equals the single-process θ; the checkpoints record
    two processes."""
    with _runs() as start:
        single = start("meta", tmp_path / "one", 1)
        pair = start("meta", tmp_path / "two", 2)
        single.succeed()
        pair.succeed()
    for estimator in ("bptt", "es", "pes"):
        name = f"meta-{estimator}"
        want = _load(tmp_path / "one" / f"{name}-0.npz")
        first = _load(tmp_path / "two" / f"{name}-0.npz")
        second = _load(tmp_path / "two" / f"{name}-1.npz")
        for key in want:
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)
        # Each device computes exactly what it computes in one process; only
        # the float32 sums over the task axis (the mean meta-loss and
        # meta-gradient) may add in another order across processes: a few
        # ulps (measured: 1 ulp of the meta-loss, at most 6e-8 in θ after
        # three Adam steps of 0.01, whose direction m/sqrt(v) does not
        # amplify a relative error of the gradient).
        np.testing.assert_allclose(
            first["meta_loss"], want["meta_loss"], rtol=1e-6, err_msg=estimator
        )
        for key in want:
            if key.startswith("theta"):
                np.testing.assert_allclose(
                    first[key], want[key], rtol=0, atol=1e-6, err_msg=f"{name} {key}"
                )
        last = list_checkpoints(tmp_path / "two" / f"checkpoints-{estimator}")[-1]
        header = read_checkpoint_header(last)
        assert (header["step"], header["num_processes"]) == (3, 2)


def _newest_header(folder: pathlib.Path) -> dict:
    """The newest checkpoint's verified header (`{"step": -1}` if none)."""
    paths = list_checkpoints(folder)
    return read_checkpoint_header(paths[-1]) if paths else {"step": -1}


@pytest.mark.parametrize("victim", [0, 1], ids=["writer-killed", "other-killed"])
def test_a_killed_process_stops_the_other_and_the_checkpoint_resumes(
    tmp_path, victim
):
    """Kill one of two meta-training processes (process 0 writes the
    checkpoints): the other exits with an error instead of hanging (JAX's
    coordination service sees the heartbeats stop, or the coordinator's
    socket close, and ends it), the newest checkpoint is complete, one
    process refuses to resume it, and two processes resume it."""
    checkpoints = tmp_path / "checkpoints"
    with _runs() as start:
        run = start("meta-long", tmp_path, 2, "--steps", "100000")
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while _newest_header(checkpoints)["step"] < 3:
            if time.monotonic() > deadline or any(
                p.poll() is not None for p in run.processes
            ):
                pytest.fail(f"no checkpoint of step 3:\n{run.output()}")
            time.sleep(0.2)
        run.kill(victim)
        survivor = run.processes[1 - victim]
        try:
            survivor.wait(timeout=SURVIVOR_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"process {1 - victim} still runs {SURVIVOR_TIMEOUT_S} s after "
                f"process {victim} was killed:\n{run.output()}"
            )
        assert survivor.returncode != 0, run.output()

    header = _newest_header(checkpoints)  # verified: complete
    step = header["step"]
    assert step >= 3 and header["num_processes"] == 2
    with _runs() as start:
        one = start("meta-long", tmp_path, 1, "--steps", str(step + 1))
        assert one.wait() != [0]
        assert "written by a run of 2 process(es); this run has 1" in one.output()
        pair = start("meta-long", tmp_path, 2, "--steps", str(step + 1))
        pair.succeed()
    first, second = (
        json.loads((tmp_path / f"meta-long-{i}.json").read_text()) for i in (0, 1)
    )
    assert first == second and first["step"] == step + 1


_PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "scale-out.md"


def _shell(script: str, cwd: pathlib.Path, env: dict) -> subprocess.CompletedProcess:
    """`bash -c script` in its own process group, killed if it outlives
    RUN_TIMEOUT_S."""
    process = subprocess.Popen(
        ["bash", "-c", script], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate(timeout=30)
        pytest.fail(f"still running after {RUN_TIMEOUT_S} s:\n{out[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a background process left
    return subprocess.CompletedProcess(script, process.returncode, out)


def _fresh_shell_environment() -> dict:
    """This environment without the test session's JAX settings: one CPU
    device per process, as in a fresh shell."""
    env = _environment(1)
    del env["XLA_FLAGS"]
    return env


def test_two_process_command_of_the_docs_runs(tmp_path):
    """The Scale out page's two-process command, word for word but on a free
    port: both processes finish, process 0 alone prints and writes."""
    import re

    block = re.search(r"```bash\n(.*?)```", _PAGE.read_text(), re.S).group(1)
    assert block.count("--num-processes 2") == 2, block
    result = _shell(
        block.replace("12355", str(_free_port())), tmp_path, _fresh_shell_environment()
    )
    output = result.stdout
    assert result.returncode == 0, output[-4000:]
    assert output.count("Saved quick.eqx") == 1, output[-4000:]
    assert (tmp_path / "quick.eqx").exists()
    header = _newest_header(tmp_path / "quick_checkpoints")
    assert header["num_processes"] == 2


def test_slurm_detection(tmp_path):
    """`--distributed` under a SLURM step of two tasks (its variables set by
    hand, on 127.0.0.1): `jax.distributed.initialize()` finds the coordinator,
    the process count and the ids by itself."""
    port = _free_port()
    env = {
        **_fresh_shell_environment(),
        "SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "127.0.0.1",
        "SLURM_NTASKS": "2", "SLURM_STEP_NUM_NODES": "1",
        "JAX_COORDINATOR_PORT": str(port),
    }
    command = "mnemosyne meta-train --preset quick --steps 1 --distributed"
    script = (
        f"SLURM_PROCID=1 SLURM_LOCALID=1 {command} &\n"
        f"SLURM_PROCID=0 SLURM_LOCALID=0 {command}\n"
        "wait $!\n"
    )
    result = _shell(script, tmp_path, env)
    assert result.returncode == 0, result.stdout[-4000:]
    header = _newest_header(tmp_path / "quick_checkpoints")
    assert (header["step"], header["num_processes"]) == (1, 2)
