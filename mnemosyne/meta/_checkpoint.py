"""Atomic, verifiable checkpoints: `eqx.tree_serialise_leaves` plus a JSON header.

File layout (all integers little-endian)::

    b"MNEMOCKP"  |  payload (eqx.tree_serialise_leaves)  |  header JSON  |
    uint64 header length  |  b"MNEMOEND"

The header records the payload's length and SHA-256, so a truncated or
corrupted file is detected before any leaf is read. Files are written to a
temporary file in the destination directory, flushed and fsynced, then moved
into place with `os.replace`: a reader sees the old file or the complete new
one, never a partial file under the final name.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import re
import struct
import tempfile
import types
from typing import Any

import equinox as eqx
import jax
import numpy as np

_MAGIC = b"MNEMOCKP"
_END = b"MNEMOEND"
_LEN = struct.Struct("<Q")
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or incompatible."""


class IncompatibleCheckpointError(CheckpointError):
    """A complete checkpoint written by a differently configured trainer."""


class _HashingWriter(io.RawIOBase):
    """Forwards writes to a file while hashing and counting the bytes."""

    def __init__(self, f):
        self._f = f
        self.sha256 = hashlib.sha256()
        self.num_bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        b = bytes(b)
        self._f.write(b)
        self.sha256.update(b)
        self.num_bytes += len(b)
        return len(b)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, tree: Any, header: dict) -> None:
    """Write `tree` (a pytree of arrays) and a JSON-able `header` atomically.

    Args:
        path: the destination file; its directory must exist.
        tree: the pytree, serialised with `eqx.tree_serialise_leaves`.
        header: JSON-serialisable metadata (e.g. outer step, history).

    Raises:
        Whatever the serialiser or the file system raises; no file is then
        left under `path` (an existing one is untouched) and the temporary
        file is removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC)
            writer = _HashingWriter(f)
            eqx.tree_serialise_leaves(writer, tree)
            full_header = {
                "format_version": FORMAT_VERSION,
                "payload_bytes": writer.num_bytes,
                "payload_sha256": writer.sha256.hexdigest(),
                **header,
            }
            encoded = json.dumps(full_header).encode("utf-8")
            f.write(encoded)
            f.write(_LEN.pack(len(encoded)))
            f.write(_END)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)


def _split(path: str) -> tuple[dict, bytes]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"Cannot read checkpoint {path!r}: {e}") from e
    tail = _LEN.size + len(_END)
    if len(data) < len(_MAGIC) + tail or not data.startswith(_MAGIC):
        raise CheckpointError(f"{path!r} is not a mnemosyne checkpoint (bad magic).")
    if not data.endswith(_END):
        raise CheckpointError(f"Checkpoint {path!r} is truncated (no end marker).")
    (header_len,) = _LEN.unpack(data[-tail : -len(_END)])
    header_start = len(data) - tail - header_len
    if header_start < len(_MAGIC):
        raise CheckpointError(f"Checkpoint {path!r} is corrupted (header length).")
    try:
        header = json.loads(data[header_start : len(data) - tail].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"Checkpoint {path!r} has a corrupted header.") from e
    payload = data[len(_MAGIC) : header_start]
    if header.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {path!r} has format version "
            f"{header.get('format_version')}, expected {FORMAT_VERSION}."
        )
    if len(payload) != header.get("payload_bytes"):
        raise CheckpointError(f"Checkpoint {path!r} is truncated (payload length).")
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise CheckpointError(f"Checkpoint {path!r} is corrupted (checksum mismatch).")
    return header, payload


def read_checkpoint_header(path: str | os.PathLike) -> dict:
    """The verified JSON header of a checkpoint (checks magic, length, SHA-256).

    Raises:
        CheckpointError: if the file is truncated, corrupted or not a checkpoint.
    """
    header, _ = _split(os.fspath(path))
    return header


def load_checkpoint(path: str | os.PathLike, like: Any) -> tuple[Any, dict]:
    """Read a checkpoint written by [`save_checkpoint`][mnemosyne.meta.save_checkpoint].

    Args:
        path: the checkpoint file.
        like: a pytree with the structure, shapes and dtypes of the saved one
            (as `eqx.tree_deserialise_leaves` requires).

    Returns:
        `(tree, header)`.

    Raises:
        CheckpointError: if the file is truncated, corrupted, not a checkpoint,
            or does not match `like`.
    """
    header, payload = _split(os.fspath(path))
    try:
        tree = eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as e:  # shape/dtype/structure mismatch
        raise CheckpointError(
            f"Checkpoint {os.fspath(path)!r} does not match the expected structure: {e}"
        ) from e
    return tree, header


# --------------------------------------------------------------------------- #
# Settings fingerprints: what a resumed run must share with the run it resumes
# --------------------------------------------------------------------------- #

_MAX_DEPTH = 12


def describe_settings(obj: Any) -> Any:
    """A JSON-able description of `obj` that differs whenever a setting in it does.

    Generic, so that new estimators, outer optimizers, schedules and task
    families are covered without being listed anywhere:

    - dataclasses and Equinox modules: their class and every field (static or
      not), by name;
    - functions (optax transformations are pairs of closures): their qualified
      name and the values they close over, by name (an optax optimizer's
      hyperparameters live there), and `functools.partial` arguments;
    - arrays: shape, dtype and a SHA-256 of the values (`jax.ShapeDtypeStruct`:
      shape and dtype only); numbers, strings, `None` as themselves (non-finite
      floats as strings, so the description survives JSON);
    - other objects: their class and their attributes (`vars`), or their `repr`
      when it holds no memory address.

    Nothing identity-based enters (no `id`, no addresses), so the same settings
    give the same description in another process.
    """
    return _describe(obj, 0, set())


def _qualname(x) -> str:
    qualname = getattr(x, "__qualname__", type(x).__name__)
    return f"{getattr(x, '__module__', '?')}.{qualname}"


def _describe(obj: Any, depth: int, active: set) -> Any:
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, (np.generic,)) and obj.shape == ():
        return _describe(obj.item(), depth, active)
    if isinstance(obj, jax.ShapeDtypeStruct):
        return {"shape": list(obj.shape), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.ndarray, jax.Array)):
        if isinstance(obj, jax.Array) and jax.dtypes.issubdtype(
            obj.dtype, jax.dtypes.prng_key
        ):
            obj = jax.random.key_data(obj)
        if isinstance(obj, jax.core.Tracer):
            return {"shape": list(obj.shape), "dtype": str(obj.dtype)}
        value = np.ascontiguousarray(np.asarray(obj))
        return {"shape": list(value.shape), "dtype": str(value.dtype),
                "sha256": hashlib.sha256(value.tobytes()).hexdigest()}
    if isinstance(obj, (type, types.ModuleType)):
        return _qualname(obj) if isinstance(obj, type) else obj.__name__
    if depth >= _MAX_DEPTH or id(obj) in active:
        return _qualname(type(obj))
    active = active | {id(obj)}
    rec = functools.partial(_describe, depth=depth + 1, active=active)
    if isinstance(obj, (list, tuple)):
        items = [rec(x) for x in obj]
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple
            return {
                "class": _qualname(type(obj)),
                **dict(zip(obj._fields, items, strict=False)),
            }
        return items
    if isinstance(obj, (set, frozenset)):
        return sorted(
            (rec(x) for x in obj), key=lambda d: json.dumps(d, sort_keys=True)
        )
    if isinstance(obj, dict):
        return {
            str(k): rec(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))
        }
    if dataclasses.is_dataclass(obj):  # includes Equinox modules
        fields = {
            f.name: rec(getattr(obj, f.name, None)) for f in dataclasses.fields(obj)
        }
        return {"class": _qualname(type(obj)), **fields}
    if isinstance(obj, functools.partial):
        return {"class": _qualname(type(obj)), "func": rec(obj.func),
                "args": rec(list(obj.args)), "keywords": rec(dict(obj.keywords))}
    if isinstance(obj, types.MethodType):
        return {"method": obj.__func__.__qualname__, "self": rec(obj.__self__)}
    if isinstance(obj, types.FunctionType):
        out: dict = {"function": _qualname(obj)}
        if obj.__closure__:
            cells = {}
            for name, cell in zip(
                obj.__code__.co_freevars, obj.__closure__, strict=False
            ):
                try:
                    cells[name] = rec(cell.cell_contents)
                except ValueError:  # an empty cell
                    cells[name] = None
            out["closure"] = cells
        if obj.__defaults__:
            out["defaults"] = rec(list(obj.__defaults__))
        if obj.__kwdefaults__:
            out["kwdefaults"] = rec(dict(obj.__kwdefaults__))
        return out
    if callable(obj) and not hasattr(obj, "__dict__"):  # builtins
        return _qualname(obj)
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        return {
            "class": _qualname(type(obj)),
            **{
                k: rec(v)
                for k, v in sorted(attributes.items())
                if not k.startswith("__")
            },
        }
    text = repr(obj)
    return text if " at 0x" not in text else _qualname(type(obj))


def _as_dict_if_pairs(value: Any) -> Any:
    """A list of `[str, value]` pairs (a frozen constructor config) as a dict."""
    if (
        isinstance(value, (list, tuple))
        and value
        and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
            for p in value
        )
    ):
        return dict(value)
    return value


def differing_settings(saved: Any, current: Any, path: str = "") -> list[str]:
    """Where two descriptions from `describe_settings` differ, one line each:
    `path: checkpoint <value>, this trainer <value>` (values shortened).

    A setting added to a class after the checkpoint was written (a key the
    checkpoint's description lacks) matches if this trainer leaves it at
    `None`: options are added with `None` meaning the behaviour before them
    (e.g. `PersistentES.final_fraction`), so older checkpoints and records
    stay valid. Constructor configurations (lists of `[name, value]` pairs,
    `freeze_config`) are compared as the dicts they are."""
    saved, current = _as_dict_if_pairs(saved), _as_dict_if_pairs(current)
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for key in sorted(set(saved) | set(current)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in saved and current[key] is None:
                continue
            if key not in saved:
                out.append(
                    f"{sub}: not recorded in the checkpoint, this trainer "
                    f"{_short(current[key])}"
                )
            elif key not in current:
                out.append(
                    f"{sub}: checkpoint {_short(saved[key])}, not set in this trainer"
                )
            else:
                out += differing_settings(saved[key], current[key], sub)
        return out
    if (
        isinstance(saved, list)
        and isinstance(current, list)
        and len(saved) == len(current)
    ):
        out = []
        for i, (a, b) in enumerate(zip(saved, current, strict=False)):
            out += differing_settings(a, b, f"{path}[{i}]")
        return out
    if saved != current:
        return [
            f"{path or '(all)'}: checkpoint {_short(saved)}, this trainer "
            f"{_short(current)}"
        ]
    return []


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- #
# A checkpoint folder: ckpt-<step>.eqx files, the newest kept
# --------------------------------------------------------------------------- #

_CKPT_RE = re.compile(r"^ckpt-(\d{8,})\.eqx$")
# temporary files of `save_checkpoint` ("." + name + random + ".tmp"), left
# behind only when a process is killed in the middle of a write
_STALE_TMP_RE = re.compile(r"^\.ckpt-\d{8,}\.eqx\..*\.tmp$")


def checkpoint_path(folder: str | os.PathLike, step: int) -> str:
    """The file of step `step` in a checkpoint folder (`ckpt-<step>.eqx`)."""
    return os.path.join(folder, f"ckpt-{step:08d}.eqx")


def list_checkpoints(folder: str | os.PathLike | None) -> list[str]:
    """Checkpoint files in `folder`, oldest first (none if it does not exist)."""
    if folder is None or not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = _CKPT_RE.match(name)
        if match:
            found.append((int(match.group(1)), name))
    return [os.path.join(folder, n) for _, n in sorted(found)]


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete partial checkpoint writes of a killed run (never read: the
    final names are only ever complete files)."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if _STALE_TMP_RE.match(name):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints of `folder`."""
    for path in list_checkpoints(folder)[:-keep]:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
