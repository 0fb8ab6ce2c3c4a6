"""Sharded training: parameters split over 8 host devices, with plain jit
and with the explicit shard_map path."""

# --8<-- [start:devices]
import os

# 8 host (CPU) devices. Only takes effect if set before JAX starts; on real
# accelerators, leave it out.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# --8<-- [end:devices]

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import mnemosyne  # noqa: E402

# the docs tests set 5
STEPS = int(os.environ.get("MNEMOSYNE_EXAMPLE_STEPS", "50"))

# --8<-- [start:mesh]
# Recent JAX makes jax.make_mesh axes Explicit by default: say what you want.
mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))

key = jax.random.key(0)
params = {
    "w": jax.random.normal(key, (64, 32)) / 8.0,  # rows split over "data"
    "b": jnp.zeros(32),  # replicated
}
param_specs = {"w": P("data", None), "b": P()}
params = jax.tree.map(
    lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec)),
    params,
    param_specs,
)
x = jax.random.normal(jax.random.key(1), (128, 64))
y = jnp.tanh(x @ jax.random.normal(jax.random.key(2), (64, 32)))


def loss_fn(params):
    return jnp.mean((jnp.tanh(x @ params["w"] + params["b"]) - y) ** 2)
# --8<-- [end:mesh]


# --8<-- [start:jit]
# an untrained θ here; mnemosyne.pretrained() works the same way
lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(3))
tx = mnemosyne.mnemosyne(lopt=lopt)


@jax.jit
def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss


# init places each memory like its parameter and the step counters on the
# mesh; every step returns a state of the same types and shardings, so the
# step compiles once (and lax.scan / lax.cond can carry the state).
state = tx.init(params)
print("memory of w:", state[0].memory["w"].numerator.sharding.spec)
for _ in range(STEPS):
    params, state, loss = step(params, state)
print("jit: loss", float(loss), "w sharding", params["w"].sharding.spec)
# --8<-- [end:jit]

# --8<-- [start:shard_map]
# The explicit path: the update runs per shard under jax.shard_map.
# Tensor-level statistics (RMS normalisers, the non-finite check) are
# reduced with collectives, so each shard computes what one device would.
update = jax.jit(mnemosyne.sharded_update(lopt, mesh, param_specs))
memory = lopt.init(params)
grads = jax.jit(jax.grad(loss_fn))(params)
sharded_updates, memory = update(grads, memory, params)

# The same numbers as the update on one device:
host_grads, host_params = jax.device_get((grads, params))
single_update = eqx.filter_jit(lopt.update)
single_updates, _ = single_update(
    host_grads, lopt.init(host_params), host_params
)
for name in params:
    np.testing.assert_allclose(
        sharded_updates[name], single_updates[name], rtol=1e-5, atol=1e-8
    )
print("shard_map update == single-device update")
# --8<-- [end:shard_map]
