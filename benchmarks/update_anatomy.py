"""Where the time of one Mnemosyne update goes on this machine (no asv needed).

    python benchmarks/update_anatomy.py [--size 1e6] [--repeats 15]

Times, interleaved in one process, on `size` float32 parameters: the Adam and
Mnemosyne (default and bfloat16-memory) update+apply steps of
`update_ratio.py`, a pure streaming kernel, and one elementwise pass of each
transcendental function the Mnemosyne step evaluates per coordinate (log for
the features, exp for the key and query random features and the step size,
tanh for the magnitude squashing). Each is printed in units of Adam's whole
update, with the bytes the compiled update moves per parameter (counted from
XLA's optimized HLO), so one can see whether the update is bound by memory
traffic or by arithmetic.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402

# transcendental passes per coordinate in the default CoordinatewiseMnemosyne step
TRANSCENDENTALS = {"log": 1, "exp": 4, "tanh": 1}


def hlo_bytes_per_param(runner: c.UpdateRunner) -> float:
    """Bytes read and written by the loops of the compiled update: the fusions
    (and custom calls) of the entry computation and of the taken branch of its
    conditionals (the update of each tensor runs inside one)."""
    hlo = (
        runner.step.lower(runner.params, runner.grads, runner.state).compile().as_text()
    )
    computations = dict(
        re.findall(r"\n(?:ENTRY )?%(\S+) [^\n]*\{\n(.*?)\n\}", hlo, re.S)
    )
    entry = re.search(r"\nENTRY %(\S+) ", hlo).group(1)
    return _loop_bytes(computations, entry) / runner.num_params


def _loop_bytes(computations: dict, computation: str) -> int:
    sizes: dict[str, int] = {}
    total = 0
    for line in computations[computation].splitlines():
        m = re.match(r"\s*(?:ROOT )?%(\S+) = (\(.*?\)|\S+) (\S+?)\((.*)", line)
        if not m:
            continue
        name, shape, op, rest = m.groups()
        sizes[name] = _shape_bytes(shape)
        if op == "fusion" or op.startswith("custom-call"):
            operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
            total += sizes[name] + sum(sizes.get(o, 0) for o in operands)
        elif op == "conditional":  # JAX's cond: branch_computations={false, true}
            taken = re.search(r"branch_computations=\{[^}]*%(\S+?)\}", rest).group(1)
            total += _loop_bytes(computations, taken)
    return total


def _shape_bytes(shape: str) -> int:
    width = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "pred": 1, "f64": 8, "u32": 4}
    total = 0
    for dtype, dims in re.findall(
        r"(f32|bf16|f16|s32|pred|f64|u32)\[([\d,]*)\]", shape
    ):
        total += width[dtype] * int(
            np.prod([int(d) for d in dims.split(",") if d] or [1])
        )
    return total


class _Elementwise:
    def __init__(self, fn, n: int):
        self.x = jax.random.normal(jax.random.key(0), (n,), jnp.float32)
        self.f = jax.jit(fn)
        self()

    def __call__(self) -> None:
        self.f(self.x).block_until_ready()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1e6)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    n = int(args.size)
    runners = {
        name: c.UpdateRunner(name, n)
        for name in ("adam", "mnemosyne", "mnemosyne_bf16")
    }
    kernels = {
        "stream x <- 0.5x + 1": _Elementwise(lambda x: 0.5 * x + 1.0, n),
        "log": _Elementwise(lambda x: jnp.log(jnp.abs(x) + 1.0), n),
        "exp": _Elementwise(jnp.exp, n),
        "tanh": _Elementwise(jnp.tanh, n),
    }
    times = c.interleaved_times({**runners, **kernels}, repeats=args.repeats)
    adam = times["adam"]
    print(
        f"# {n:.3g} float32 parameters, jax {jax.__version__} on "
        f"{jax.default_backend()}, "
        f"{os.cpu_count()} CPU cores; times in units of Adam's update "
        f"({1e3 * adam:.2f} ms)"
    )
    print("| what | x Adam | bytes/param moved (HLO) |")
    print("|---|---|---|")
    for name, runner in runners.items():
        print(
            f"| {name} update+apply | {times[name] / adam:.2f} | "
            f"{hlo_bytes_per_param(runner):.0f} |"
        )
    for name in kernels:
        print(f"| one pass of {name} | {times[name] / adam:.2f} | 8 |")
    floor = sum(k * times[name] for name, k in TRANSCENDENTALS.items()) / adam
    print(f"\ntranscendental passes alone in one Mnemosyne step "
          f"({', '.join(f'{k} {name}' for name, k in TRANSCENDENTALS.items())}): "
          f"{floor:.2f}x Adam's whole update")
    return 0


if __name__ == "__main__":
    sys.exit(main())
