"""Weak scaling of meta-training: outer steps per second with 1 and 2 processes
at a fixed task batch per process.

Each run starts its processes on 127.0.0.1 (one CPU device each, gloo
collectives), meta-trains the `quick` preset's optimizer, task and estimator
with `--tasks-per-process` trajectories on every process (so 2 processes do
twice the work of 1 per outer step), compiles and warms up on
`--warmup` outer steps, then times `--steps` more. Process 0 reports; the
table prints outer steps per second and the weak-scaling efficiency
(steps/s with N processes over steps/s with 1: 1.0 is perfect).

    python benchmarks/multiprocess_scaling.py
    python benchmarks/multiprocess_scaling.py --tasks-per-process 16 --steps 50

On a machine with fewer cores than processes times the threads each would
use, the processes share cores and the figure measures that sharing plus the
collectives, not what separate hosts would give.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time


def _worker(args) -> None:
    if args.num_processes > 1:
        from mnemosyne._distributed import initialize

        initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
    import jax

    from mnemosyne._distributed import is_main_process
    from mnemosyne.meta import PRESETS, MetaTrainer

    preset = PRESETS["quick"]
    k_lopt, k_train = jax.random.split(jax.random.key(preset.seed))
    settings = {
        **preset.trainer,
        "num_tasks": args.tasks_per_process * jax.process_count(),
    }
    trainer = MetaTrainer(
        preset.make_lopt(k_lopt), preset.family, preset.estimator,
        key=k_train, **settings,
    )
    trainer.run(args.warmup, progress=False)  # compiles
    start = time.perf_counter()
    trainer.run(args.warmup + args.steps, progress=False)
    seconds = time.perf_counter() - start
    if is_main_process():
        print(json.dumps({
            "processes": jax.process_count(),
            "devices": jax.device_count(),
            "num_tasks": settings["num_tasks"],
            "steps_per_s": args.steps / seconds,
        }), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure(num_processes: int, args) -> dict:
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    command = [
        sys.executable, __file__, "--worker",
        "--num-processes", str(num_processes), "--port", str(port),
        "--tasks-per-process", str(args.tasks_per_process),
        "--warmup", str(args.warmup), "--steps", str(args.steps),
    ]
    processes = [
        subprocess.Popen(
            [*command, "--process-id", str(i)], env=env, text=True,
            stdout=subprocess.PIPE if i == 0 else subprocess.DEVNULL,
            start_new_session=True,
        )
        for i in range(num_processes)
    ]
    try:
        out, _ = processes[0].communicate(timeout=args.timeout)
        for p in processes[1:]:
            p.wait(timeout=args.timeout)
    finally:
        for p in processes:
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait()
    if any(p.returncode for p in processes):
        raise SystemExit(f"a process of the {num_processes}-process run failed")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2",
                        help="comma-separated process counts (1,2)")
    parser.add_argument("--tasks-per-process", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds before a run is killed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--num-processes", type=int, default=1,
                        help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    print("| processes | task batch | outer steps/s | efficiency |")
    print("|---|---|---|---|")
    base = None
    for n in (int(x) for x in args.processes.split(",")):
        result = _measure(n, args)
        rate = result["steps_per_s"]
        base = base or rate
        print(f"| {n} | {result['num_tasks']} ({args.tasks_per_process} per process) "
              f"| {rate:.2f} | {rate / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
