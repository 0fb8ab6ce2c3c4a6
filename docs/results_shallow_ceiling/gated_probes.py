"""The gated shallow ceiling over the probes (session 33): every model of the
fifth to tenth probes with at most three matrices (the only ones Eq. (C) with
C = 8 reads differently), at its steps, seeds 0-1, Adam(1e-3), the reading
before session 33 and `step_shallow_ceiling=(8, 0.3)`.

    git show cc432c7:mnemosyne/weights/default.eqx > before.eqx
    python docs/results_shallow_ceiling/gated_probes.py before.eqx PART PARTS

runs the models whose index is PART modulo PARTS (two processes, PART 0 and
1, shared the work for `gated_probes.log`). `shipped` in its lines is the
reading of BEFORE (the weights file of session 32, which the shipped reading
of session 33 is with the shallow ceiling added); `c8_g0.3` is that θ with
`step_shallow_ceiling=(8, 0.3)`.
"""

import pathlib
import sys

import jax

import mnemosyne
from mnemosyne import _serialisation

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import shallow_ceiling  # noqa: E402


def main(before, part, parts):
    lopt = mnemosyne.load(before)
    # every `pretrained()` of this process (the `shipped` reading and the
    # base of the candidate) is the θ of the file given
    _serialisation.pretrained = mnemosyne.pretrained = lambda name="default": lopt
    count = lambda make: shallow_ceiling.num_matrices(make()[0](jax.random.key(0)))
    shallow = [(name, entry) for name, entry in shallow_ceiling.MODELS.items()
               if count(entry[0]) <= 3]
    for name, (make, steps) in shallow[part::parts]:
        matrices = count(make)
        opts = shallow_ceiling.optimizers(["adam", "shipped", "c8_g0.3"], matrices)
        shallow_ceiling.probe5.compare(f"{name:32s} L={matrices}", make, steps, opts,
                                       [0, 1], per_seed=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
