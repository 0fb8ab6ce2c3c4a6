"""Saving and loading θ: one self-describing file, written atomically.

File layout: a magic line, one line of JSON header (format version, class,
constructor config, payload size and SHA-256), then the payload written by
`equinox.tree_serialise_leaves`. `load` rebuilds the module from the header, so
it needs no skeleton, and refuses anything it cannot load exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import tempfile

import equinox as eqx
import jax

MAGIC = b"MNEMOSYNE-WEIGHTS\n"
_CHECKPOINT_MAGIC = b"MNEMOCKP"  # meta-training checkpoints (meta/_checkpoint.py)
FORMAT_VERSION = 1
WEIGHTS_DIR = pathlib.Path(__file__).parent / "weights"

_CLASSES: dict[str, type] = {}


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

    return tuple(sorted((k, freeze(v)) for k, v in config.items() if k not in ("key", "self")))


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
    """Save a learned optimizer (θ and its configuration) to `path`, atomically."""
    name = type(lopt).__name__
    if name not in _CLASSES:
        raise TypeError(f"cannot save a {name}: not a registered learned optimizer")
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, lopt)
    payload = buffer.getvalue()
    header = {
        "format_version": FORMAT_VERSION,
        "class": name,
        "config": {k: v for k, v in lopt.config},
        "payload_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    atomic_write_bytes(path, MAGIC + json.dumps(header).encode() + b"\n" + payload)


def _thaw(v):
    return tuple(_thaw(x) for x in v) if isinstance(v, list) else v


def load(path) -> eqx.Module:
    """Load a learned optimizer saved with [`mnemosyne.save`][].

    Raises:
        FileNotFoundError: no such file.
        WeightsFileError: not a Mnemosyne weights file (e.g. a meta-training
            checkpoint), a newer format version, a truncated or corrupted file,
            a configuration this version cannot build, or a payload that does not
            match the configuration in its header. The message says which.
    """
    path = pathlib.Path(path)
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        if data.startswith(_CHECKPOINT_MAGIC):
            raise WeightsFileError(
                f"{path} is a meta-training checkpoint, not a weights file: resume it "
                "with MetaTrainer(..., checkpoint_dir=...).run(), or save its optimizer "
                "with mnemosyne.save(path, trainer.lopt)"
            )
        raise WeightsFileError(f"{path} is not a Mnemosyne weights file (bad magic bytes)")
    header_line, sep, payload = data[len(MAGIC):].partition(b"\n")
    try:
        header = json.loads(header_line) if sep else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise WeightsFileError(f"{path}: the header is truncated or corrupted")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise WeightsFileError(f"{path}: the header is corrupted (format version {version!r})")
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
            f"{path} is corrupted: {len(payload)} payload bytes, the header says {expected}"
        )
    if len(payload) < expected:
        raise WeightsFileError(f"{path} is truncated: {len(payload)} of {expected} payload bytes")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise WeightsFileError(f"{path} is corrupted: checksum mismatch")
    cls = _CLASSES.get(header.get("class"))
    if cls is None:
        raise WeightsFileError(f"{path}: unknown optimizer class {header.get('class')!r}")
    config = header.get("config")
    if not isinstance(config, dict):
        raise WeightsFileError(f"{path}: the header has no optimizer configuration")
    config = {k: _thaw(v) for k, v in config.items()}
    try:
        skeleton = cls(**config, key=jax.random.key(0))
    except (TypeError, ValueError) as err:  # unknown, missing or invalid arguments
        raise WeightsFileError(
            f"{path}: its {cls.__name__} configuration cannot be built by this version "
            f"of mnemosyne ({err}); was it saved by another version?"
        ) from None
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(payload), skeleton)
    except Exception as err:  # shape/dtype mismatch between payload and config
        raise WeightsFileError(
            f"{path}: the weights do not match the configuration in the header ({err})"
        ) from None


def pretrained(name: str = "default") -> eqx.Module:
    """A shipped pretrained learned optimizer.

    `"default"` is the coordinate-wise Mnemosyne meta-trained by
    `mnemosyne meta-train --preset default`.
    """
    path = WEIGHTS_DIR / f"{name}.eqx"
    if not path.exists():
        available = sorted(p.stem for p in WEIGHTS_DIR.glob("*.eqx"))
        raise FileNotFoundError(
            f"no pretrained weights named {name!r} (available: {available}); "
            f"produce them with `mnemosyne meta-train --preset {name}`"
        )
    return load(path)
