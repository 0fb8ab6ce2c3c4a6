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

import hashlib
import io
import json
import os
import struct
import tempfile
from typing import Any

import equinox as eqx

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
