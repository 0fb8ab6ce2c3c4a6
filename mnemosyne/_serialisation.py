"""Saving and loading θ: one self-describing file, written atomically.

File layout: a magic line, one line of JSON header (format version, class,
constructor config, payload size and SHA-256), then the payload written by
`equinox.tree_serialise_leaves`. `load` rebuilds the module from the header, so
it needs no skeleton from the caller (it builds one of shapes and dtypes only,
with `eqx.filter_eval_shape`), and refuses anything it cannot load exactly.
θ keeps the dtype it was stored in, whatever `jax_enable_x64` says.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import json
import os
import pathlib
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

MAGIC = b"MNEMOSYNE-WEIGHTS\n"
_CHECKPOINT_MAGIC = b"MNEMOCKP"  # meta-training checkpoints (meta/_checkpoint.py)
FORMAT_VERSION = 1
WEIGHTS_DIR = pathlib.Path(__file__).parent / "weights"

_CLASSES: dict[str, type] = {}
# Where the shipped classes are defined: `load` imports the module on first use,
# so a weights file loads in a fresh process whatever was imported before. New
# files also name their class's module in the header (`"module"`).
_CLASS_MODULES = {
    "CoordinatewiseMnemosyne": "mnemosyne._lopt",
    "TensorwiseMnemosyne": "mnemosyne._lopt",
    "LSTMOptimizer": "mnemosyne.baselines._lstm",
}


class WeightsFileError(ValueError):
    """A weights file that cannot be loaded; the message says why."""


def register_serialisable(cls: type) -> type:
    """Let `save`/`load` handle instances of `cls` (a module whose constructor
    is `cls(**config, key=...)` and that stores `config` as a field)."""
    _CLASSES[cls.__name__] = cls
    return cls


def freeze_config(config: dict) -> tuple:
    """Constructor arguments as a hashable, JSON-friendly static field."""
    def freeze(v):
        return tuple(freeze(x) for x in v) if isinstance(v, (list, tuple)) else v

    return tuple(
        sorted((k, freeze(v)) for k, v in config.items() if k not in ("key", "self"))
    )


def atomic_write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically: a temporary file in the same folder,
    flushed and fsynced, then renamed over `path`."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(path, lopt: eqx.Module) -> None:
    """Save a learned optimizer (θ and its configuration) to `path`, atomically.

    The file is self-describing: a JSON header names the class, its
    constructor arguments and the payload's SHA-256, followed by θ as
    `eqx.tree_serialise_leaves` writes it, so [`mnemosyne.load`][] needs no
    template. It is written to a temporary file and moved into place: a reader
    never sees a partial file.

    Args:
        path: the file to write (conventionally `*.eqx`).
        lopt: a registered learned optimizer: `CoordinatewiseMnemosyne`,
            `TensorwiseMnemosyne` or `baselines.LSTMOptimizer`.

    Returns:
        `None`.

    Raises:
        TypeError: `lopt` is not a registered learned optimizer.

    Examples:
        >>> import os, tempfile, jax, mnemosyne
        >>> lopt = mnemosyne.CoordinatewiseMnemosyne(key=jax.random.key(0))
        >>> path = os.path.join(tempfile.mkdtemp(), "mine.eqx")
        >>> mnemosyne.save(path, lopt)
        >>> type(mnemosyne.load(path)).__name__
        'CoordinatewiseMnemosyne'

    References:
        Jain et al., "Mnemosyne: Learning to Train Transformers with
        Transformers", NeurIPS 2023 (the optimizer whose θ is saved).
    """
    name = type(lopt).__name__
    if name not in _CLASSES:
        raise TypeError(f"cannot save a {name}: not a registered learned optimizer")
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, lopt)
    payload = buffer.getvalue()
    header = {
        "format_version": FORMAT_VERSION,
        "class": name,
        "module": type(lopt).__module__,
        "config": {k: v for k, v in lopt.config},
        "payload_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    atomic_write_bytes(path, MAGIC + json.dumps(header).encode() + b"\n" + payload)


def _thaw(v):
    return tuple(_thaw(x) for x in v) if isinstance(v, list) else v


def _resolve_class(header: dict) -> type | None:
    """The registered class a header names, importing the module that defines it
    (only modules of this package) if it is not registered yet."""
    name = header.get("class")
    if not isinstance(name, str):
        return None
    if name not in _CLASSES:
        modules = [header.get("module"), _CLASS_MODULES.get(name)]
        for module in modules:
            ours = isinstance(module, str) and module.split(".")[0] == __package__
            if ours:
                try:
                    importlib.import_module(module)
                except ImportError:
                    continue
                if name in _CLASSES:
                    break
    return _CLASSES.get(name)


def _skeleton(cls, config: dict):
    """A module of this configuration to read the payload into: built with
    `eqx.filter_eval_shape` (shapes and dtypes only, no random initialisation
    computed: seconds saved on every cold start), or, for a class whose
    constructor needs concrete values (e.g. edits its draws in NumPy), built
    for real."""
    build = functools.partial(cls, **config, key=jax.random.key(0))
    try:
        return eqx.filter_eval_shape(build)
    except Exception:  # noqa: BLE001 -- building it for real raises the real error, if any
        return build()


def reconfigure(lopt: eqx.Module, **changes) -> eqx.Module:
    """The same θ, every array of it (random features included), in a module
    built with `changes` to its constructor settings: for settings that change
    how θ is read, not its shapes, such as `step_scale_range` (the preset
    `default` ships its meta-trained θ this way, `Preset.read_with`).

    Raises:
        ValueError: a setting the module's constructor does not take, or one
            that changes θ's leaves (their number or shapes).
    """
    config = dict(lopt.config)
    unknown = sorted(set(changes) - set(config))
    if unknown:
        raise ValueError(f"{type(lopt).__name__} has no setting {', '.join(unknown)}")
    skeleton = _skeleton(type(lopt), {**config, **changes})
    leaves = jax.tree.leaves(lopt)
    likes, treedef = jax.tree.flatten(skeleton)
    same = len(likes) == len(leaves) and all(
        np.shape(a) == np.shape(b) for a, b in zip(likes, leaves, strict=False)
    )
    if not same:
        raise ValueError(
            f"reconfigure: {changes} changes the shapes of θ; only settings that "
            "leave θ's arrays as they are can be changed after meta-training"
        )
    return jax.tree.unflatten(treedef, leaves)


def _read_leaf(f, like):
    """One leaf of the payload, in the dtype it was stored in.

    The skeleton comes from `eqx.filter_eval_shape`, so its dtypes follow the
    current `jax_enable_x64` flag; θ must not: only the shape and the kind of
    number (floating, integer, ...) are checked against it. (A float64 file
    read with x64 off becomes float32, as any JAX array does.)"""
    if not isinstance(like, (jax.Array, jax.ShapeDtypeStruct)):
        return eqx.default_deserialise_filter_spec(f, like)
    value = np.load(f, allow_pickle=False)
    if value.shape != like.shape:
        raise ValueError(
            f"shape {value.shape} on disk, {like.shape} in the configuration"
        )
    if value.dtype.kind != np.dtype(like.dtype).kind:
        raise ValueError(
            f"dtype {value.dtype} on disk, {like.dtype} in the configuration"
        )
    return jnp.asarray(value)


def _deserialise(payload: bytes, skeleton):
    """`eqx.tree_deserialise_leaves` (same leaf order), keeping stored dtypes,
    and refusing a payload with bytes left over."""
    f = io.BytesIO(payload)
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(skeleton)
    leaves = []
    for key_path, like in paths_and_leaves:
        try:
            leaves.append(_read_leaf(f, like))
        except Exception as err:
            raise ValueError(f"at {jax.tree_util.keystr(key_path)}: {err}") from None
    if f.read(1):
        raise ValueError("the payload has more leaves than the configuration")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def load(path) -> eqx.Module:
    """Load a learned optimizer saved with [`mnemosyne.save`][].

    The class and its configuration come from the file's header (the module
    defining the class is imported if needed), so no template is passed; θ
    keeps the dtypes it was saved in.

    Args:
        path: a file written by [`mnemosyne.save`][].

    Returns:
        The learned optimizer, an `eqx.Module` (e.g. `CoordinatewiseMnemosyne`),
        ready for [`mnemosyne.mnemosyne`][]`(lopt=...)`.

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: not a Mnemosyne weights file (e.g. a meta-training
            checkpoint), a newer format version, a truncated or corrupted file,
            a configuration this version cannot build, or a payload that does not
            match the configuration in its header. The message says which.

    Examples:
        >>> import os, tempfile, jax, mnemosyne
        >>> lopt = mnemosyne.TensorwiseMnemosyne(key=jax.random.key(0))
        >>> path = os.path.join(tempfile.mkdtemp(), "mine.eqx")
        >>> mnemosyne.save(path, lopt)
        >>> loaded = mnemosyne.load(path)
        >>> bool((loaded.head.w1 == lopt.head.w1).all())
        True

    References:
        Jain et al., "Mnemosyne: Learning to Train Transformers with
        Transformers", NeurIPS 2023.
    """
    path = pathlib.Path(path)
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        if data.startswith(_CHECKPOINT_MAGIC):
            raise WeightsFileError(
                f"{path} is a meta-training checkpoint, not a weights file: resume it "
                "with MetaTrainer(..., checkpoint_dir=...).run(), or save its "
                "optimizer "
                "with mnemosyne.save(path, trainer.lopt)"
            )
        raise WeightsFileError(
            f"{path} is not a Mnemosyne weights file (bad magic bytes)"
        )
    header_line, sep, payload = data[len(MAGIC):].partition(b"\n")
    try:
        header = json.loads(header_line) if sep else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise WeightsFileError(f"{path}: the header is truncated or corrupted")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise WeightsFileError(
            f"{path}: the header is corrupted (format version {version!r})"
        )
    if version > FORMAT_VERSION:
        raise WeightsFileError(
            f"{path}: format version {version}, this mnemosyne reads version "
            f"{FORMAT_VERSION}; upgrade mnemosyne to load it"
        )
    if version != FORMAT_VERSION:  # no older format exists yet
        raise WeightsFileError(f"{path}: unsupported old format version {version}")
    expected = header.get("payload_bytes")
    if not isinstance(expected, int) or len(payload) > expected:
        raise WeightsFileError(
            f"{path} is corrupted: {len(payload)} payload bytes, the header says "
            f"{expected}"
        )
    if len(payload) < expected:
        raise WeightsFileError(
            f"{path} is truncated: {len(payload)} of {expected} payload bytes"
        )
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise WeightsFileError(f"{path} is corrupted: checksum mismatch")
    cls = _resolve_class(header)
    if cls is None:
        raise WeightsFileError(
            f"{path}: unknown optimizer class {header.get('class')!r}"
        )
    config = header.get("config")
    if not isinstance(config, dict):
        raise WeightsFileError(f"{path}: the header has no optimizer configuration")
    config = {k: _thaw(v) for k, v in config.items()}
    try:
        skeleton = _skeleton(cls, config)
    except (TypeError, ValueError) as err:  # unknown, missing or invalid arguments
        raise WeightsFileError(
            f"{path}: its {cls.__name__} configuration cannot be built by this version "
            f"of mnemosyne ({err}); was it saved by another version?"
        ) from None
    try:
        return _deserialise(payload, skeleton)
    except Exception as err:  # shape/dtype mismatch between payload and config
        raise WeightsFileError(
            f"{path}: the weights do not match the configuration in the header ({err})"
        ) from None


def pretrained(name: str = "default") -> eqx.Module:
    """A shipped pretrained learned optimizer.

    Five names are shipped (each `mnemosyne/weights/<name>.eqx`, with a
    `<name>.eqx.json` record of how it was trained: preset, command, steps,
    wall time, machine):

    - `"default"`: the coordinate-wise Mnemosyne
      ([`CoordinatewiseMnemosyne`][mnemosyne.CoordinatewiseMnemosyne])
      meta-trained by `mnemosyne meta-train --preset default`; what
      [`mnemosyne.mnemosyne`][]`()` uses.
    - `"lstm_v2"`: the 2016 LSTM optimizer
      ([`LSTMOptimizer`][mnemosyne.baselines.LSTMOptimizer],
      `features="gradient"`), meta-trained with the default's recipe and
      budget (`--preset lstm_v2`); what [`mnemosyne.baselines.lstm`][]`()` uses.
    - `"lstm_multiscale_v2"`: the feature-engineered LSTM
      (`features="multiscale"`, `--preset lstm_multiscale_v2`);
      `mnemosyne.baselines.lstm(variant="multiscale")`.
    - `"lstm"`, `"lstm_multiscale"`: the same two LSTMs meta-trained with the
      first (v1) recipe (`--preset lstm`, `--preset lstm_multiscale`);
      `mnemosyne.baselines.lstm(recipe="v1")`.

    The file is read once per process (modules are immutable, so every call
    returns the same module), and again only if it changes on disk; so
    `optax.inject_hyperparams(mnemosyne.mnemosyne)`, which calls the factory on
    every step, does not re-read it.

    Args:
        name: `"default"`, `"lstm_v2"`, `"lstm_multiscale_v2"`, `"lstm"` or
            `"lstm_multiscale"`.

    Returns:
        The learned optimizer (an `eqx.Module` holding θ).

    Raises:
        FileNotFoundError: no shipped weights of that name (the message lists
            the available ones).

    Examples:
        >>> import mnemosyne
        >>> type(mnemosyne.pretrained("default")).__name__
        'CoordinatewiseMnemosyne'
        >>> mnemosyne.pretrained("lstm_v2").features
        'gradient'
        >>> mnemosyne.pretrained("lstm_multiscale").features
        'multiscale'
        >>> tx = mnemosyne.mnemosyne(lopt=mnemosyne.pretrained("default"))

    References:
        Jain et al., "Mnemosyne: Learning to Train Transformers with
        Transformers", NeurIPS 2023 (`"default"`). Andrychowicz et al.,
        "Learning to learn by gradient descent by gradient descent", NeurIPS
        2016 (the LSTMs).
    """
    path = WEIGHTS_DIR / f"{name}.eqx"
    try:
        stat = path.stat()
    except FileNotFoundError:
        available = sorted(p.stem for p in WEIGHTS_DIR.glob("*.eqx"))
        raise FileNotFoundError(
            f"no pretrained weights named {name!r} (available: {available}); "
            f"produce them with `mnemosyne meta-train --preset {name}`"
        ) from None
    return load_once(path, stat)


def load_once(path, stat: os.stat_result | None = None) -> eqx.Module:
    """`load(path)`, read once per process: the same module again while the
    file is unchanged on disk (same modification time and size)."""
    path = pathlib.Path(path)
    stat = path.stat() if stat is None else stat
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size,
                        bool(jax.config.jax_enable_x64))


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, size: int, x64: bool) -> eqx.Module:
    del (
        mtime_ns,
        size,
        x64,
    )  # cache keys only: a rewritten file or another x64 mode reloads
    return load(path)
