"""Command line: `mnemosyne demo | meta-train | evaluate | ablation` (also `python -m
mnemosyne`).

Errors a user can fix (unknown names, missing files, bad values) exit with
status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

DEMO_TASKS = ("mlp_digits", "vit_digits")


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument raises `UsageError` (one line, with a hint)
    instead of printing the usage block and exiting inside `parse_args`."""

    def error(self, message: str):
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _folder(text: str, what: str) -> pathlib.Path:
    """An output folder: refused (one line) if it exists as a file."""
    path = pathlib.Path(text)
    if path.exists() and not path.is_dir():
        raise UsageError(
            f"{what} {text!r} is a file, not a folder; choose another {what}"
        )
    return path


def _csv(text: str) -> list[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in _csv(text))
    except ValueError:
        seeds = ()
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(
            f"seeds must be non-negative integers like 0,1,2, got {text!r}"
        )
    return seeds


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer, got {text!r}"
        )
    return value


def _check_tasks(names: list[str]) -> list[str]:
    from .tasks import list_tasks

    known = list_tasks()
    if names == ["all"]:
        return known
    if not names:
        raise UsageError(
            "no tasks given; pass --tasks all or names from `mnemosyne evaluate --list`"
        )
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown task(s) {unknown}; run `mnemosyne evaluate --list` to see them"
        )
    return names


def cmd_demo(args) -> int:
    """Train real models with the pretrained Mnemosyne beside Adam; table + plot."""
    import optax

    from . import _transform
    from .evaluation import evaluate

    out = _folder(args.out, "--out")
    optimizers = {"adam(1e-3)": optax.adam(1e-3)}
    try:
        optimizers = {"mnemosyne": _transform.mnemosyne(), **optimizers}
    except FileNotFoundError as err:
        print(f"no pretrained weights yet ({err}); showing Adam alone")
    print(
        f"Training {', '.join(DEMO_TASKS)} for {args.steps} steps with "
        f"{' and '.join(optimizers)} (vit_digits is a kind held out of meta-training)."
    )
    start = time.perf_counter()
    result = evaluate(
        optimizers, list(DEMO_TASKS), seeds=args.seeds, num_steps=args.steps
    )
    out.mkdir(parents=True, exist_ok=True)
    result.save(out)
    print(result.to_markdown())
    print(
        f"\nWrote {out / 'results.md'}, {out / 'results.json'} and PNG plots in {out}/ "
        f"({time.perf_counter() - start:.0f} s)."
    )
    return 0


def _join_processes(args) -> None:
    """`jax.distributed.initialize` when the command line, the environment or
    `--distributed` asks for several processes (before anything starts a JAX
    backend); nothing otherwise."""
    from . import _distributed

    flags = (args.coordinator, args.num_processes, args.process_id)
    variables = (
        _distributed.ENV_COORDINATOR,
        _distributed.ENV_NUM_PROCESSES,
        _distributed.ENV_PROCESS_ID,
    )
    if not (
        args.distributed
        or any(f is not None for f in flags)
        or any(os.environ.get(v) for v in variables)
    ):
        return
    try:
        _distributed.initialize(
            *flags, heartbeat_timeout_s=args.heartbeat_timeout
        )
    except ValueError as err:  # missing or malformed settings
        raise UsageError(
            f"cannot join the other processes: {err} Pass --coordinator, "
            "--num-processes and --process-id (or set "
            f"{', '.join(variables)}), or run under SLURM or on a Cloud TPU"
        ) from None


def _check_task_batch(num_tasks: int) -> None:
    import jax

    if num_tasks % jax.process_count():
        raise UsageError(
            f"the task batch ({num_tasks}) must be a multiple of the number of "
            f"processes ({jax.process_count()}); pass --num-tasks"
        )


def cmd_meta_train(args) -> int:
    """Meta-train a preset and save its weights."""
    _join_processes(args)
    from ._distributed import is_main_process
    from .meta import (
        PRESETS,
        CheckpointError,
        IncompatibleCheckpointError,
        train_preset,
    )

    if args.preset not in PRESETS:
        raise UsageError(
            f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}"
        )
    output = pathlib.Path(args.output or f"{args.preset}.eqx")
    if output.is_dir():
        raise UsageError(
            f"--output {str(output)!r} is a folder; give a file name like "
            f"{args.preset}.eqx"
        )
    checkpoints = _folder(
        args.checkpoint_dir or f"{output.with_suffix('')}_checkpoints",
        "--checkpoint-dir",
    )
    _check_task_batch(args.num_tasks or PRESETS[args.preset].trainer["num_tasks"])
    start = time.perf_counter()
    try:
        train_preset(
            args.preset,
            output=output,
            checkpoint_dir=checkpoints,
            resume=not args.no_resume,
            progress=True,
            num_outer_steps=args.steps,
            num_tasks=args.num_tasks,
        )
    except IncompatibleCheckpointError as err:
        raise UsageError(
            f"{err} Pass --no-resume to start over, or choose another --checkpoint-dir"
        ) from None
    except CheckpointError as err:
        raise UsageError(f"{err} Pass --no-resume to start over") from None
    if is_main_process():
        print(f"Saved {output} ({time.perf_counter() - start:.0f} s); "
              f"load it with mnemosyne.load({str(output)!r}).")
    return 0


def cmd_evaluate(args) -> int:
    """Run optimizers on tasks over seeds; write Markdown, JSON and PNG plots."""
    from .evaluation import evaluate, optimizer_names, resolve_optimizer
    from .tasks import list_tasks

    if args.list:
        print("tasks:", ", ".join(list_tasks()))
        return 0
    tasks = _check_tasks(_csv(args.tasks))
    names = _csv(args.optimizers)
    if not names:
        raise UsageError("no optimizers given; pass e.g. --optimizers mnemosyne,adam")
    out = _folder(args.out, "--out")
    for name in names:
        if name.endswith("_tuned") and name in optimizer_names():
            continue  # tuned per task inside `evaluate`
        try:
            resolve_optimizer(name)
        except FileNotFoundError as err:
            raise UsageError(str(err)) from None
        except (KeyError, ValueError) as err:
            reason = err.args[0] if err.args else f"unknown optimizer {name!r}"
            raise UsageError(f"{reason}; see `mnemosyne evaluate --help`") from None
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "partial.json"  # rewritten after each task; --resume continues it
    result = evaluate(names, tasks, seeds=args.seeds, num_steps=args.steps,
                      checkpoint=partial, resume=args.resume)
    result.save(out)
    partial.unlink(missing_ok=True)
    print(result.to_markdown())
    print(f"\nWrote {out}/results.md, results.json and PNG plots "
          f"({time.perf_counter() - start:.0f} s).")
    return 0


def cmd_ablation(args) -> int:
    """Meta-train Mnemosyne's memory variants with one reduced budget and compare
    them."""
    from .evaluation import ABLATION_OUTER_STEPS, ABLATION_TASKS, memory_ablation
    from .evaluation._ablation import ABLATION_VARIANTS, design_variants
    from .meta import PRESETS

    if args.preset not in PRESETS:
        raise UsageError(
            f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}"
        )
    tasks = (
        list(ABLATION_TASKS) if args.tasks is None else _check_tasks(_csv(args.tasks))
    )
    out = _folder(args.out, "--out")
    start = time.perf_counter()
    design = args.variants == "design"
    memory_ablation(
        out,
        num_outer_steps=args.outer_steps or ABLATION_OUTER_STEPS,
        tasks=tasks,
        seeds=args.seeds,
        num_steps=args.steps,
        preset=args.preset,
        variants=design_variants() if design else ABLATION_VARIANTS,
        title="Design ablation" if design else "Memory ablation",
    )
    print((out / "ablation.md").read_text())
    print(
        f"Wrote {out}/ablation.md, ablation.json, ablation.png and the variants' "
        "weights "
        f"({time.perf_counter() - start:.0f} s)."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mnemosyne",
        description="Mnemosyne learned optimizer: demo, meta-training, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="pretrained Mnemosyne vs Adam on real models")
    demo.add_argument(
        "--steps", type=_positive_int, default=500, help="training steps (500)"
    )
    demo.add_argument(
        "--seeds", type=_seeds, default=(0,), help="comma-separated seeds (0)"
    )
    demo.add_argument("--out", default="demo_out", help="output folder (demo_out)")
    demo.set_defaults(func=cmd_demo)

    meta = sub.add_parser(
        "meta-train", help="meta-train a preset (e.g. --preset default)"
    )
    meta.add_argument("--preset", required=True, help="preset name: default, lstm, ...")
    meta.add_argument("--output", help="weights file to write (<preset>.eqx)")
    meta.add_argument(
        "--checkpoint-dir", help="checkpoint folder (<output>_checkpoints)"
    )
    meta.add_argument(
        "--no-resume", action="store_true", help="start over, ignore checkpoints"
    )
    meta.add_argument(
        "--steps", type=_positive_int, default=None, help="outer steps (preset's)"
    )
    meta.add_argument(
        "--num-tasks", type=_positive_int, default=None,
        help="trajectories per outer step over all processes (preset's)",
    )
    many = meta.add_argument_group(
        "several processes (see the Scale out page; one process if none is given)"
    )
    many.add_argument(
        "--coordinator",
        help="host:port of process 0's coordinator (or $JAX_COORDINATOR_ADDRESS)",
    )
    many.add_argument(
        "--num-processes", type=_positive_int, default=None,
        help="processes taking part (or $JAX_NUM_PROCESSES)",
    )
    many.add_argument(
        "--process-id", type=_non_negative_int, default=None,
        help="this process's index, 0 first (or $JAX_PROCESS_ID)",
    )
    many.add_argument(
        "--distributed", action="store_true",
        help="join other processes, leaving what is not given to JAX's detection "
        "of SLURM, Cloud TPU, Open MPI or Kubernetes",
    )
    many.add_argument(
        "--heartbeat-timeout", type=_positive_int, default=None, metavar="SECONDS",
        help="stop with an error when a process is silent this long (JAX's 100)",
    )
    meta.set_defaults(func=cmd_meta_train)

    ev = sub.add_parser("evaluate", help="compare optimizers over tasks and seeds")
    ev.add_argument(
        "--optimizers", default="mnemosyne,adam", help="comma-separated names"
    )
    ev.add_argument("--tasks", default="all", help="comma-separated task names, or all")
    ev.add_argument(
        "--seeds", type=_seeds, default=(0, 1, 2), help="comma-separated seeds"
    )
    ev.add_argument(
        "--steps", type=_positive_int, default=300, help="training steps per run"
    )
    ev.add_argument("--out", default="results_out", help="output folder (results_out)")
    ev.add_argument("--list", action="store_true", help="list the tasks and exit")
    ev.add_argument("--resume", action="store_true",
                    help="keep the tasks an interrupted run saved in OUT/partial.json")
    ev.set_defaults(func=cmd_evaluate)

    ab = sub.add_parser(
        "ablation", help="memory ablation of Mnemosyne (meta-trains variants)"
    )
    ab.add_argument(
        "--outer-steps",
        type=_positive_int,
        default=None,
        help="meta-training outer steps per variant (ABLATION_OUTER_STEPS: 100)",
    )
    ab.add_argument("--tasks", default=None, help="evaluation tasks (ABLATION_TASKS)")
    ab.add_argument(
        "--seeds", type=_seeds, default=(0, 1), help="evaluation seeds (0,1)"
    )
    ab.add_argument(
        "--steps", type=_positive_int, default=300, help="training steps per run"
    )
    ab.add_argument(
        "--preset", default="default", help="preset the variants follow (default)"
    )
    ab.add_argument(
        "--out", default="ablation_out", help="output folder (ablation_out)"
    )
    ab.add_argument("--variants", choices=("memory", "design"), default="memory",
                    help="memory variants (heads, features) or the v2 design choices")
    ab.set_defaults(func=cmd_ablation)
    return parser


def _one_line(text) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return the exit status: 0, 2 for a usage
    error (one line on stderr, no traceback), 130 when interrupted."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print(f"mnemosyne: error: {_one_line(err)}", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except UsageError as err:
        print(f"mnemosyne {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.filename is None:
            raise
        # a path given on the command line cannot be read or written
        print(
            f"mnemosyne {args.command}: error: {err.strerror or err}: "
            f"{err.filename!r}; "
            "check the path and its permissions",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(f"mnemosyne {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
