"""Command line: `mnemosyne demo | meta-train | evaluate | ablation` (also `python -m mnemosyne`).

Errors a user can fix (unknown names, missing files, bad values) exit with
status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

DEMO_TASKS = ("mlp_digits", "vit_digits")


class UsageError(Exception):
    """A mistake in the command line: reported in one line, exit status 2."""


def _csv(text: str) -> list[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers like 0,1,2, got {text!r}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _check_tasks(names: list[str]) -> list[str]:
    from .tasks import list_tasks

    known = list_tasks()
    if names == ["all"]:
        return known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"unknown task(s) {unknown}; run `mnemosyne evaluate --list` to see them")
    return names


def cmd_demo(args) -> int:
    """Train real models with the pretrained Mnemosyne beside Adam; table + plot."""
    import optax

    from . import _transform
    from .evaluation import evaluate

    out = pathlib.Path(args.out)
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
    result = evaluate(optimizers, list(DEMO_TASKS), seeds=args.seeds, num_steps=args.steps)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out)
    print(result.to_markdown())
    print(f"\nWrote {out / 'results.md'}, {out / 'results.json'} and PNG plots in {out}/ "
          f"({time.perf_counter() - start:.0f} s).")
    return 0


def cmd_meta_train(args) -> int:
    """Meta-train a preset and save its weights."""
    from .meta import PRESETS, train_preset

    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    output = pathlib.Path(args.output or f"{args.preset}.eqx")
    checkpoints = pathlib.Path(args.checkpoint_dir or f"{output.with_suffix('')}_checkpoints")
    start = time.perf_counter()
    train_preset(
        args.preset,
        output=output,
        checkpoint_dir=checkpoints,
        resume=not args.no_resume,
        progress=True,
        num_outer_steps=args.steps,
    )
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
    for name in names:
        if name.endswith("_tuned") and name in optimizer_names():
            continue  # tuned per task inside `evaluate`
        try:
            resolve_optimizer(name)
        except FileNotFoundError as err:
            raise UsageError(str(err)) from None
        except (KeyError, ValueError) as err:
            raise UsageError(f"unknown optimizer {name!r} ({err})") from None
    start = time.perf_counter()
    result = evaluate(names, tasks, seeds=args.seeds, num_steps=args.steps)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.save(out)
    print(result.to_markdown())
    print(f"\nWrote {out}/results.md, results.json and PNG plots "
          f"({time.perf_counter() - start:.0f} s).")
    return 0


def cmd_ablation(args) -> int:
    """Meta-train Mnemosyne's memory variants with one reduced budget and compare them."""
    from .evaluation import ABLATION_OUTER_STEPS, ABLATION_TASKS, memory_ablation
    from .meta import PRESETS

    if args.preset not in PRESETS:
        raise UsageError(f"unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    tasks = list(ABLATION_TASKS) if args.tasks is None else _check_tasks(_csv(args.tasks))
    out = pathlib.Path(args.out)
    start = time.perf_counter()
    memory_ablation(out, num_outer_steps=args.outer_steps or ABLATION_OUTER_STEPS, tasks=tasks,
                    seeds=args.seeds, num_steps=args.steps, preset=args.preset)
    print((out / "ablation.md").read_text())
    print(f"Wrote {out}/ablation.md, ablation.json, ablation.png and the variants' weights "
          f"({time.perf_counter() - start:.0f} s).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnemosyne", description="Mnemosyne learned optimizer: demo, meta-training, evaluation."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="pretrained Mnemosyne vs Adam on real models")
    demo.add_argument("--steps", type=_positive_int, default=500, help="training steps (500)")
    demo.add_argument("--seeds", type=_seeds, default=(0,), help="comma-separated seeds (0)")
    demo.add_argument("--out", default="demo_out", help="output folder (demo_out)")
    demo.set_defaults(func=cmd_demo)

    meta = sub.add_parser("meta-train", help="meta-train a preset (e.g. --preset default)")
    meta.add_argument("--preset", required=True, help="preset name: default, lstm, ...")
    meta.add_argument("--output", help="weights file to write (<preset>.eqx)")
    meta.add_argument("--checkpoint-dir", help="checkpoint folder (<output>_checkpoints)")
    meta.add_argument("--no-resume", action="store_true", help="start over, ignore checkpoints")
    meta.add_argument("--steps", type=_positive_int, default=None, help="outer steps (preset's)")
    meta.set_defaults(func=cmd_meta_train)

    ev = sub.add_parser("evaluate", help="compare optimizers over tasks and seeds")
    ev.add_argument("--optimizers", default="mnemosyne,adam", help="comma-separated names")
    ev.add_argument("--tasks", default="all", help="comma-separated task names, or all")
    ev.add_argument("--seeds", type=_seeds, default=(0, 1, 2), help="comma-separated seeds")
    ev.add_argument("--steps", type=_positive_int, default=300, help="training steps per run")
    ev.add_argument("--out", default="results_out", help="output folder (results_out)")
    ev.add_argument("--list", action="store_true", help="list the tasks and exit")
    ev.set_defaults(func=cmd_evaluate)

    ab = sub.add_parser("ablation", help="memory ablation of Mnemosyne (meta-trains variants)")
    ab.add_argument("--outer-steps", type=_positive_int, default=None,
                    help="meta-training outer steps per variant (ABLATION_OUTER_STEPS: 100)")
    ab.add_argument("--tasks", default=None, help="evaluation tasks (ABLATION_TASKS)")
    ab.add_argument("--seeds", type=_seeds, default=(0, 1), help="evaluation seeds (0,1)")
    ab.add_argument("--steps", type=_positive_int, default=300, help="training steps per run")
    ab.add_argument("--preset", default="default", help="preset the variants follow (default)")
    ab.add_argument("--out", default="ablation_out", help="output folder (ablation_out)")
    ab.set_defaults(func=cmd_ablation)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"mnemosyne {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mnemosyne {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
