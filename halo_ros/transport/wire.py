"""Bytes on the wire: msgpack with numpy arrays as plain maps, decoded under strict limits.

An array travels as `{'dtype': '<f4', 'shape': [50, 14], 'data': <bin>}` (little-endian, C
order), never as a pickled object: msgpack here knows no object types at all (ext types are
refused), so a hostile frame can at worst be rejected. Every string, binary, array and map a frame
may contain is bounded before anything is allocated, and only the dtypes in `WIRE_DTYPES` exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import msgpack
import numpy as np

PROTOCOL_VERSION = 2  # 2: the seam is the runtime's plan (prefix mode, delay steps)

# The only dtypes a frame may carry: images, actions/noise/latents, nothing else.
WIRE_DTYPES = {'|u1': np.dtype(np.uint8), '<f4': np.dtype('<f4')}
MAX_DIMS = 4


class ProtocolError(ValueError):
    """A frame that breaks the protocol. `code` is an `ErrorCode` value for the error reply."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class WireLimits:
    # One frame: 3 x 480x640 raw RGB is 2.8 MB; 16 MiB leaves room for latents and larger images.
    max_message_bytes: int = 16 << 20
    max_str_bytes: int = 64 << 10  # instruction and reasoning text
    max_items: int = 4096  # elements of any msgpack array or map (shapes, names, timings)

    def __post_init__(self):
        if self.max_message_bytes < 1024 or self.max_str_bytes < 64 or self.max_items < 16:
            raise ValueError(f'wire limits too small to carry a request: {self}')


def _encode_default(value):
    if isinstance(value, np.ndarray):
        return encode_array(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f'cannot put {type(value).__name__} on the wire')


def encode_array(array: np.ndarray) -> dict:
    dtype = array.dtype.newbyteorder('<') if array.dtype.byteorder == '>' else array.dtype
    if dtype.str not in WIRE_DTYPES:
        raise TypeError(f'dtype {array.dtype} cannot go on the wire (only {list(WIRE_DTYPES)})')
    array = np.ascontiguousarray(array, dtype=dtype)
    return {'dtype': dtype.str, 'shape': list(array.shape), 'data': memoryview(array).cast('B')}


def pack(message: dict) -> bytes:
    return msgpack.packb(message, default=_encode_default, use_bin_type=True)


def _refuse_ext(code: int, data: bytes):
    raise ProtocolError('decode', f'msgpack ext type {code} is not allowed')


def unpack(frame, limits: WireLimits) -> dict:
    """One frame -> a dict of plain msgpack values, or ProtocolError('decode' | 'too_large')."""
    size = len(frame)
    if size > limits.max_message_bytes:
        raise ProtocolError(
            'too_large', f'frame of {size} bytes exceeds the limit of {limits.max_message_bytes}'
        )
    try:
        message = msgpack.unpackb(
            frame,
            raw=False,
            use_list=True,
            strict_map_key=True,  # keys are str or int only
            max_str_len=limits.max_str_bytes,
            max_bin_len=limits.max_message_bytes,
            max_array_len=limits.max_items,
            max_map_len=limits.max_items,
            max_ext_len=0,
            ext_hook=_refuse_ext,
        )
    except ProtocolError:
        raise
    except Exception as error:  # noqa: BLE001 (msgpack raises many types on hostile input)
        raise ProtocolError(
            'decode', f'not a msgpack frame: {type(error).__name__}: {error}'
        ) from None
    if not isinstance(message, dict):
        raise ProtocolError('decode', f'a frame must be a map, got {type(message).__name__}')
    return message


def decode_array(name: str, value, shape: tuple, dtype) -> np.ndarray:
    """A wire array -> a writable numpy array of this dtype and shape (None = any size), or
    ProtocolError('schema') naming `name`. Floats must be finite."""
    if not isinstance(value, dict) or set(value) != {'dtype', 'shape', 'data'}:
        raise ProtocolError('schema', f'{name}: expected an array map {{dtype, shape, data}}')
    want = np.dtype(dtype)
    if not isinstance(value['dtype'], str) or WIRE_DTYPES.get(value['dtype']) != want:
        raise ProtocolError('schema', f'{name}: expected dtype {want.str}, got {value["dtype"]!r}')
    dims = value['shape']
    if (
        not isinstance(dims, list)
        or len(dims) != len(shape)
        or not all(type(d) is int and 0 <= d <= 1 << 24 for d in dims)
        or any(s is not None and s != d for s, d in zip(shape, dims, strict=True))
    ):
        raise ProtocolError('schema', f'{name}: expected shape {shape}, got {dims!r}')
    data = value['data']
    if not isinstance(data, bytes) or len(data) != math.prod(dims) * want.itemsize:
        got = len(data) if isinstance(data, bytes) else type(data).__name__
        raise ProtocolError(
            'schema',
            f'{name}: {dims} {want.str} needs {math.prod(dims) * want.itemsize} bytes, got {got}',
        )
    array = np.frombuffer(data, dtype=want).reshape(dims).copy()  # writable, owned
    if want.kind == 'f' and not np.isfinite(array).all():
        raise ProtocolError('schema', f'{name}: contains NaN or infinity')
    return array
