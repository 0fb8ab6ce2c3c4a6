"""Meta-train your own Mnemosyne: your own task and task family, the
meta-trainer, checkpoints and resume, saving and loading θ, evaluation."""

import os
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import mnemosyne
from mnemosyne import evaluation, meta, tasks

# the docs tests set 5
OUTER_STEPS = int(os.environ.get("MNEMOSYNE_EXAMPLE_STEPS", "300"))
workdir = tempfile.mkdtemp(prefix="mnemosyne-meta-")


# --8<-- [start:task]
class LinearRegression(tasks.AbstractTask):
    """Least squares on a fixed design matrix: a task of your own."""

    x: jax.Array  # (n, d) inputs: data are fields, hence pytree leaves
    y: jax.Array  # (n,) targets
    batch_size: int = eqx.field(static=True, default=32)
    name: str = eqx.field(static=True, default="my_linear_regression")
    kind: str = eqx.field(static=True, default="quadratic")

    def init(self, key):
        w = 0.1 * jax.random.normal(key, self.x.shape[1:])
        return {"w": w, "b": jnp.zeros(())}

    def loss(self, params, batch):
        x, y = batch
        return 0.5 * jnp.mean((x @ params["w"] + params["b"] - y) ** 2)

    def sample_batch(self, key):  # fixed shapes, deterministic given key
        n = self.x.shape[0]
        idx = jax.random.randint(key, (self.batch_size,), 0, n)
        return self.x[idx], self.y[idx]


task = LinearRegression(
    x=jax.random.normal(jax.random.key(0), (256, 16)), y=jnp.ones(256)
)
params = task.init(jax.random.key(1))
batch = task.sample_batch(jax.random.key(2))
print("initial loss:", float(task.loss(params, batch)))
# --8<-- [end:task]


# --8<-- [start:family]
class LinearRegressionFamily(tasks.AbstractTaskFamily):
    """Random ill-conditioned regression problems: a task family of your own.

    `sample` runs in Python, outside jit. Every task it returns has the same
    shapes, so the meta-trainer compiles its outer step once.
    """

    dim: int = eqx.field(static=True, default=16)
    name: str = eqx.field(static=True, default="my_regression_family")
    kinds: frozenset = eqx.field(
        static=True, default=frozenset({"quadratic"})
    )

    def sample(self, key):
        k_scale, k_x, k_w, k_noise = jax.random.split(key, 4)
        # column scales e^-2..e^2: condition numbers up to about e^8
        log_scale = jax.random.uniform(
            k_scale, (self.dim,), minval=-2.0, maxval=2.0
        )
        x = jax.random.normal(k_x, (256, self.dim)) * jnp.exp(log_scale)
        w = jax.random.normal(k_w, (self.dim,))
        y = x @ w + 0.1 * jax.random.normal(k_noise, (256,))
        return LinearRegression(x, y)


family = LinearRegressionFamily()
# Built-in tasks and families work the same way: tasks.list_tasks(),
# tasks.get_task("mlp_iris"), tasks.get_family("mixed_family"), ...
# --8<-- [end:family]


# --8<-- [start:trainer]
def make_trainer(lopt):
    return meta.MetaTrainer(
        lopt,
        family,
        meta.TruncatedBPTT(),  # or meta.AntitheticES(...) for long unrolls
        learning_rate=1e-3,  # outer Adam; meta-gradient clipped to norm 1
        num_tasks=4,  # inner trajectories per outer step (vmapped)
        unroll_length=10,  # inner steps per truncation window
        horizon=50,  # inner steps per trajectory
        checkpoint_dir=os.path.join(workdir, "checkpoints"),
        checkpoint_every=max(1, OUTER_STEPS // 2),
        key=jax.random.key(42),
    )


untrained = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0))
trainer = make_trainer(untrained)
lopt, history = trainer.run(OUTER_STEPS, progress=False)
print("meta-loss:", history["meta_loss"][0], "->", history["meta_loss"][-1])
print("checkpoints:", [os.path.basename(p) for p in trainer.checkpoints()])
# --8<-- [end:trainer]

# --8<-- [start:resume]
# A new trainer with the same configuration and checkpoint_dir resumes
# from the latest complete checkpoint (the θ passed in only gives the
# structure); the continued run is bit-identical to an uninterrupted one.
# run(n) trains until n outer steps in total: here 2 more. The history is
# restored with the rest.
resumed = make_trainer(untrained)
lopt, resumed_history = resumed.run(OUTER_STEPS + 2, progress=False)
steps = resumed_history["step"]
print("history: outer steps", steps[0], "to", steps[-1])
# --8<-- [end:resume]
assert resumed_history["step"] == list(range(OUTER_STEPS + 2))
assert resumed_history["meta_loss"][:OUTER_STEPS] == history["meta_loss"]

# --8<-- [start:save]
path = os.path.join(workdir, "my_mnemosyne.eqx")
mnemosyne.save(path, lopt)  # θ and its configuration, written atomically
lopt = mnemosyne.load(path)  # no skeleton needed
tx = mnemosyne.mnemosyne(lopt=lopt)  # use it like the pretrained one
# --8<-- [end:save]

# --8<-- [start:evaluate]
result = evaluation.evaluate(
    {"mine": tx, "adam": optax.adam(1e-2)},
    [family.sample(jax.random.key(123))],  # a task the trainer never saw
    seeds=(0, 1),
    num_steps=max(10, OUTER_STEPS // 3),
    measure_cost=False,
    progress=False,
)
print(result.to_markdown())
# --8<-- [end:evaluate]
assert all(jnp.isfinite(v) for v in result.final_losses("mine").values())
