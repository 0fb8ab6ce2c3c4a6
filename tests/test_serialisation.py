"""Saving and loading θ: round trips, refusals with clear errors, atomic writes."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import LOPTS, assert_tree_equal, jit_tx_update, random_like, ranked_params

import mnemosyne
from mnemosyne import _serialisation

NAMES = sorted(LOPTS)
MAGIC = b"MNEMOSYNE-WEIGHTS\n"


def _perturbed(name):
    """The optimizer with every θ leaf moved off its initial value (so a load that
    silently rebuilt the initial module from the config would be caught)."""
    lopt = LOPTS[name]()
    leaves, treedef = jax.tree.flatten(lopt)
    rng = np.random.default_rng(0)
    leaves = [
        x + jnp.asarray(0.01 * rng.standard_normal(x.shape), x.dtype) for x in leaves
    ]
    return jax.tree.unflatten(treedef, leaves)


def _split(data: bytes):
    assert data.startswith(MAGIC)
    header, _, payload = data[len(MAGIC):].partition(b"\n")
    return json.loads(header), payload


def _join(header: dict, payload: bytes) -> bytes:
    return MAGIC + json.dumps(header).encode() + b"\n" + payload


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name, tmp_path):
    lopt = _perturbed(name)
    path = tmp_path / "weights.eqx"
    mnemosyne.save(path, lopt)
    loaded = mnemosyne.load(path)
    assert type(loaded) is type(lopt)
    assert loaded.config == lopt.config
    assert jax.tree.structure(loaded) == jax.tree.structure(lopt)
    assert_tree_equal(jax.tree.leaves(loaded), jax.tree.leaves(lopt))
    # identical updates (NumPy reference backend: no compile needed)
    params = ranked_params(jnp.float32, seed=3)
    grads = random_like({k: v for k, v in params.items() if v is not None}, seed=4)
    grads["none"] = None
    outputs = []
    for opt in (lopt, loaded):
        u, s = opt.update(grads, opt.init(params), params, backend="numpy")
        outputs.append((u, s.memory))
    assert_tree_equal(outputs[0], outputs[1])


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "weights.eqx"
    mnemosyne.save(path, LOPTS["coordinatewise"]())
    return path


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[:-10])
    with pytest.raises(mnemosyne.WeightsFileError, match="truncated"):
        mnemosyne.load(saved)
    saved.write_bytes(data[: len(MAGIC) + 5])  # cut inside the header
    with pytest.raises(mnemosyne.WeightsFileError, match="header is truncated"):
        mnemosyne.load(saved)


def test_not_a_weights_file(tmp_path):
    path = tmp_path / "model.npz"
    np.savez(path, a=np.ones(3))
    with pytest.raises(
        mnemosyne.WeightsFileError, match="not a Mnemosyne weights file"
    ):
        mnemosyne.load(path)
    empty = tmp_path / "empty.eqx"
    empty.write_bytes(b"")
    with pytest.raises(
        mnemosyne.WeightsFileError, match="not a Mnemosyne weights file"
    ):
        mnemosyne.load(empty)
    with pytest.raises(FileNotFoundError):
        mnemosyne.load(tmp_path / "missing.eqx")


def test_future_format_version(saved):
    header, payload = _split(saved.read_bytes())
    header["format_version"] = _serialisation.FORMAT_VERSION + 1
    saved.write_bytes(_join(header, payload))
    with pytest.raises(mnemosyne.WeightsFileError, match=r"format version 2.*upgrade"):
        mnemosyne.load(saved)


def test_corrupted_payload(saved):
    data = bytearray(saved.read_bytes())
    data[-7] ^= 0x01  # flip one bit of the payload
    saved.write_bytes(bytes(data))
    with pytest.raises(mnemosyne.WeightsFileError, match="checksum"):
        mnemosyne.load(saved)


def test_payload_does_not_match_config(saved):
    header, payload = _split(saved.read_bytes())
    header["config"]["d_model"] = (
        2 * header["config"]["d_model"]
    )  # checksum still valid
    saved.write_bytes(_join(header, payload))
    with pytest.raises(
        mnemosyne.WeightsFileError, match="do not match the configuration"
    ):
        mnemosyne.load(saved)


def test_unknown_class(saved):
    header, payload = _split(saved.read_bytes())
    header["class"] = "SomethingElse"
    saved.write_bytes(_join(header, payload))
    with pytest.raises(mnemosyne.WeightsFileError, match="unknown optimizer class"):
        mnemosyne.load(saved)


def test_unregistered_module_is_refused(tmp_path):
    with pytest.raises(TypeError, match="not a registered"):
        mnemosyne.save(tmp_path / "x.eqx", mnemosyne.Frozen(jnp.ones(2)))


@pytest.mark.parametrize("existing", [False, True])
def test_save_is_atomic(tmp_path, monkeypatch, existing):
    """A failure at the final rename leaves no file (or the old file, untouched)
    at the destination and no temporary files behind."""
    path = tmp_path / "weights.eqx"
    if existing:
        path.write_bytes(b"old contents")

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        mnemosyne.save(path, LOPTS["coordinatewise"]())
    monkeypatch.undo()
    if existing:
        assert path.read_bytes() == b"old contents"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.eqx"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_save_overwrites_and_creates_folders(tmp_path):
    path = tmp_path / "nested" / "dir" / "weights.eqx"
    mnemosyne.save(path, LOPTS["coordinatewise"]())
    first = path.read_bytes()
    mnemosyne.save(path, _perturbed("coordinatewise"))
    assert path.read_bytes() != first
    assert sorted(p.name for p in path.parent.iterdir()) == ["weights.eqx"]


def test_pretrained_missing_name():
    with pytest.raises(FileNotFoundError, match="no pretrained weights named"):
        mnemosyne.pretrained("definitely-not-shipped")


def test_unknown_class_imports_nothing_outside_the_package(saved):
    """A header's `module` entry is imported only if it is part of mnemosyne."""
    import sys

    header, payload = _split(saved.read_bytes())
    header["class"], header["module"] = "SomethingElse", "antigravity"
    saved.write_bytes(_join(header, payload))
    with pytest.raises(mnemosyne.WeightsFileError, match="unknown optimizer class"):
        mnemosyne.load(saved)
    assert "antigravity" not in sys.modules


def test_load_computes_no_initialisation(saved, monkeypatch):
    """`load` reads θ into a skeleton of shapes and dtypes (`eqx.filter_eval_shape`):
    the constructor's random draws (orthogonal projections, QR) are traced, never
    computed, which took seconds of every cold start."""
    concrete = []
    normal = jax.random.normal

    def watched(key, *args, **kwargs):
        if not isinstance(key, jax.core.Tracer):
            concrete.append(kwargs.get("shape", args[0] if args else None))
        return normal(key, *args, **kwargs)

    monkeypatch.setattr(jax.random, "normal", watched)
    loaded = mnemosyne.load(saved)
    assert concrete == []
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(loaded))


def test_pretrained_is_read_once(monkeypatch):
    """`pretrained(name)` returns the same module without reading the file again,
    so `optax.inject_hyperparams(mnemosyne.mnemosyne)`, which calls the factory
    on every eager `init`/`update`, does not re-read it."""
    import optax

    reads = []
    load = _serialisation.load
    monkeypatch.setattr(
        _serialisation, "load", lambda path: reads.append(path) or load(path)
    )
    first = mnemosyne.pretrained("default")
    assert mnemosyne.pretrained("default") is first
    tx = optax.inject_hyperparams(mnemosyne.mnemosyne)(learning_rate=0.5)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for _ in range(3):
        _, state = tx.update(params, state, params)
    assert len(reads) <= 1  # at most once (a test before may have read it already)


def test_pretrained_rereads_a_changed_file(tmp_path, monkeypatch):
    monkeypatch.setattr(_serialisation, "WEIGHTS_DIR", tmp_path)
    path = tmp_path / "mine.eqx"
    mnemosyne.save(path, LOPTS["coordinatewise"]())
    first = mnemosyne.pretrained("mine")
    assert mnemosyne.pretrained("mine") is first
    mnemosyne.save(path, _perturbed("coordinatewise"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = mnemosyne.pretrained("mine")
    assert second is not first
    assert_tree_equal(
        jax.tree.leaves(second), jax.tree.leaves(_perturbed("coordinatewise"))
    )


def test_reconfigure_keeps_theta_and_changes_how_it_is_read(tmp_path):
    lopt = mnemosyne.CoordinatewiseMnemosyne(
        step_adaptation=0.01, step_scale_range=(0.25, 2.0), key=jax.random.key(3)
    )
    wider = mnemosyne.reconfigure(lopt, step_scale_range=(1 / 64, 2.0))
    assert wider.step_scale_range == (1 / 64, 2.0)
    assert dict(wider.config)["step_scale_range"] == (1 / 64, 2.0)
    assert_tree_equal(jax.tree.leaves(wider), jax.tree.leaves(lopt))  # ω too
    # the same as a module built with that range holding this θ's arrays
    built = mnemosyne.CoordinatewiseMnemosyne(
        step_adaptation=0.01, step_scale_range=(1 / 64, 2.0), key=jax.random.key(3)
    )
    assert jax.tree.structure(built) == jax.tree.structure(wider)
    # and it survives a save and load
    mnemosyne.save(tmp_path / "w.eqx", wider)
    assert mnemosyne.load(tmp_path / "w.eqx").step_scale_range == (1 / 64, 2.0)
    # a multiplier far below 1/4 is now reachable: the update differs only there
    params = ranked_params()
    grads = random_like(params, 0)
    state = wider.init(params)
    state = state._replace(
        step_scale=jax.tree.map(lambda r: r + np.log(1 / 32), state.step_scale)
    )
    narrow_state = state._replace(
        step_scale=jax.tree.map(lambda r: jnp.maximum(r, np.log(0.25)),
                                state.step_scale)
    )
    u_wide, s_wide = jit_tx_update(wider, grads, state, params)
    u_narrow, s_narrow = jit_tx_update(lopt, grads, narrow_state, params)
    for r in jax.tree.leaves(s_wide.step_scale):
        assert float(r) < np.log(0.25) - 1.0
    for r in jax.tree.leaves(s_narrow.step_scale):
        assert float(r) >= np.log(0.25) - 1e-6
    ratio = [float(jnp.linalg.norm(a) / jnp.linalg.norm(b))
             for a, b in zip(jax.tree.leaves(u_wide), jax.tree.leaves(u_narrow),
                             strict=True)]
    np.testing.assert_allclose(ratio, 1 / 8, rtol=0.05)  # e^{rho}: 1/32 vs 1/4


def test_reconfigure_refuses_what_changes_theta():
    lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0))
    with pytest.raises(ValueError, match="changes the shapes of θ"):
        mnemosyne.reconfigure(lopt, num_heads=dict(lopt.config)["num_heads"] + 1)
    with pytest.raises(ValueError, match="has no setting colour"):
        mnemosyne.reconfigure(lopt, colour="red")
