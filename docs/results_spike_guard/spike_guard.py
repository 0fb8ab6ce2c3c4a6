"""Record script (session 17, not shipped): two spike guards on the shipped θ.

    python docs/results_spike_guard/spike_guard.py CASE SEEDS STEPS|- K LAMBDA \\
        [--clip] [--a0 A0] [--trace] [--probe N --out F]

A tensor's *spike ratio* is $r_t = \\operatorname{rms}(g_t) / \\sqrt{\\operatorname
{mean}_i \\hat\\nu_{t,i}}$, its gradient's RMS over its running scale (Eq. (V),
bias-corrected, this gradient included). Two guards, patched into this process
only (the library is unchanged):

- persistent (`LAMBDA > 0`): Eq. (A2) becomes $\\rho_t = \\operatorname{clip}(
  \\rho_{t-1} + \\kappa (a_t - a_0) - \\lambda \\max(0, \\log(r_t / K)))$, so
  each spike lowers the tensor's multiplier for good;
- per step (`--clip`): this step's update is multiplied by $\\min(1, K / r_t)$.

CASE is a `scripts/step_floor_sweep.py` case, a third-probe task or a suite
task. Prints the final losses (mean of the last window) and stability ratios
(`step_floor_sweep.final_and_ratio`). `--a0` reads θ with another agreement
threshold; `--trace` prints the spike ratio's quantiles per tenth of the run.
`--probe N --out F` runs `scripts/validate_checkpoints.py --probe N` on θ so
read and guarded instead (SEEDS is then a number of seeds, from 0; CASE and
STEPS are ignored; the untrained row is guarded too).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import step_floor_sweep  # noqa: E402

import mnemosyne  # noqa: E402
from mnemosyne import _lopt  # noqa: E402


def spike_ratio(grad, nu, step, decay, rms, B):
    """$r_t$, broadcast like `rms.g_rms` (one value per packed coordinate)."""
    correction = 1.0 / (1.0 - decay ** (step + 1.0))
    return rms.rms_of(grad) / (rms.rms_of(B.xp.sqrt(nu * correction)) + 1e-30)


def patch(K, lam, clip, records=None):
    """Install the guards (and the trace) in this process."""
    leaf_step = _lopt.CoordinatewiseMnemosyne._leaf_step
    log_step_scale = _lopt.AbstractMnemosyne._log_step_scale
    last = {}

    def guarded_leaf_step(self, grad, param, memory, step, B, axis_names, rms):
        update, new_memory, momentum = leaf_step(
            self, grad, param, memory, step, B, axis_names, rms)
        ratio = spike_ratio(grad, new_memory.second_moment[0], step,
                            self.second_moment_decay, rms, B)
        last["ratio"] = ratio
        if clip:
            update = update * B.xp.minimum(1.0, K / ratio)
        return update, new_memory, momentum

    def guarded_log_step_scale(self, grad, momentum, log_scale, rms, step, B):
        new = log_step_scale(self, grad, momentum, log_scale, rms, step, B)
        # one ratio per tensor: the sum over a tensor of its broadcast value
        # over the sum of ones
        ratio = B.xp.broadcast_to(last["ratio"], grad.shape)
        ratio = rms.sum_of(ratio) / rms.sum_of(jnp.ones_like(grad))
        if records is not None:
            jax.debug.callback(lambda r: records.append(np.ravel(r).copy()), ratio)
        if lam > 0:
            low, high = self.step_scale_range
            new = jnp.clip(new - lam * jnp.maximum(0.0, jnp.log(ratio / K)),
                           float(np.log(low)), float(np.log(high)))
        return new

    _lopt.CoordinatewiseMnemosyne._leaf_step = guarded_leaf_step
    _lopt.AbstractMnemosyne._log_step_scale = guarded_log_step_scale


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case")
    parser.add_argument("seeds", help="comma-separated, vmapped in one run")
    parser.add_argument("steps", help="'-' for the case's own")
    parser.add_argument("K", type=float)
    parser.add_argument("lam", type=float)
    parser.add_argument("--clip", action="store_true")
    parser.add_argument("--a0", type=float, default=None)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--probe", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    records = [] if args.trace else None
    patch(args.K, args.lam, args.clip, records)
    if args.probe:
        return validate(args)
    task, steps, _ = step_floor_sweep.task_named(args.case)
    steps = steps if args.steps == "-" else int(args.steps)
    seeds = [int(s) for s in args.seeds.split(",")]
    final, ratio, seconds = step_floor_sweep.final_and_ratio(
        mnemosyne.mnemosyne(lopt=shipped_read_with(args.a0)), task, seeds, steps)
    print(f"{args.case} a0={args.a0} clip={args.clip} K={args.K} lam={args.lam} "
          f"final {final.mean():.4g} {np.array2string(final, precision=4)} "
          f"ratio {np.array2string(ratio, precision=2)} ({seconds:.0f} s)")
    if records:
        per_step = len(records) // steps
        ratios = np.array([np.concatenate(records[i * per_step:(i + 1) * per_step])
                           for i in range(steps)])
        tenth = max(1, steps // 10)
        for start in range(0, steps, tenth):
            r = ratios[start:start + tenth]
            print(f"{start:6d} spike ratio q50 {np.median(r):.2f} q90 "
                  f"{np.quantile(r, .9):.2f} q99 {np.quantile(r, .99):.2f} max "
                  f"{r.max():.1f} share > 3 {np.mean(r > 3):.3f}")



def shipped_read_with(a0):
    """The shipped θ, read with the agreement threshold `a0` (None: its own)."""
    lopt = mnemosyne.load(ROOT / "mnemosyne/weights/default.eqx")
    if a0 is None:
        return lopt
    return mnemosyne.reconfigure(lopt, step_agreement_threshold=a0)


def validate(args):
    """`validate_checkpoints.py --probe` on the guarded θ (already patched)."""
    import validate_checkpoints  # scripts/, on the path above

    with tempfile.TemporaryDirectory() as folder:
        path = str(pathlib.Path(folder) / "spike_guard.eqx")
        mnemosyne.save(path, shipped_read_with(args.a0))
        sys.argv = ["validate_checkpoints.py", path, "--probe", args.probe,
                    "--seeds", args.seeds, "--out", args.out]
        validate_checkpoints.main()
    # the record names the candidate, not the temporary file
    record = pathlib.Path(args.out)
    record.write_text(record.read_text().replace(path, "candidate"))


if __name__ == "__main__":
    main()
