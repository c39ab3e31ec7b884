"""Protocol-buffer wire encoding, by hand, for the fields tracebridge writes.

Encoding with generated message classes costs microseconds per packet; building the bytes directly from
precomputed tags is several times cheaper, and the writer thread spends most of its time here. The
official Perfetto schema decodes every byte this module writes (see tests/sinks/test_perfetto_*).
"""

from __future__ import annotations

import struct
from typing import Final

_VARINT_CACHE: Final = [bytes((i,)) for i in range(128)]
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack

VARINT: Final = 0
FIXED64: Final = 1
LEN: Final = 2


def varint(n: int) -> bytes:
    """Unsigned varint; negative numbers as 64-bit two's complement (ten bytes), as int64 fields want."""
    if n < 128:
        if n >= 0:
            return _VARINT_CACHE[n]
        n &= 0xFFFF_FFFF_FFFF_FFFF
    if n < 16384:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 2097152:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; returns (value, next position). Raises IndexError when cut off and
    ValueError when longer than ten bytes."""
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


class Field:
    """Precomputed encoders for one field number."""

    __slots__ = ("fixed64_tag", "len_tag", "number", "varint_tag")

    def __init__(self, number: int) -> None:
        self.number = number
        self.varint_tag = tag(number, VARINT)
        self.len_tag = tag(number, LEN)
        self.fixed64_tag = tag(number, FIXED64)

    def uint(self, n: int) -> bytes:
        return self.varint_tag + varint(n)

    def boolean(self, b: bool) -> bytes:
        return self.varint_tag + (b"\x01" if b else b"\x00")

    def bytes_(self, data: bytes) -> bytes:
        return self.len_tag + varint(len(data)) + data

    def string(self, s: str) -> bytes:
        data = utf8(s)
        return self.len_tag + varint(len(data)) + data

    def double(self, x: float) -> bytes:
        return self.fixed64_tag + _pack_double(x)

    def fixed64(self, n: int) -> bytes:
        return self.fixed64_tag + _pack_fixed64(n & 0xFFFF_FFFF_FFFF_FFFF)


def utf8(s: str) -> bytes:
    """UTF-8 bytes of ``s``; lone surrogates become U+FFFD (protobuf strings must be valid UTF-8)."""
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def message(field: Field, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return field.len_tag + varint(len(body)) + body
