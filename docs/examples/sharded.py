"""Sharded training: parameters split over 8 host devices, plain jit and shard_map."""

import os

# Must be set before JAX starts: fake 8 CPU devices (on real accelerators, drop it).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import mnemosyne

STEPS = int(os.environ.get("MNEMOSYNE_EXAMPLE_STEPS", "50"))  # tests set 5

# --8<-- [start:mesh]
# Recent JAX makes jax.make_mesh axes Explicit by default: say what you want.
mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Explicit,))

key = jax.random.key(0)
params = {
    "w": jax.random.normal(key, (64, 32)) / 8.0,  # split by rows over "data"
    "b": jnp.zeros(32),                           # replicated
}
param_specs = {"w": P("data", None), "b": P()}
params = jax.tree.map(
    lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), params, param_specs
)
x = jax.random.normal(jax.random.key(1), (128, 64))
y = jnp.tanh(x @ jax.random.normal(jax.random.key(2), (64, 32)))


def loss_fn(params):
    return jnp.mean((jnp.tanh(x @ params["w"] + params["b"]) - y) ** 2)
# --8<-- [end:mesh]

# --8<-- [start:jit]
lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(3))  # or mnemosyne.pretrained()
tx = mnemosyne.mnemosyne(lopt=lopt)


@jax.jit
def step(params, state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss


# Under jax.set_mesh the state's scalars (the step counter) are placed on the mesh
# too, so the state has the same shardings before and after a step: one compile.
with jax.set_mesh(mesh):
    state = tx.init(params)  # the memory follows each parameter's sharding
    print("memory of w:", state[0].memory["w"].numerator.sharding.spec)
    for i in range(STEPS):
        params, state, loss = step(params, state)
print("jit: loss", float(loss), "w sharding", params["w"].sharding.spec)
# --8<-- [end:jit]

# --8<-- [start:shard_map]
# The explicit path: the update runs per shard under jax.shard_map; tensor-level
# statistics (RMS normalisers, the non-finite check) are reduced with collectives,
# so each shard computes what a single device would.
update = jax.jit(mnemosyne.sharded_update(lopt, mesh, param_specs))
memory = lopt.init(params)
grads = jax.jit(jax.grad(loss_fn))(params)
sharded_updates, memory = update(grads, memory, params)

# Same numbers as the single-device update:
host_grads, host_params = jax.device_get((grads, params))
single_updates, _ = eqx.filter_jit(lopt.update)(host_grads, lopt.init(host_params), host_params)
for name in params:
    np.testing.assert_allclose(sharded_updates[name], single_updates[name], rtol=1e-5, atol=1e-8)
print("shard_map update == single-device update")
# --8<-- [end:shard_map]
