"""What a user gets in a fresh Python process: the subpackages after a bare
`import mnemosyne`, every shipped weights file without importing anything
else first, and `jax_enable_x64` switched on before anything is loaded.

Each check runs in its own interpreter (`sys.executable -c ...`): what is
already imported or cached in the test process cannot hide the failure.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

from mnemosyne._serialisation import MAGIC, WEIGHTS_DIR

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.stem for p in WEIGHTS_DIR.glob("*.eqx"))


def run_fresh(code: str) -> str:
    """Run `code` in a fresh interpreter; its stdout (fails the test on an error)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow  # a fresh interpreter that trains: ~11 s, run by .ci/run
def test_subpackages_after_bare_import():
    """`import mnemosyne; mnemosyne.baselines.lstm()` as the README shows, and
    the same for `tasks`, `meta` and `evaluation`; the import itself loads none
    of them (they are imported on first use)."""
    out = run_fresh("""
        import sys
        import mnemosyne
        eager = sorted(m for m in ("baselines", "tasks", "meta", "evaluation")
                       if f"mnemosyne.{m}" in sys.modules)
        print("eager", eager)
        assert {"baselines", "tasks", "meta", "evaluation"} <= set(dir(mnemosyne))
        tx = mnemosyne.baselines.lstm()
        assert callable(tx.update)
        assert "mlp_digits" in mnemosyne.tasks.list_tasks()
        assert mnemosyne.meta.MetaTrainer.__name__ == "MetaTrainer"
        assert callable(mnemosyne.evaluation.evaluate)
        import mnemosyne.baselines
        assert mnemosyne.baselines is sys.modules["mnemosyne.baselines"]
        try:
            mnemosyne.no_such_thing
        except AttributeError as err:
            assert "no_such_thing" in str(err)
        else:
            raise AssertionError("no AttributeError")
    """)
    assert "eager []" in out


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_weights_file_loads_first(name):
    """`mnemosyne.pretrained(name)` as the first call of a fresh process, for
    every shipped file: the class is found by name, whatever was imported."""
    header = json.loads(
        (WEIGHTS_DIR / f"{name}.eqx").read_bytes()[len(MAGIC) :].split(b"\n")[0]
    )
    out = run_fresh(f"""
        import mnemosyne
        lopt = mnemosyne.pretrained({name!r})
        print(type(lopt).__name__)
    """)
    assert out.split() == [header["class"]]


@pytest.mark.slow  # a fresh interpreter under x64: ~10 s, run by .ci/run
def test_float64_parameters_with_x64():
    """With `jax_enable_x64` on before anything is loaded, the pretrained
    optimizers load (θ in its stored dtype, bit for bit the file's values), and
    `init`/`update` under `jit` on float64 parameters give float64 updates, a
    state of the same structure, shapes and dtypes as `init`'s, and (Mnemosyne)
    the float64 NumPy reference's step."""
    out = run_fresh(
        """
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp, numpy as np, mnemosyne

        lopt = mnemosyne.pretrained("default")
        dtypes = {str(x.dtype) for x in jax.tree.leaves(lopt)}
        assert dtypes == {"float32"}, dtypes
        params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.full(3, 0.5)}
        grads = jax.tree.map(lambda p: 0.3 * p + 0.1, params)
        assert all(p.dtype == jnp.float64 for p in jax.tree.leaves(params))
        for tx in (mnemosyne.mnemosyne(), mnemosyne.baselines.lstm()):
            state = jax.jit(tx.init)(params)
            updates, new_state = jax.jit(tx.update)(grads, state, params)
            for u in jax.tree.leaves(updates):
                assert u.dtype == jnp.float64 and bool(jnp.all(jnp.isfinite(u)))
            assert jax.tree.structure(new_state) == jax.tree.structure(state)
            for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new_state)):
                assert (a.shape, a.dtype) == (b.shape, b.dtype), (a, b)
        reference = mnemosyne.mnemosyne(backend="numpy")
        expected, _ = reference.update(grads, reference.init(params), params)
        got, _ = jax.jit(mnemosyne.mnemosyne().update)(grads,
        mnemosyne.mnemosyne().init(params), params)
        for name in params:
            np.testing.assert_allclose(np.asarray(got[name]), expected[name],
            rtol=1e-6, atol=1e-12)
        theta = np.concatenate([np.ravel(x) for x in jax.tree.leaves(lopt)])
        print(json.dumps(theta.astype(np.float64).tolist()))
    """.replace("import jax.numpy", "import json, jax.numpy")
    )
    import jax
    import numpy as np

    import mnemosyne

    with_x64 = np.asarray(json.loads(out.strip().splitlines()[-1]), np.float32)
    without = np.concatenate(
        [np.ravel(x) for x in jax.tree.leaves(mnemosyne.pretrained("default"))]
    )
    np.testing.assert_array_equal(with_x64, without)
