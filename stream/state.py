"""Saved state as data only: a versioned container of plain values and raw arrays, never code.

A session's state leaves the process (memory, Redis) and comes back as outside input, so it is
read by a parser that can only build plain values: ``None``, ``bool``, ``int``, ``float``,
``str``, lists, dicts with string keys, ``bytes``, NumPy arrays of a few little-endian dtypes,
and the dataclasses registered here (``Tick``, ``FaceObservation``, ``SessionConfig``). Anything
else is refused with :class:`StateError`, a ``ValueError`` whose message is safe to show to the
client. Layout::

    offset size  field
    0      4     magic b"VSST"
    4      2     format version (uint16 LE)
    6      4     header length H (uint32 LE)
    10     H     header: the tree of values, UTF-8 JSON
    10+H   ...   the blobs: raw bytes and array buffers, back to back

In the tree, a value JSON cannot hold is an object with a ``$`` key: ``{"$b": [offset, length]}``
bytes (in the blobs), ``{"$a": [offset, length], "dtype": "<f4", "shape": [n, m]}`` an array (a
0-d array is a NumPy scalar, so float32 arithmetic continues in float32), ``{"$c": "Tick", "f":
{...}}`` a registered dataclass.
Tuples come back as lists and dict keys are strings (JSON's own model): the components that load
a state convert what they need (:func:`seq`). Floats are written with ``repr``, so they come back
bit for bit; the C JSON codec does the walking, which keeps a save in the cost of a pickle.

The components check what they load (:func:`array`, :func:`integer`, ...), so a state of the
right types but the wrong shapes is refused at load time too, not later in the analysis.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

MAGIC = b"VSST"
VERSION = 1
_HEAD = struct.Struct("<4sHI")
MAX_STATE_BYTES = 16 * 1024 * 1024
MAX_NODES = 200_000  # lists and objects in one header
DTYPES = frozenset({"<f4", "<f8", "<i2", "<i4", "<i8", "|u1", "|i1", "|b1"})


class StateError(ValueError):
    """A saved state that is not one this code wrote (corrupt, crafted, or of another format)."""


_CLASSES: dict[str, tuple[type, frozenset[str], Any]] = {}


def register(cls: type | None = None, *, convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
    """Let instances of a dataclass be saved and loaded, by name and field by field; ``convert``
    turns the loaded fields back into what the class holds (e.g. lists into tuples)."""

    def add(c: type) -> type:
        assert dataclasses.is_dataclass(c)
        _CLASSES[c.__name__] = (c, frozenset(f.name for f in dataclasses.fields(c) if f.init), convert)
        return c

    return add(cls) if cls is not None else add


# --- writing ---------------------------------------------------------------------------------


def dumps(tree: Any) -> bytes:
    blobs: list[bytes] = []
    size = [0]

    def place(b: bytes) -> list[int]:
        blobs.append(b)
        size[0] += len(b)
        return [size[0] - len(b), len(b)]

    def tag(x: Any) -> Any:  # called by the JSON encoder for what it cannot write itself
        if isinstance(x, np.generic):
            x = np.asarray(x)
        if isinstance(x, np.ndarray):
            a = x if x.flags.c_contiguous else np.ascontiguousarray(x)
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))
            if a.dtype.str not in DTYPES:
                raise TypeError(f"cannot save an array of dtype {a.dtype}")
            return {"$a": place(a.tobytes()), "dtype": a.dtype.str, "shape": list(a.shape)}
        if isinstance(x, (bytes, bytearray, memoryview)):
            return {"$b": place(bytes(x))}
        entry = _CLASSES.get(type(x).__name__)
        if entry is not None and entry[0] is type(x):
            return {"$c": type(x).__name__, "f": {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}}
        raise TypeError(f"cannot save a {type(x).__name__} in a state")

    encoder = json.JSONEncoder(separators=(",", ":"), default=tag, allow_nan=True, check_circular=False)
    header = encoder.encode(tree).encode()
    return b"".join([_HEAD.pack(MAGIC, VERSION, len(header)), header, *blobs])


# --- reading ---------------------------------------------------------------------------------


def loads(data: bytes, max_bytes: int = MAX_STATE_BYTES) -> Any:
    """The tree :func:`dumps` wrote; :class:`StateError` for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StateError("a saved state is bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise StateError(f"saved state of {len(data)} bytes is over the {max_bytes}-byte limit")
    if len(data) < _HEAD.size or data[:4] != MAGIC:
        raise StateError("not a vibescope state (written by an older server version, or corrupt)")
    _, version, header_len = _HEAD.unpack_from(data)
    if version != VERSION:
        raise StateError(f"saved state format {version}; this server reads format {VERSION}")
    body = _HEAD.size + header_len
    if body > len(data):
        raise StateError("saved state header runs past its end")
    text = data[_HEAD.size : body]
    if text.count(b"[") + text.count(b"{") > MAX_NODES:
        raise StateError("saved state has too many nested values")
    blobs = memoryview(data)[body:]

    def hook(d: dict[str, Any]) -> Any:  # every JSON object, innermost first
        for k in d:
            if k.startswith("$"):
                return _tagged(d, blobs)
        return d

    try:
        return json.loads(text.decode("utf-8"), object_hook=hook)
    except RecursionError:
        raise StateError("saved state nests too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, StateError):
            raise
        raise StateError(f"saved state header is not valid JSON: {str(exc)[:80]}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _tagged(x: dict[str, Any], blobs: memoryview) -> Any:
    if set(x) == {"$b"}:
        return _blob(blobs, x["$b"])
    if set(x) == {"$a", "dtype", "shape"}:
        dtype, shape = x["dtype"], x["shape"]
        if dtype not in DTYPES:
            raise StateError(f"array dtype {str(dtype)[:20]!r} is not allowed in a saved state")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(_is_int(n) and n >= 0 for n in shape)):
            raise StateError("array shape in a saved state is malformed")
        raw = _blob(blobs, x["$a"])
        dt = np.dtype(dtype)
        if math.prod(shape) * dt.itemsize != len(raw):
            raise StateError("array size does not match its shape in a saved state")
        a = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
        return a[()] if a.ndim == 0 else a
    if set(x) == {"$c", "f"} and isinstance(x["f"], dict):
        entry = _CLASSES.get(x["$c"]) if isinstance(x["$c"], str) else None
        if entry is None:
            raise StateError(f"type {str(x['$c'])[:40]!r} is not allowed in a saved state")
        cls, names, convert = entry
        if not set(x["f"]) <= names:
            raise StateError(f"unknown fields of {cls.__name__} in a saved state")
        try:
            fields = convert(dict(x["f"])) if convert is not None else x["f"]
            return cls(**fields)
        except (TypeError, ValueError) as exc:
            raise StateError(f"cannot rebuild {cls.__name__} from a saved state: {str(exc)[:80]}") from None
    raise StateError("malformed tagged value in a saved state")


def _blob(blobs: memoryview, where: Any) -> bytes:
    if not (isinstance(where, list) and len(where) == 2 and all(_is_int(v) and v >= 0 for v in where)):
        raise StateError("saved state blob reference is malformed")
    start, length = where
    if start + length > len(blobs):
        raise StateError("saved state blob runs past its end")
    return bytes(blobs[start : start + length])


# --- checking what a component loads ---------------------------------------------------------


def array(value: Any, dtype: str | np.dtype, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    """``value`` as an array of ``dtype`` whose shape matches ``shape`` (None: any length)."""
    if not isinstance(value, np.ndarray) or value.dtype != np.dtype(dtype):
        raise StateError(f"{what}: expected a {np.dtype(dtype)} array")
    if value.ndim != len(shape) or any(
        want is not None and n != want for n, want in zip(value.shape, shape, strict=True)
    ):
        raise StateError(f"{what}: shape {value.shape} is not {tuple('*' if s is None else s for s in shape)}")
    return value.copy()


def integer(value: Any, what: str, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iu":
        value = value[()]
    if isinstance(value, np.integer):
        value = int(value)
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        raise StateError(f"{what}: expected an integer in [{low}, {high}]")
    return value


def number(value: Any, what: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value  # kept as saved: arithmetic in the saved precision continues bit for bit
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StateError(f"{what}: expected a number")
    return value


def seq(value: Any, length: int | None, what: str) -> tuple:
    """A loaded list (or tuple) of ``length`` items (None: any), as a tuple."""
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        raise StateError(f"{what}: expected a list of {length if length is not None else 'any number of'} items")
    return tuple(value)


def keys(state: Any, required: set[str], what: str, optional: set[str] = frozenset()) -> dict:
    if not isinstance(state, dict) or not required <= set(state) or not set(state) <= required | optional:
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise StateError(f"{what}: expected keys {sorted(required)}, got {have}")
    return state


def instance(value: Any, cls: type | tuple[type, ...], what: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, cls):
        raise StateError(f"{what}: expected {getattr(cls, '__name__', cls)}")
    return value
