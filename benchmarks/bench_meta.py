"""Meta-training cost: one outer step of the default preset, and compile time."""

import os

from ._common import make_meta_trainer


class OuterStep:
    """Wall time of one meta-training outer step (compile excluded: `setup`
    takes the first step) of the `default` meta-training preset."""

    timeout = 1200
    number = 1
    repeat = (1, 3, 60.0)
    small = False

    def setup(self):
        self.trainer = make_meta_trainer(small=self.small)
        self.trainer.run(self.trainer.step + 1, resume=False, progress=False)

    def time_outer_step(self):
        self.trainer.run(self.trainer.step + 1, resume=False, progress=False)


class CompileUpdate:
    """Compile time (lower + compile, fresh interpreter, imports and array
    construction excluded) of the coordinate-wise Mnemosyne update+apply at 1e6
    parameters."""

    timeout = 900
    number = 1
    repeat = (1, 2, 60.0)
    num_params = 10**6

    def timeraw_compile_update(self):
        setup = f"""
import jax, optax, mnemosyne
import sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import _common as c
tx = c.make_optimizer("mnemosyne")
params = c.make_params({self.num_params})
grads = c.make_grads(params)
state = tx.init(params)
step = c.make_update_step(tx)
"""
        stmt = "step.lower(params, grads, state).compile()"
        return stmt, setup
