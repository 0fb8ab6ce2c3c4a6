"""Several processes, one program: JAX's multi-controller runtime, asked for
only when a command line or a caller wants it.

Every process runs the same Python program; `jax.devices()` then lists the
devices of all processes, a mesh may span them, and a jitted function over
global arrays runs as one SPMD program whose collectives cross processes
(over gloo on CPU). Nothing here runs at import time: a single-process
program never initialises the distributed runtime.

- [`initialize`][mnemosyne._distributed.initialize]: join the other
  processes (`jax.distributed.initialize`; JAX's automatic detection of SLURM,
  Cloud TPU, Open MPI and Kubernetes fills in what is not given);
- [`spread_devices`][mnemosyne._distributed.spread_devices]: `n` devices
  taken evenly from every process, for a mesh whose shards every process
  holds some of;
- [`put_global`][mnemosyne._distributed.put_global]: values that every
  process holds placed on such a mesh;
- [`gather_to_host`][mnemosyne._distributed.gather_to_host]: a pytree of
  global arrays as NumPy arrays on every process (a collective: every process
  calls it);
- [`is_main_process`][mnemosyne._distributed.is_main_process]: the one
  process that writes files and logs.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

# The environment variables a launcher may set instead of the command line's
# flags: JAX itself reads the first; the other two follow its naming.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    heartbeat_timeout_s: int | None = None,
    initialization_timeout_s: int | None = None,
) -> None:
    """Join the other processes of a multi-process run.

    Selects gloo for CPU collectives (which must happen before JAX starts its
    CPU backend; GPUs and TPUs have their own), then calls
    `jax.distributed.initialize`. Arguments left `None` are read from
    `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`, and
    what is still missing is left to JAX's automatic detection of the cluster
    (SLURM, Cloud TPU, Open MPI, Kubernetes).

    Args:
        coordinator_address: `host:port` of process 0's coordination service.
        num_processes: how many processes take part.
        process_id: this process's index, `0 <= process_id < num_processes`.
        heartbeat_timeout_s: seconds without a heartbeat after which the
            coordination service declares a process dead and the others stop
            with an error (JAX's default: 100).
        initialization_timeout_s: seconds to wait for every process to join
            (JAX's default: 300).
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    num_processes = _int_or_none(num_processes, ENV_NUM_PROCESSES)
    process_id = _int_or_none(process_id, ENV_PROCESS_ID)
    timeouts = {
        name: value
        for name, value in (
            ("heartbeat_timeout_seconds", heartbeat_timeout_s),
            ("initialization_timeout", initialization_timeout_s),
        )
        if value is not None
    }
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address, num_processes, process_id, **timeouts
    )


def _int_or_none(value: int | None, variable: str) -> int | None:
    if value is not None:
        return int(value)
    text = os.environ.get(variable)
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{variable}={text!r} is not an integer.") from None


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes checkpoints and logs."""
    return jax.process_index() == 0


def spread_devices(num_devices: int) -> list:
    """`num_devices` devices, the same number from every process (in process
    order, each process's in `jax.devices()` order): the devices of a 1-D mesh
    whose consecutive blocks of rows every process holds some of. With one
    process, `jax.devices()[:num_devices]`.

    Raises:
        ValueError: if `num_devices` is not a multiple of the process count
            or exceeds the devices there are.
    """
    num_processes = jax.process_count()
    devices = jax.devices()
    if num_devices % num_processes or num_devices > len(devices):
        raise ValueError(
            f"Cannot spread {num_devices} devices evenly over {num_processes} "
            f"processes holding {len(devices)} devices."
        )
    per_process = num_devices // num_processes
    return [
        device
        for process in range(num_processes)
        for device in [d for d in devices if d.process_index == process][
            :per_process
        ]
    ]


def put_global(tree: Any, sharding) -> Any:
    """`jax.device_put(tree, sharding)` for values that are the same on every
    process, with a sharding that may span processes.

    With several processes, an array already placed so is kept, and any other
    leaf is cut, on each process, from its own host copy
    (`jax.make_array_from_callback`): no cross-process equality check, which
    `jax.device_put` makes with an all-gather of every leaf. With one process,
    `jax.device_put` itself.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(
            host.shape, sharding, lambda index: host[index]
        )

    return jax.tree.map(put, tree)


def gather_to_host(tree: Any) -> Any:
    """The pytree with every array leaf a NumPy array holding its global value,
    on every process. Arrays split over other processes' devices are
    all-gathered (`multihost_utils.process_allgather`), so every process must
    call this at the same point of the program; other leaves are copied to
    the host or left as they are. With one process the tree is returned as
    it is."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    def to_host(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x) if isinstance(x, jax.Array) else x

    return jax.tree.map(to_host, tree)
