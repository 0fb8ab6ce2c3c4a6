"""Print the update-cost table quoted in the README (no asv needed).

    python benchmarks/update_ratio.py [--sizes 1e6 1e7] [--repeats 7] [--no-train]

For each size: Adam's and Mnemosyne's (coordinate-wise default) update+apply
time, their ratio, Mnemosyne's state floats per parameter and the fraction of
this machine's streaming bandwidth it reaches; then the ViT (vit_digits, batch
128) training-step ratio. Everything is measured in this one run, interleaved.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as c  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 1e7])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--optimizer", default="mnemosyne", choices=c.OPTIMIZERS)
    parser.add_argument("--stream-size", type=float, default=5e7)
    parser.add_argument(
        "--no-train", action="store_true", help="skip the ViT train step"
    )
    args = parser.parse_args(argv)

    print(
        f"# {datetime.date.today()}  {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, jax {c.jax.__version__} on "
        f"{c.jax.default_backend()}"
    )
    stream = c.StreamKernel(int(args.stream_size))
    floats = c.state_floats_per_param(args.optimizer, 10**5)
    rows = []
    for size in args.sizes:
        result = c.update_ratio(args.optimizer, int(size), repeats=args.repeats)
        runner = result["runners"][args.optimizer]
        adam_runner = result["runners"]["adam"]
        t_stream = c.median_time(stream, repeats=args.repeats)
        bandwidth = stream.bytes_per_call() / t_stream
        times = result["times"]
        rows.append(
            (
                f"{runner.num_params:.3g}",
                f"{1e3 * times['adam']:.2f}",
                f"{1e3 * times[args.optimizer]:.2f}",
                f"{result['ratio']:.2f}",
                f"{floats:.2f}",
                f"{c.bandwidth_fraction(runner, times[args.optimizer], bandwidth):.2f}",
                f"{c.bandwidth_fraction(adam_runner, times['adam'], bandwidth):.2f}",
                f"{bandwidth / 1e9:.1f}",
            )
        )
        del result, runner
    header = ("params", "Adam ms", f"{args.optimizer} ms", "ratio", "floats/param",
              "bw fraction", "Adam bw fraction", "stream GB/s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if not args.no_train:
        r = c.train_step_ratio("vit_digits", args.optimizer, repeats=args.repeats)
        t = r["times"]
        print(
            f"\nvit_digits train step, batch {c.TRAIN_BATCH}: Adam "
            f"{1e3 * t['adam']:.2f} ms, "
            f"{args.optimizer} {1e3 * t[args.optimizer]:.2f} ms, ratio "
            f"{r['ratio']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
