"""Type aliases shared across the package.

Shape names used in jaxtyping annotations (one vocabulary for the whole package):

- ``n``: number of coordinates of one parameter tensor (its flattened size);
- ``features``: per-coordinate input features (``F``);
- ``heads``: memory heads (``H``); ``r``: random features per head;
- ``d_k``: query/key width; ``d_v``: value width; ``d_model``: token width (``N``
  in the paper's Figure 1);
- ``chunks``, ``chunk_len``: the chunked layout of the hierarchical encoder.
"""

from typing import Any

import jax

Params = Any  # a pytree of arrays
Updates = Any
OptState = Any
PRNGKeyArray = jax.Array
