"""Length-prefixed JSON frames over pipes.

JSON, never pickle: frames that come from sandboxed code are untrusted, and unpickling them would run their code in
the reader. Every reader caps the frame size.
"""

from __future__ import annotations

import json
import os
import struct

_HEADER = struct.Struct(">I")
MAX_FRAME = 8 << 20


class ProtocolError(Exception):
    """A peer sent a frame that is too large or not the JSON object we expect."""


def encode(message: dict) -> bytes:
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, message: dict) -> None:
    view = memoryview(encode(message))
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, missing = [], n
    while missing:
        chunk = os.read(fd, missing)
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def decode(body: bytes) -> dict:
    try:
        message = json.loads(body.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"frame is a {type(message).__name__}, expected a JSON object")
    return message


def read_frame(fd: int, max_size: int = MAX_FRAME) -> dict | None:
    """Block until one frame arrives; ``None`` on a clean EOF before a frame starts."""
    header = _read_exact(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > max_size:
        raise ProtocolError(f"frame of {size} bytes exceeds the {max_size}-byte limit")
    body = _read_exact(fd, size)
    if body is None:
        raise ProtocolError("EOF in the middle of a frame")
    return decode(body)


class FrameBuffer:
    """Collects bytes from a non-blocking reader and yields complete frames."""

    def __init__(self, max_size: int = MAX_FRAME) -> None:
        self.data = bytearray()
        self.max_size = max_size

    def feed(self, chunk: bytes) -> list[dict]:
        self.data += chunk
        frames = []
        while len(self.data) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.data)
            if size > self.max_size:
                raise ProtocolError(f"frame of {size} bytes exceeds the {self.max_size}-byte limit")
            if len(self.data) < _HEADER.size + size:
                break
            frames.append(decode(bytes(self.data[_HEADER.size:_HEADER.size + size])))
            del self.data[:_HEADER.size + size]
        return frames
