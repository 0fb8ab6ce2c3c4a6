"""The optimizer update alone: time, ratio to Adam, state size, bandwidth, memory."""

import jax.numpy as jnp

from ._common import (
    DTYPES,
    OPTIMIZERS,
    StreamKernel,
    UpdateRunner,
    bandwidth_fraction,
    interleaved_times,
    state_floats_per_param,
    update_ratio,
)

SIZES = [10**4, 10**5, 10**6, 10**7]
# (optimizer, size) combinations skipped: the LSTM optimizer keeps ~80 floats
# per parameter (3.2 GB at 1e7) and takes seconds per call there.
_SKIP = {("lstm", 10**7)}


class TimeUpdate:
    """One jitted update+apply (params and state donated) on a stack of 4
    transformer-like blocks (48 leaves, 5 shapes) of about `num_params` parameters."""

    params = [list(OPTIMIZERS), SIZES, list(DTYPES)]
    param_names = ["optimizer", "num_params", "dtype"]
    timeout = 600
    number = 1
    repeat = (1, 5, 20.0)

    def setup(self, optimizer, num_params, dtype):
        if (optimizer, num_params) in _SKIP:
            raise NotImplementedError("skipped: too slow / too much state at this size")
        self.runner = UpdateRunner(optimizer, num_params, DTYPES[dtype])

    def time_update(self, optimizer, num_params, dtype):
        self.runner()


class UpdateRatio:
    """Mnemosyne (coordinate-wise default) over Adam, measured interleaved in one
    process (the target: ≤ 3x, aim 2x, at ≥ 1e6 parameters)."""

    params = [[10**6, 10**7]]
    param_names = ["num_params"]
    timeout = 900
    number = 1
    repeat = 1
    unit = "x adam"

    def setup(self, num_params):
        self.result = update_ratio("mnemosyne", num_params)

    def track_update_ratio(self, num_params):
        return self.result["ratio"]

    track_update_ratio.unit = "x adam"


class StateFloats:
    """Optimizer-state floats per parameter (target ≤ 4; Adam 2)."""

    params = [list(OPTIMIZERS)]
    param_names = ["optimizer"]
    timeout = 300

    def track_state_floats_per_param(self, optimizer):
        return state_floats_per_param(optimizer, 10**5)

    track_state_floats_per_param.unit = "floats/param"


class BandwidthFraction:
    """Achieved memory bandwidth of one update over this machine's streaming
    bandwidth (`x <- a*x + b`, 5e7 float32s, measured in the same run).

    Bytes moved per parameter per step are counted as: read grads, params and
    state; write state and params (`|g| + 2|p| + 2|state|` bytes per parameter,
    at their real dtypes). 1.0 = as fast as a pure memory stream.
    """

    params = [["mnemosyne", "adam"], [10**6, 10**7]]
    param_names = ["optimizer", "num_params"]
    timeout = 600
    number = 1
    repeat = 1
    stream_size = 5 * 10**7

    def setup(self, optimizer, num_params):
        self.runner = UpdateRunner(optimizer, num_params)
        self.stream = StreamKernel(self.stream_size)

    def track_bandwidth_fraction(self, optimizer, num_params):
        times = interleaved_times({"update": self.runner, "stream": self.stream})
        bandwidth = self.stream.bytes_per_call() / times["stream"]
        return bandwidth_fraction(self.runner, times["update"], bandwidth)

    track_bandwidth_fraction.unit = "fraction of stream bandwidth"


class PeakMemory:
    """Host peak RSS of init + one update (asv's peakmem: the whole process)."""

    params = [["mnemosyne", "adam"], [10**6, 10**7]]
    param_names = ["optimizer", "num_params"]
    timeout = 600

    def peakmem_init_update(self, optimizer, num_params):
        UpdateRunner(optimizer, num_params, jnp.float32)

