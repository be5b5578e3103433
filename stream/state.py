"""Saved state as data only: a versioned container of plain values and raw arrays, never code.

A session's state leaves the process (memory, Redis) and comes back as outside input, so it is
read by a parser that can only build plain values: ``None``, ``bool``, ``int``, ``float``,
``str``, ``bytes``, lists, tuples, dicts (string keys, or integer keys), NumPy arrays of a few
little-endian dtypes, and the dataclasses registered here (``Tick``, ``FaceObservation``,
``SessionConfig``). Anything else is refused with :class:`StateError`, a ``ValueError`` whose
message is safe to show to the client. Layout::

    offset size  field
    0      4     magic b"VSST"
    4      2     format version (uint16 LE)
    6      4     header length H (uint32 LE)
    10     H     header: UTF-8 JSON {"tree": ..., "blobs": [[offset, length], ...]}
    10+H   ...   the blobs: raw bytes and array buffers, back to back

In the tree, a value that JSON cannot hold is an object with one ``$`` key: ``{"$b": i}`` bytes
(blob i), ``{"$a": i, "dtype": "<f4", "shape": [n, m]}`` an array (0-d arrays are NumPy
scalars), ``{"$t": [...]}`` a tuple, ``{"$d": [[k, v], ...]}`` a dict with integer keys,
``{"$c": "Tick", "f": {...}}`` a registered dataclass, ``{"$f": "nan"}`` a non-finite float.

The components check what they load (:func:`array`, :func:`integer`, ...), so a state of the
right types but the wrong shapes is refused at load time too, not later in the analysis.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from typing import Any

import numpy as np

MAGIC = b"VSST"
VERSION = 1
_HEAD = struct.Struct("<4sHI")
MAX_STATE_BYTES = 16 * 1024 * 1024
MAX_BLOBS = 4096
MAX_DEPTH = 48
DTYPES = frozenset({"<f4", "<f8", "<i2", "<i4", "<i8", "|u1", "|i1", "|b1"})
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class StateError(ValueError):
    """A saved state that is not one this code wrote (corrupt, crafted, or of another format)."""


_CLASSES: dict[str, type] = {}


def register(cls: type) -> type:
    """Let instances of a dataclass be saved and loaded (by name, field by field)."""
    assert dataclasses.is_dataclass(cls)
    _CLASSES[cls.__name__] = cls
    return cls


# --- writing ---------------------------------------------------------------------------------


def dumps(tree: Any) -> bytes:
    blobs: list[bytes] = []

    def blob(b: bytes) -> int:
        blobs.append(b)
        return len(blobs) - 1

    def enc(x: Any) -> Any:
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, int):
            return int(x)
        if isinstance(x, float):
            return x if math.isfinite(x) else {"$f": repr(x)}
        if isinstance(x, (bytes, bytearray, memoryview)):
            return {"$b": blob(bytes(x))}
        if isinstance(x, np.generic):
            x = np.asarray(x)
        if isinstance(x, np.ndarray):
            a = x if x.flags.c_contiguous else np.ascontiguousarray(x)
            dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
            a = a.astype(dtype, copy=False)
            if dtype.str not in DTYPES:
                raise TypeError(f"cannot save an array of dtype {a.dtype}")
            return {"$a": blob(a.tobytes()), "dtype": dtype.str, "shape": list(a.shape)}
        if isinstance(x, tuple):
            return {"$t": [enc(v) for v in x]}
        if isinstance(x, list):
            return [enc(v) for v in x]
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                if any(k.startswith("$") for k in x):
                    raise TypeError("dict keys starting with '$' are reserved")
                return {k: enc(v) for k, v in x.items()}
            if all(isinstance(k, int) and not isinstance(k, bool) for k in x):
                return {"$d": [[int(k), enc(v)] for k, v in x.items()]}
            raise TypeError("dict keys must be all strings or all integers")
        if dataclasses.is_dataclass(x) and type(x).__name__ in _CLASSES:
            return {"$c": type(x).__name__, "f": {f.name: enc(getattr(x, f.name)) for f in dataclasses.fields(x)}}
        raise TypeError(f"cannot save a {type(x).__name__} in a state")

    tree_json = enc(tree)
    offsets, pos = [], 0
    for b in blobs:
        offsets.append([pos, len(b)])
        pos += len(b)
    header = json.dumps({"tree": tree_json, "blobs": offsets}, separators=(",", ":"), allow_nan=False).encode()
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
    try:
        header = json.loads(data[_HEAD.size : body].decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StateError(f"saved state header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or set(header) != {"tree", "blobs"} or not isinstance(header["blobs"], list):
        raise StateError("saved state header is not {tree, blobs}")
    if len(header["blobs"]) > MAX_BLOBS:
        raise StateError("saved state holds too many blobs")
    blobs = []
    for entry in header["blobs"]:
        if not (isinstance(entry, list) and len(entry) == 2 and all(_is_int(v) and v >= 0 for v in entry)):
            raise StateError("saved state blob table is malformed")
        start, length = body + entry[0], entry[1]
        if start + length > len(data):
            raise StateError("saved state blob runs past its end")
        blobs.append(data[start : start + length])
    return _decode(header["tree"], blobs, 0)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in a saved state header")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _decode(x: Any, blobs: list[bytes], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise StateError("saved state nests too deeply")
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return [_decode(v, blobs, depth + 1) for v in x]
    if not isinstance(x, dict):
        raise StateError(f"unexpected {type(x).__name__} in a saved state")
    tags = [k for k in x if k.startswith("$")]
    if not tags:
        return {k: _decode(v, blobs, depth + 1) for k, v in x.items()}
    if len(tags) != 1:
        raise StateError("a saved state value has more than one type tag")
    tag = tags[0]
    if tag == "$b" and set(x) == {"$b"}:
        return _blob(blobs, x["$b"])
    if tag == "$a" and set(x) == {"$a", "dtype", "shape"}:
        dtype, shape = x["dtype"], x["shape"]
        if dtype not in DTYPES:
            raise StateError(f"array dtype {dtype!r} is not allowed in a saved state")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(_is_int(n) and n >= 0 for n in shape)):
            raise StateError("array shape in a saved state is malformed")
        raw = _blob(blobs, x["$a"])
        dt = np.dtype(dtype)
        if math.prod(shape) * dt.itemsize != len(raw):
            raise StateError("array size does not match its shape in a saved state")
        a = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
        return a[()] if a.ndim == 0 else a
    if tag == "$t" and set(x) == {"$t"} and isinstance(x["$t"], list):
        return tuple(_decode(v, blobs, depth + 1) for v in x["$t"])
    if tag == "$d" and set(x) == {"$d"} and isinstance(x["$d"], list):
        out = {}
        for pair in x["$d"]:
            if not (isinstance(pair, list) and len(pair) == 2 and _is_int(pair[0])):
                raise StateError("integer-keyed dict in a saved state is malformed")
            out[pair[0]] = _decode(pair[1], blobs, depth + 1)
        return out
    if tag == "$f" and set(x) == {"$f"} and x["$f"] in _FLOATS:
        return _FLOATS[x["$f"]]
    if tag == "$c" and set(x) == {"$c", "f"} and isinstance(x["f"], dict):
        cls = _CLASSES.get(x["$c"]) if isinstance(x["$c"], str) else None
        if cls is None:
            raise StateError(f"type {str(x['$c'])[:40]!r} is not allowed in a saved state")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        if not set(x["f"]) <= names:
            raise StateError(f"unknown fields of {cls.__name__} in a saved state")
        try:
            return cls(**{k: _decode(v, blobs, depth + 1) for k, v in x["f"].items()})
        except TypeError as exc:
            raise StateError(f"cannot rebuild {cls.__name__} from a saved state: {exc}") from None
    raise StateError(f"malformed {tag!r} value in a saved state")


def _blob(blobs: list[bytes], i: Any) -> bytes:
    if not _is_int(i) or not 0 <= i < len(blobs):
        raise StateError("saved state refers to a missing blob")
    return blobs[i]


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
