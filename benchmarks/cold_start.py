"""Cold start: the time `mnemosyne.mnemosyne()` adds to `import jax` in a fresh process.

Each measurement is a fresh interpreter (nothing cached in memory), timed from
outside: `python -c "import jax"` against
`python -c "import mnemosyne; mnemosyne.mnemosyne()"`, interleaved, median of
`--repeats` runs. The difference is what a user waits for beyond JAX itself.

    python benchmarks/cold_start.py                      # this checkout
    python benchmarks/cold_start.py --checkout OTHER_DIR # also another checkout
    (before/after)

`--checkout` puts another source tree first on `PYTHONPATH`, so the same
interpreter imports that tree's `mnemosyne` (e.g. a `git worktree` of an older
commit): both are measured in one run, interleaved.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BASELINE = "import jax"
STATEMENT = "import mnemosyne; mnemosyne.mnemosyne()"


def run_once(code: str, checkout: pathlib.Path | None = None) -> float:
    """Wall time of `python -c code` in a fresh interpreter (seconds)."""
    env = dict(os.environ)
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(checkout)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code], check=True, env=env, cwd=checkout or ROOT
    )
    return time.perf_counter() - start


def measure(checkouts: dict[str, pathlib.Path | None], repeats: int) -> dict[str, dict]:
    """Median seconds of `import jax` and of the statement, per checkout."""
    times: dict[str, dict[str, list[float]]] = {
        name: {"jax": [], "mnemosyne": []} for name in checkouts
    }
    for _ in range(repeats):  # interleaved: machine noise hits every row alike
        for name, checkout in checkouts.items():
            times[name]["jax"].append(run_once(BASELINE, checkout))
            times[name]["mnemosyne"].append(run_once(STATEMENT, checkout))
    return {
        name: {k: statistics.median(v) for k, v in row.items()}
        for name, row in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--checkout", type=pathlib.Path, action="append", default=[],
        help="another source tree to measure as well (repeatable)",
    )
    args = parser.parse_args(argv)
    checkouts: dict[str, pathlib.Path | None] = {
        str(path): path.resolve() for path in args.checkout
    }
    checkouts["this checkout"] = None
    result = measure(checkouts, args.repeats)
    print(f"median of {args.repeats} fresh processes each; seconds")
    print(f"| checkout | `{BASELINE}` | `{STATEMENT}` | difference |")
    print("|---|---|---|---|")
    for name, row in result.items():
        diff = row["mnemosyne"] - row["jax"]
        print(f"| {name} | {row['jax']:.2f} | {row['mnemosyne']:.2f} | {diff:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
