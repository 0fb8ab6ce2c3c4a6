"""Getting started: Mnemosyne in a custom JAX training loop with an Equinox model."""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

import mnemosyne

STEPS = int(os.environ.get("MNEMOSYNE_EXAMPLE_STEPS", "200"))  # tests set 5

# --8<-- [start:model]
key = jax.random.key(0)
model_key, data_key = jax.random.split(key)
model = eqx.nn.MLP(in_size=8, out_size=1, width_size=32, depth=2, key=model_key)

# A regression problem: y = sin(sum(x)).
x = jax.random.normal(data_key, (256, 8))
y = jnp.sin(x.sum(axis=1, keepdims=True))


def loss_fn(model, x, y):
    pred = jax.vmap(model)(x)
    return jnp.mean((pred - y) ** 2)
# --8<-- [end:model]


# --8<-- [start:optimizer]
def learned_optimizer():
    """The shipped pretrained θ, or (if the weights file is not there yet)
    a fresh, untrained Mnemosyne: normalised gradient descent with a small step."""
    try:
        return mnemosyne.pretrained("default")
    except FileNotFoundError:
        print("no pretrained weights: using an untrained CoordinatewiseMnemosyne")
        return mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(1))


schedule = optax.cosine_decay_schedule(init_value=1.0, decay_steps=STEPS, alpha=0.1)
tx = optax.chain(
    optax.clip_by_global_norm(1.0),  # acts on the gradients Mnemosyne sees
    mnemosyne.mnemosyne(learning_rate=schedule, lopt=learned_optimizer()),
    optax.add_decayed_weights(-1e-4),  # decoupled weight decay, after the step
)
# --8<-- [end:optimizer]

# --8<-- [start:loop]
params = eqx.filter(model, eqx.is_inexact_array)  # only the arrays get optimized
opt_state = tx.init(params)


@eqx.filter_jit
def train_step(model, opt_state, x, y):
    loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, y)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = tx.update(grads, opt_state, params)  # params are required
    model = eqx.apply_updates(model, updates)
    return model, opt_state, loss


for step in range(STEPS):
    model, opt_state, loss = train_step(model, opt_state, x, y)
    if step % max(1, STEPS // 5) == 0 or step == STEPS - 1:
        print(f"step {step:4d}  loss {float(loss):.4f}")
# --8<-- [end:loop]

# --8<-- [start:state]
# optax.tree_utils.tree_get finds a named field anywhere in a (chained) state.
steps = optax.tree_utils.tree_get(opt_state, "step")
skipped = optax.tree_utils.tree_get(opt_state, "skipped")
print("steps taken:", int(steps), " skipped (non-finite gradients):", int(skipped))
# --8<-- [end:state]
assert jnp.isfinite(loss)
assert int(steps) == STEPS and int(skipped) == 0

# --8<-- [start:nan]
bad_x = x.at[0, 0].set(jnp.nan)  # a batch whose gradients are NaN
_, nan_state, nan_loss = train_step(model, opt_state, bad_x, y)
print("loss", float(nan_loss), "-> skipped:",
      int(optax.tree_utils.tree_get(nan_state, "skipped")),
      " step still", int(optax.tree_utils.tree_get(nan_state, "step")))
# --8<-- [end:nan]
assert int(optax.tree_utils.tree_get(nan_state, "skipped")) == 1
assert int(optax.tree_utils.tree_get(nan_state, "step")) == STEPS
assert int(optax.tree_utils.tree_get(nan_state, "count")) == STEPS + 1  # the schedule's
