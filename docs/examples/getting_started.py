"""Getting started: Mnemosyne in a custom JAX loop with an Equinox model."""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import mnemosyne

# the docs tests set 5
STEPS = int(os.environ.get("MNEMOSYNE_EXAMPLE_STEPS", "200"))

# --8<-- [start:model]
key = jax.random.key(0)
model_key, data_key = jax.random.split(key)
model = eqx.nn.MLP(
    in_size=8, out_size=1, width_size=32, depth=2, key=model_key
)

# A regression problem: y = sin(sum(x)).
x = jax.random.normal(data_key, (256, 8))
y = jnp.sin(x.sum(axis=1, keepdims=True))


def loss_fn(model, x, y):
    pred = jax.vmap(model)(x)
    return jnp.mean((pred - y) ** 2)
# --8<-- [end:model]


# --8<-- [start:optimizer]
schedule = optax.cosine_decay_schedule(
    init_value=1.0, decay_steps=STEPS, alpha=0.1
)
tx = optax.chain(
    # before Mnemosyne: acts on the gradients it sees
    optax.clip_by_global_norm(1.0),
    # the shipped pretrained θ; the schedule multiplies its learned step
    mnemosyne.mnemosyne(learning_rate=schedule),
    # after Mnemosyne: decoupled weight decay (optax adds updates)
    optax.add_decayed_weights(-1e-4),
)
# --8<-- [end:optimizer]

# --8<-- [start:loop]
params = eqx.filter(model, eqx.is_inexact_array)  # only arrays are optimized
opt_state = tx.init(params)


@eqx.filter_jit
def train_step(model, opt_state, x, y):
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, y)
    params = eqx.filter(model, eqx.is_inexact_array)
    # Mnemosyne's features read the parameters: pass them
    updates, opt_state = tx.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    return model, opt_state, loss


for step in range(STEPS):
    model, opt_state, loss = train_step(model, opt_state, x, y)
    if step % max(1, STEPS // 5) == 0 or step == STEPS - 1:
        print(f"step {step:4d}  loss {float(loss):.4f}")
# --8<-- [end:loop]

# --8<-- [start:state]
# optax.tree_utils.tree_get finds a named field anywhere in a chain's state.
steps = optax.tree_utils.tree_get(opt_state, "step")
skipped = optax.tree_utils.tree_get(opt_state, "skipped")
print("steps taken:", int(steps), " skipped (non-finite):", int(skipped))
# --8<-- [end:state]
assert jnp.isfinite(loss)
assert int(steps) == STEPS and int(skipped) == 0

# --8<-- [start:nan]
bad_x = x.at[0, 0].set(jnp.nan)  # a batch whose gradients are NaN
_, nan_state, nan_loss = train_step(model, opt_state, bad_x, y)
print(
    "loss", float(nan_loss),
    "-> skipped:", int(optax.tree_utils.tree_get(nan_state, "skipped")),
    " step still:", int(optax.tree_utils.tree_get(nan_state, "step")),
)
# --8<-- [end:nan]
assert int(optax.tree_utils.tree_get(nan_state, "skipped")) == 1
assert int(optax.tree_utils.tree_get(nan_state, "step")) == STEPS
# the schedule's own counter still advances
assert int(optax.tree_utils.tree_get(nan_state, "count")) == STEPS + 1
