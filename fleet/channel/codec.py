"""Frames of the replica channel (fleet.channel.replica_end), and how their bodies are
written: nothing on the channel is a pickle, in either direction.

A frame is a 4-byte big-endian length and a body. The body is JSON (orjson), or, when the
length's top bit (`PACKED`) is set, msgpack: the replica's answers to grouped calls, which hold
float32 arrays and errors. msgpack carries them as two extension types, both plain data:

- an array is its dtype (numbers only), its shape and its raw bytes, rebuilt with
  `np.frombuffer` (no object arrays, no code);
- an error is the name of one of Fleet's own error classes (fleet.errors, looked up in a fixed
  table, never imported by name), its message, code and HTTP status.

Reading an answer therefore runs no code of the sender's choosing, whoever the sender is."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import msgspec
import numpy as np
import orjson

from fleet.errors import error_fields, rebuild_error
from fleet.messages import StreamFrame

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
PACKED = 1 << 31  # in a frame's length: the body is msgpack, not JSON
_STREAM_FRAMES = msgspec.json.Encoder()
_STREAM_FRAME_DECODER = msgspec.json.Decoder(StreamFrame)
_ARRAY, _ERROR = 1, 2  # msgpack extension type codes
_NUMERIC_KINDS = frozenset("biufc")  # bool, int, uint, float, complex


def encode_frame(payload: dict[str, Any]) -> bytes:
    body = orjson.dumps(payload)
    return HEADER.pack(len(body)) + body


def encode_stream_frame(frame: StreamFrame) -> bytes:
    """A stream's frame (fleet.messages.StreamFrame), as JSON; the API reads it back typed."""
    body = _STREAM_FRAMES.encode(frame)
    return HEADER.pack(len(body)) + body


def read_stream_frame(frame: dict[str, Any] | StreamFrame) -> StreamFrame:
    """A frame that names a stream, checked against StreamFrame's types: ValueError for one that
    does not match (a chunk that is not an object, a usage without its counts...)."""
    if isinstance(frame, StreamFrame):  # decoded typed already (decode_stream_frame)
        return frame
    try:
        return msgspec.convert(frame, StreamFrame)
    except msgspec.ValidationError as exc:
        raise ValueError(f"a stream frame that does not match its type: {exc}") from None


def decode_stream_frame(body: bytes | memoryview) -> StreamFrame:
    """A JSON body read straight into a StreamFrame (a tenth cheaper than reading it as a dict
    and checking that): what the API's end reads once the handshake is over."""
    try:
        return _STREAM_FRAME_DECODER.decode(body)
    except msgspec.ValidationError as exc:
        raise ValueError(f"a stream frame that does not match its type: {exc}") from None


def encode_packed_frame(payload: dict[str, Any]) -> bytes:
    body = msgpack.packb(payload, default=_to_msgpack, use_bin_type=True)
    return HEADER.pack(len(body) | PACKED) + body


def _to_msgpack(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"an array of {obj.dtype} cannot travel on the replica channel")
        # dtype, shape and raw bytes in a fixed layout: a nested msgpack body cost 4x more.
        dtype = obj.dtype.str.encode()
        head = struct.pack(f"<B{len(dtype)}sB{obj.ndim}Q", len(dtype), dtype, obj.ndim, *obj.shape)
        return msgpack.ExtType(_ARRAY, head + np.ascontiguousarray(obj).tobytes())
    if isinstance(obj, np.generic):  # numpy scalars (a score, a count) as plain numbers
        return obj.item()
    if isinstance(obj, BaseException):
        return msgpack.ExtType(_ERROR, msgpack.packb(error_fields(obj)))
    raise TypeError(f"a {type(obj).__name__} cannot travel on the replica channel")


def _from_msgpack(code: int, data: bytes) -> Any:
    if code == _ARRAY:
        return _read_array(data)
    if code == _ERROR:
        name, message, error_code, status = msgpack.unpackb(data)
        return rebuild_error(str(name), str(message), error_code, status)
    raise ValueError(f"unknown msgpack extension type {code}")


def _read_array(data: bytes) -> np.ndarray:
    dtype_length = data[0]
    dtype = np.dtype(data[1:1 + dtype_length].decode("ascii"))
    if dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(f"an array of {dtype} is not accepted")
    ndim = data[1 + dtype_length]
    start = 2 + dtype_length
    shape = struct.unpack_from(f"<{ndim}Q", data, start)
    # Read-only, without a copy: it is turned into the client's JSON and dropped.
    return np.frombuffer(data, dtype=dtype, offset=start + 8 * ndim).reshape(shape)


def decode_packed(body: bytes | memoryview) -> Any:
    return msgpack.unpackb(body, ext_hook=_from_msgpack, raw=False)


async def read_frame(reader: asyncio.StreamReader,
                     max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """A JSON frame (the replica's side: it reads only JSON); a packed one is refused like an
    oversized one, its flag making its length too large."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    if size > max_bytes:
        raise ValueError(f"frame of {size} bytes is larger than {max_bytes}")
    return orjson.loads(await reader.readexactly(size))


class FrameSplitter:
    """Bytes as they arrive -> the whole frames among them (the API's side: it reads JSON
    frames and packed answers)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        # How a JSON body is read: as a dict, until the reader knows what follows (the API's
        # end reads stream frames typed once the handshake is over).
        self.read_json: Callable[[memoryview], Any] = orjson.loads

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        frames = []
        start = 0
        while len(self._buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer, start)
            packed, size = bool(size & PACKED), size & ~PACKED
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME_BYTES}")
            end = start + HEADER.size + size
            if end > len(self._buffer):
                break
            with memoryview(self._buffer) as view, view[start + HEADER.size:end] as body:
                try:
                    frames.append(decode_packed(body) if packed else self.read_json(body))
                except Exception as exc:  # the channel cannot go on: its framing is lost
                    raise ValueError(f"a frame that cannot be read: {exc!r}") from exc
            start = end
        del self._buffer[:start]
        return frames
