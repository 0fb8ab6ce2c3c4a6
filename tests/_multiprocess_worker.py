"""One process of a multi-process test (`tests/test_multiprocess.py`), or the
single-process run it is compared with.

    python tests/_multiprocess_worker.py SCENARIO OUT --num-processes N \
        --process-id I --port PORT [--steps S]

The launcher sets `JAX_PLATFORMS=cpu` and the host device count in
`XLA_FLAGS` (4 per process for two processes, 8 for one). With more than one
process this joins the others on 127.0.0.1:PORT (gloo collectives, a short
heartbeat timeout) before anything starts a JAX backend. Each scenario writes
what the test compares under OUT, named by process id:

- `train`: a few steps of `mnemosyne.mnemosyne()` under `jax.jit` and of
  `mnemosyne.sharded_update` under `shard_map`, on parameters sharded over a
  mesh of the 8 devices of all processes; the optimizer state is checkpointed
  (gathered to the host, written by process 0, read back by every process)
  and the run continued from the checkpoint, which must equal continuing the
  live state. Writes the final parameters of both paths.
- `meta`: a few outer steps of `MetaTrainer` with truncated BPTT, antithetic
  ES and PES, the global task batch of 8 sharded over all devices, writing
  checkpoints. Writes θ and the meta-losses of each.
- `meta-long`: `MetaTrainer` with a checkpoint every outer step, up to
  `--steps` steps, resuming from OUT/checkpoints: what the test kills half
  way and resumes. Prints `step N` after every step (process 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _arguments():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=("train", "meta", "meta-long"))
    parser.add_argument("out")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3)
    return parser.parse_args()


# Seconds without a heartbeat before the coordination service declares a
# process dead: short, so that a killed peer stops the survivor quickly, but
# not so short that two processes compiling on 2 shared cores miss it (5 s
# did once in CI: both declared dead before the first checkpoint).
HEARTBEAT_TIMEOUT_S = 20


def main() -> int:
    args = _arguments()
    if args.num_processes > 1:  # before anything starts a JAX backend
        from mnemosyne._distributed import initialize

        initialize(
            f"127.0.0.1:{args.port}",
            args.num_processes,
            args.process_id,
            heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
            initialization_timeout_s=60,
        )
    import jax

    assert jax.process_count() == args.num_processes
    assert jax.device_count() == 8, jax.device_count()
    os.makedirs(args.out, exist_ok=True)
    {"train": train, "meta": meta, "meta-long": meta_long}[args.scenario](args)
    return 0


def _output(args, name: str) -> str:
    return os.path.join(args.out, f"{name}-{args.process_id}")


# --------------------------------------------------------------------------- #
# training
# --------------------------------------------------------------------------- #


def train(args) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from helpers import sharded_problem
    from jax.experimental import multihost_utils
    from jax.sharding import NamedSharding

    import mnemosyne
    from mnemosyne._distributed import gather_to_host, is_main_process

    mesh = jax.make_mesh((8,), ("d",))
    params, targets, specs = sharded_problem()
    place = lambda tree: {
        k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in tree.items()
    }
    params, targets = place(params), place(targets)
    lopt = mnemosyne.pretrained("default")
    tx = mnemosyne.mnemosyne(lopt=lopt)

    # a quadratic with a different minimiser per coordinate (the targets are
    # an argument: a jitted function may not close over a global array)
    def loss(params, targets):
        return sum(
            jnp.sum((1.0 + jnp.abs(targets[k])) * (params[k] - targets[k]) ** 2)
            for k in params
        )

    def jit_step(params, state, targets):
        grads = jax.grad(loss)(params, targets)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    shard_map_update = mnemosyne.sharded_update(lopt, mesh, specs)

    def shard_map_step(params, state, targets):  # the learned step itself: lr 1
        grads = jax.grad(loss)(params, targets)
        updates, state = shard_map_update(grads, state, params)
        return optax.apply_updates(params, updates), state

    results = {}
    paths = (
        ("jit", jit_step, tx.init), ("shard_map", shard_map_step, lopt.init)
    )
    for name, step, init in paths:
        step = jax.jit(step)
        state = init(params)  # eagerly: placed like the parameters
        memories = [
            s.memory
            for s in jax.tree.leaves(
                state, is_leaf=lambda x: isinstance(x, mnemosyne.MnemosyneState)
            )
            if isinstance(s, mnemosyne.MnemosyneState)
        ]
        assert len(memories) == 1, state
        for k, memory in memories[0].items():
            for leaf in jax.tree.leaves(memory):
                lead = (None,) * (leaf.ndim - params[k].ndim)
                assert _padded(leaf.sharding.spec, leaf.ndim) == _padded(
                    lead + tuple(specs[k]), leaf.ndim
                ), (name, k, leaf.sharding.spec)
        p = params
        for _ in range(2):
            p, state = step(p, state, targets)
        # checkpoint the optimizer state: gathered by all, written by one
        path = os.path.join(args.out, f"opt-state-{name}.npz")
        host = gather_to_host(state)
        if is_main_process():
            np.savez(path, *jax.tree.leaves(host))
        multihost_utils.sync_global_devices(f"saved {name}")
        with np.load(path) as saved:
            leaves = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        restored = jax.tree.unflatten(
            jax.tree.structure(state),
            [
                jax.device_put(v, live.sharding)
                for v, live in zip(leaves, jax.tree.leaves(state), strict=True)
            ],
        )
        p_live, p_restored = p, p
        for _ in range(2):
            p_live, state = step(p_live, state, targets)
            p_restored, restored = step(p_restored, restored, targets)
        live, again = gather_to_host((p_live, p_restored))
        for k in live:
            np.testing.assert_array_equal(np.asarray(again[k]), np.asarray(live[k]))
        results.update({f"{name}/{k}": np.asarray(v) for k, v in live.items()})
    np.savez(_output(args, "train") + ".npz", **results)


def _padded(spec, ndim: int) -> tuple:
    return tuple(spec) + (None,) * (ndim - len(tuple(spec)))


# --------------------------------------------------------------------------- #
# meta-training
# --------------------------------------------------------------------------- #

ESTIMATORS = ("bptt", "es", "pes")


def _trainer(estimator: str, checkpoint_dir: str, **options):
    import jax
    from helpers import FAST_COMPILE, lstm_small

    from mnemosyne.meta import AntitheticES, MetaTrainer, PersistentES, TruncatedBPTT
    from mnemosyne.tasks import get_task

    make = {
        "bptt": TruncatedBPTT,
        "es": lambda: AntitheticES(num_pairs=2),
        "pes": lambda: PersistentES(num_pairs=2),
    }[estimator]
    return MetaTrainer(
        lstm_small(),
        get_task("quadratic"),
        make(),
        num_tasks=8,
        unroll_length=3,
        horizon=6,
        learning_rate=0.01,
        checkpoint_dir=checkpoint_dir,
        compiler_options=FAST_COMPILE,
        key=jax.random.key(0),
        **options,
    )


def _theta_on_host(trainer) -> dict:
    import jax
    import numpy as np

    leaves = jax.tree.leaves(trainer._trainable)
    return {f"theta_{i}": np.asarray(x) for i, x in enumerate(leaves)}


def meta(args) -> None:
    import numpy as np

    for estimator in ESTIMATORS:
        trainer = _trainer(
            estimator,
            os.path.join(args.out, f"checkpoints-{estimator}"),
            checkpoint_every=2,
        )
        _, history = trainer.run(args.steps, progress=False)
        np.savez(
            _output(args, f"meta-{estimator}") + ".npz",
            meta_loss=np.asarray(history["meta_loss"]),
            **_theta_on_host(trainer),
        )


def meta_long(args) -> None:
    from mnemosyne._distributed import is_main_process

    trainer = _trainer(
        "bptt", os.path.join(args.out, "checkpoints"), checkpoint_every=1
    )
    trainer.run(0, progress=False)  # resume, if there is a checkpoint
    while trainer.step < args.steps:
        trainer.run(trainer.step + 1, progress=False)
        if is_main_process():
            print(f"step {trainer.step}", flush=True)
    with open(_output(args, "meta-long") + ".json", "w") as f:
        json.dump({"step": trainer.step, **_theta_json(trainer)}, f)


def _theta_json(trainer) -> dict:
    return {k: v.tolist() for k, v in _theta_on_host(trainer).items()}


if __name__ == "__main__":
    sys.exit(main())
