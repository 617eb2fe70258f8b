"""The AMQP 0-9-1 frames on aiotq's hot paths, encoded directly.

pamqp encodes a frame by walking its attribute specs and dispatching each value through
several generic functions; for a Celery message (a 16-entry header table) that costs more
than everything else aiotq does to publish it. These encoders write the same bytes as
pamqp for the values aiotq and Celery put in a message (str, int, bool, None, float, dict,
list) and hand every other value to pamqp itself, so its encoding and its errors stay
exactly pamqp's. tests/unit/test_amqp_wire.py compares them byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from pamqp import constants
from pamqp import encode as pamqp_encode

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_END = b"\xce"
#: Bytes a frame adds around its payload (type, channel, size, frame-end).
FRAME_OVERHEAD = 8
BASIC = 60

_frame_head = struct.Struct(">BHI")
_header_head = struct.Struct(">HHQH")
_publish_head = struct.Struct(">BHIHHH")  # frame head, class, method, ticket
_ack = struct.Struct(">BHIHHQBB")  # frame head, class, method, tag, bits, frame-end
_u8 = struct.Struct(">B")
_u32 = struct.Struct(">I")
_b8 = struct.Struct(">b")
_i16 = struct.Struct(">h")
_u16 = struct.Struct(">H")
_i32 = struct.Struct(">l")
_u32l = struct.Struct(">L")
_i64 = struct.Struct(">q")
_f32 = struct.Struct(">f")

_EXCHANGE_NAME = constants.DOMAIN_REGEX["exchange-name"]

# Property flags of Basic.Properties (AMQP 0-9-1, 4.2.6.1; pamqp's Basic.Properties.flags).
CONTENT_TYPE = 1 << 15
CONTENT_ENCODING = 1 << 14
HEADERS = 1 << 13
DELIVERY_MODE = 1 << 12
PRIORITY = 1 << 11
CORRELATION_ID = 1 << 10
REPLY_TO = 1 << 9
MESSAGE_ID = 1 << 7


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise TypeError("string exceeds maximum length of 255 bytes")
    return _u8.pack(len(raw)) + raw


def _longstr(value: str) -> bytes:
    raw = value.encode()
    return _u32.pack(len(raw)) + raw


def _integer(value: int) -> bytes:
    if pamqp_encode.DEPRECATED_RABBITMQ_SUPPORT:
        return pamqp_encode.encode_table_value(value)
    if -128 <= value <= 127:
        return b"b" + _b8.pack(value)
    if -32768 <= value <= 32767:
        return b"s" + _i16.pack(value)
    if 0 <= value <= 65535:
        return b"u" + _u16.pack(value)
    if -2147483648 <= value <= 2147483647:
        return b"I" + _i32.pack(value)
    if 0 <= value <= 4294967295:
        return b"i" + _u32l.pack(value)
    if -9223372036854775808 <= value <= 9223372036854775807:
        return b"l" + _i64.pack(value)
    raise TypeError(f"Unsupported numeric value: {value}")


def _array(value: list[Any]) -> bytes:
    payload = b"".join([_value(item) for item in value])
    return b"A" + _u32.pack(len(payload)) + payload


def _nested(value: dict[str, Any]) -> bytes:
    return b"F" + table(value)


def _string(value: str) -> bytes:
    return b"S" + _longstr(value)


def _boolean(value: bool) -> bytes:
    return b"t\x01" if value else b"t\x00"


def _float(value: float) -> bytes:
    # pamqp sends a Python float as a 32-bit float ("f"); so does this, for the same bytes.
    return b"f" + _f32.pack(value)


def _void(value: None) -> bytes:
    return b"V"


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    str: _string,
    int: _integer,
    bool: _boolean,
    type(None): _void,
    float: _float,
    dict: _nested,
    list: _array,
}


def _value(value: Any) -> bytes:
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        return pamqp_encode.encode_table_value(value)
    return encoder(value)


#: Sorted (key, encoded key) pairs per header layout: a message's headers are built in the
#: same order every time, so pamqp's sort (it sorts the keys) is paid once per layout.
_ORDER: dict[tuple[Any, ...], list[tuple[str, bytes]]] = {}
_ORDER_LIMIT = 512


def _order(names: tuple[Any, ...]) -> list[tuple[str, bytes]] | None:
    """The keys sorted with their encoding; None when pamqp must encode the table (a key
    that is not a str, or one it truncates)."""
    pairs: list[tuple[str, bytes]] = []
    for key in sorted(names):
        if type(key) is not str:
            return None
        raw = key.encode()
        if len(raw) > 128:
            return None
        pairs.append((key, _u8.pack(len(raw)) + raw))
    if len(_ORDER) >= _ORDER_LIMIT:
        _ORDER.clear()
    _ORDER[names] = pairs
    return pairs


def table(value: Mapping[str, Any]) -> bytes:
    """An AMQP field table, with its length: ``pamqp.encode.field_table``'s bytes."""
    if not value:
        return b"\x00\x00\x00\x00"
    if type(value) is not dict:
        return pamqp_encode.field_table(value)  # type: ignore[arg-type]
    names = tuple(value)
    order = _ORDER.get(names) or _order(names)
    if order is None:
        return pamqp_encode.field_table(value)
    parts: list[bytes] = []
    append = parts.append
    for key, prefix in order:
        item = value[key]
        kind = type(item)
        if kind is str:
            raw = item.encode()
            append(prefix + b"S" + _u32.pack(len(raw)) + raw)
        elif item is None:
            append(prefix + b"V")
        elif kind is bool:
            append(prefix + (b"t\x01" if item else b"t\x00"))
        else:
            try:
                append(prefix + _value(item))
            except TypeError as exc:
                raise TypeError(f"{key} error: {exc}") from exc
    payload = b"".join(parts)
    return _u32.pack(len(payload)) + payload


def properties(*, content_type: str | None, content_encoding: str | None,
               headers: Mapping[str, Any] | None, delivery_mode: int | None,
               priority: int | None, correlation_id: str | None,
               reply_to: str | None) -> tuple[int, bytes]:
    """The property flags and values of a Basic content header, as pamqp marshals a
    ``Basic.Properties`` with these fields (None and "" are left out). Raises ValueError
    or TypeError on what pamqp refuses."""
    if delivery_mode is not None and delivery_mode not in (1, 2):
        raise ValueError(f"Invalid delivery_mode value: {delivery_mode}")
    flags = 0
    parts: list[bytes] = []
    fields: tuple[tuple[int, Any, Callable[[Any], bytes]], ...] = (
        (CONTENT_TYPE, content_type or None, _shortstr),
        (CONTENT_ENCODING, content_encoding or None, _shortstr),
        (HEADERS, headers, table),
        (DELIVERY_MODE, delivery_mode, _u8.pack),
        (PRIORITY, priority, _u8.pack),
        (CORRELATION_ID, correlation_id or None, _shortstr),
        (REPLY_TO, reply_to or None, _shortstr),
    )
    for flag, value, encode in fields:
        if value is not None:
            flags |= flag
            parts.append(encode(value))
    return flags, b"".join(parts)


def publish_method(channel: int, exchange: str, routing_key: str, mandatory: bool) -> bytes:
    """A Basic.Publish method frame (pamqp's validation of the names included)."""
    if len(routing_key) > 255:
        raise ValueError("Routing key too long (max 255 bytes)")
    if len(exchange) > 127:
        raise ValueError("Max length exceeded for exchange")
    if not _EXCHANGE_NAME.fullmatch(exchange):
        raise ValueError("Invalid value for exchange")
    names = _shortstr(exchange) + _shortstr(routing_key) + (b"\x01" if mandatory else b"\x00")
    return _publish_head.pack(FRAME_METHOD, channel, 6 + len(names), BASIC, 40, 0) \
        + names + FRAME_END


def content(channel: int, flags: int, values: bytes, message_id: str | None, body: bytes,
            frame_max: int) -> list[bytes]:
    """The content header frame (``message_id`` appended to the properties: it is the last
    one aiotq sets) and the body frames of a message, as pieces to join."""
    if message_id is not None:
        flags |= MESSAGE_ID
        values += _shortstr(message_id)
    size = len(body)
    header = _header_head.pack(BASIC, 0, size, flags) + values
    out = [_frame_head.pack(FRAME_HEADER, channel, len(header)), header, FRAME_END]
    if not size:
        return out
    chunk = frame_max - FRAME_OVERHEAD
    if size <= chunk:
        out += (_frame_head.pack(FRAME_BODY, channel, size), body, FRAME_END)
        return out
    for start in range(0, size, chunk):
        piece = body[start:start + chunk]
        out += (_frame_head.pack(FRAME_BODY, channel, len(piece)), piece, FRAME_END)
    return out


def ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """A Basic.Ack method frame."""
    return _ack.pack(FRAME_METHOD, channel, 13, BASIC, 80, delivery_tag, 1 if multiple else 0,
                     206)
