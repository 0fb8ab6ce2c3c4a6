"""Meta-train your own Mnemosyne on a task family, with checkpoints, resume, save/load."""

import os
import tempfile

import jax
import jax.numpy as jnp

import mnemosyne
from mnemosyne import meta, tasks

OUTER_STEPS = int(os.environ.get("MNEMOSYNE_EXAMPLE_STEPS", "300"))  # tests set 5
workdir = tempfile.mkdtemp(prefix="mnemosyne-meta-")

# --8<-- [start:tasks]
# A task: init(key) -> params, loss(params, batch) -> scalar, sample_batch(key) -> batch.
task = tasks.get_task("mlp_iris")
params = task.init(jax.random.key(0))
print(task.loss(params, task.sample_batch(jax.random.key(1))))

# A family samples tasks: here random quadratics of dimension 10 or 20 (condition
# number and gradient noise are sampled too). tasks.get_family("mixed_family") is the
# MLP / logistic regression / quadratic / Rosenbrock mixture the shipped weights use.
family = tasks.QuadraticFamily(dims=(10, 20))
# --8<-- [end:tasks]

# --8<-- [start:trainer]
lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0))  # untrained θ
trainer = meta.MetaTrainer(
    lopt,
    family,
    meta.TruncatedBPTT(),        # or meta.AntitheticES(...) for long unrolls
    learning_rate=1e-3,          # outer Adam, meta-gradients clipped to norm 1
    num_tasks=4,                 # inner trajectories per outer step (vmapped)
    unroll_length=10,            # inner steps per truncation window
    horizon=50,                  # inner steps per trajectory
    checkpoint_dir=os.path.join(workdir, "ckpt"),
    checkpoint_every=max(1, OUTER_STEPS // 2),
    key=jax.random.key(42),
)
lopt, history = trainer.run(OUTER_STEPS, progress=False)
print("meta-loss: first", history["meta_loss"][0], "last", history["meta_loss"][-1])
print("checkpoints:", [os.path.basename(p) for p in trainer.checkpoints()])
# --8<-- [end:trainer]

# --8<-- [start:resume]
# A new trainer with the same configuration and checkpoint_dir resumes from the
# latest complete checkpoint; the continued run is bit-identical to an
# uninterrupted one. run(n) trains until n outer steps in total.
resumed = meta.MetaTrainer(
    mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0)),
    family,
    meta.TruncatedBPTT(),
    learning_rate=1e-3,
    num_tasks=4,
    unroll_length=10,
    horizon=50,
    checkpoint_dir=os.path.join(workdir, "ckpt"),
    checkpoint_every=max(1, OUTER_STEPS // 2),
    key=jax.random.key(42),
)
lopt, history = resumed.run(OUTER_STEPS + 2, progress=False)
print("resumed at", OUTER_STEPS, "now at", resumed.step)
# --8<-- [end:resume]

# --8<-- [start:save]
path = os.path.join(workdir, "my_mnemosyne.eqx")
mnemosyne.save(path, lopt)           # θ and its constructor config, written atomically
lopt = mnemosyne.load(path)          # no skeleton needed
tx = mnemosyne.mnemosyne(lopt=lopt)  # use it like the pretrained one

params = {"w": jnp.ones(3)}
state = tx.init(params)
updates, state = tx.update({"w": jnp.ones(3)}, state, params)
# --8<-- [end:save]
assert all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates))
