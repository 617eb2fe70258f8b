"""The AMQP 0-9-1 frames on aiotq's hot paths, encoded and decoded directly.

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
from typing import Any, NamedTuple

from pamqp import constants
from pamqp import decode as pamqp_decode
from pamqp import encode as pamqp_encode

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_END = b"\xce"
#: Bytes a frame adds around its payload (type, channel, size, frame-end).
FRAME_OVERHEAD = 8
BASIC = 60

#: A frame's type, channel and payload size; a method's class and method; a content
#: header's class, weight and body size.
FRAME_HEAD = struct.Struct(">BHI")
METHOD_IDS = struct.Struct(">HH")
CONTENT_HEAD = struct.Struct(">HHQ")
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
_f64 = struct.Struct(">d")
_tag_bits = struct.Struct(">QB")
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
    out = [FRAME_HEAD.pack(FRAME_HEADER, channel, len(header)), header, FRAME_END]
    if not size:
        return out
    chunk = frame_max - FRAME_OVERHEAD
    if size <= chunk:
        out += (FRAME_HEAD.pack(FRAME_BODY, channel, size), body, FRAME_END)
        return out
    for start in range(0, size, chunk):
        piece = body[start:start + chunk]
        out += (FRAME_HEAD.pack(FRAME_BODY, channel, len(piece)), piece, FRAME_END)
    return out


def ack(channel: int, delivery_tag: int, multiple: bool) -> bytes:
    """A Basic.Ack method frame."""
    return _ack.pack(FRAME_METHOD, channel, 13, BASIC, 80, delivery_tag, 1 if multiple else 0,
                     206)


# -- decoding -------------------------------------------------------------------------



class Props:
    """The properties of a delivered or returned message (``Basic.Properties``' names; a
    property the message does not have is None)."""

    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: Any = None
    message_type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    cluster_id: str | None = None


class Deliver(NamedTuple):
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str


class Return(NamedTuple):
    reply_code: int
    reply_text: str
    exchange: str
    routing_key: str


class Confirm(NamedTuple):
    """A basic.ack (``ack``) or basic.nack from the broker, for publisher confirms."""

    delivery_tag: int
    multiple: bool
    ack: bool


def _decode_shortstr(data: bytes, offset: int) -> tuple[str, int]:
    end = offset + 1 + data[offset]
    return data[offset + 1:end].decode(), end


def _decode_value(data: bytes, offset: int) -> tuple[Any, int]:
    """One field value (its type octet first), as pamqp's ``embedded_value`` decodes it."""
    if offset >= len(data):
        return None, offset
    kind = data[offset]
    offset += 1
    if kind == 0x53:  # S
        (size,) = _u32.unpack_from(data, offset)
        offset += 4
        raw = data[offset:offset + size]
        try:
            return raw.decode(), offset + size
        except UnicodeDecodeError:
            return raw, offset + size
    if kind == 0x56 or kind == 0:  # V
        return None, offset
    if kind == 0x74:  # t
        return bool(data[offset]), offset + 1
    if kind == 0x46:  # F
        return decode_table(data, offset)
    if kind == 0x41:  # A
        return _decode_array(data, offset)
    number = _NUMBERS.get(kind)
    if number is not None:
        return number.unpack_from(data, offset)[0], offset + number.size
    decoder = pamqp_decode.TABLE_MAPPING.get(bytes((kind,)))
    if decoder is None:
        raise ValueError(f"Unknown type: {bytes((kind,))!r}")
    consumed, value = decoder(data[offset:])
    return value, offset + consumed


_NUMBERS: dict[int, struct.Struct] = {
    0x62: _b8, 0x42: _u8, 0x73: _i16, 0x75: _u16, 0x49: _i32, 0x69: _u32l,  # b B s u I i
    0x6C: _i64, 0x4C: _i64, 0x66: _f32, 0x64: _f64,  # l L f d
}


def _decode_array(data: bytes, offset: int) -> tuple[list[Any], int]:
    (size,) = _u32.unpack_from(data, offset)
    offset += 4
    end = offset + size
    if end > len(data):
        raise ValueError("Field array length exceeds available data")
    items = []
    while offset < end:
        item, offset = _decode_value(data, offset)
        items.append(item)
    return items, offset


def decode_table(data: bytes, offset: int) -> tuple[dict[str, Any], int]:
    """A field table at ``offset`` (its length first) and where it ends, as pamqp's
    ``field_table`` decodes it."""
    (size,) = _u32.unpack_from(data, offset)
    offset += 4
    end = offset + size
    if end > len(data):
        raise ValueError("Field table length exceeds available data")
    table: dict[str, Any] = {}
    unpack_u32 = _u32.unpack_from
    while offset < end:
        key_end = offset + 1 + data[offset]
        if key_end > end:
            raise ValueError("Field table key length exceeds data")
        key = data[offset + 1:key_end].decode()
        kind = data[key_end] if key_end < len(data) else -1
        if kind == 0x53:  # S, the common case, inline
            start = key_end + 5
            offset = start + unpack_u32(data, key_end + 1)[0]
            raw = data[start:offset]
            try:
                table[key] = raw.decode()
            except UnicodeDecodeError:
                table[key] = raw
        elif kind == 0x56:  # V
            table[key] = None
            offset = key_end + 1
        else:
            table[key], offset = _decode_value(data, key_end)
    return table, end


def _decode_octet(data: bytes, offset: int) -> tuple[int, int]:
    return data[offset], offset + 1


def _decode_timestamp(data: bytes, offset: int) -> tuple[Any, int]:
    return pamqp_decode.timestamp(data[offset:offset + 8])[1], offset + 8


_PROPERTIES: tuple[tuple[int, str, Callable[[bytes, int], tuple[Any, int]]], ...] = (
    (CONTENT_TYPE, "content_type", _decode_shortstr),
    (CONTENT_ENCODING, "content_encoding", _decode_shortstr),
    (HEADERS, "headers", decode_table),
    (DELIVERY_MODE, "delivery_mode", _decode_octet),
    (PRIORITY, "priority", _decode_octet),
    (CORRELATION_ID, "correlation_id", _decode_shortstr),
    (REPLY_TO, "reply_to", _decode_shortstr),
    (1 << 8, "expiration", _decode_shortstr),
    (MESSAGE_ID, "message_id", _decode_shortstr),
    (1 << 6, "timestamp", _decode_timestamp),
    (1 << 5, "message_type", _decode_shortstr),
    (1 << 4, "user_id", _decode_shortstr),
    (1 << 3, "app_id", _decode_shortstr),
    (1 << 2, "cluster_id", _decode_shortstr),
)


def decode_properties(data: bytes, offset: int) -> Props:
    """The properties of a content header, from its property flags at ``offset`` on, as
    pamqp's ``Basic.Properties.unmarshal`` decodes them. Raises ValueError (or
    struct.error, IndexError) on malformed data."""
    (flags,) = _u16.unpack_from(data, offset)
    offset += 2
    while data[offset - 1] & 1:  # more flag words follow (none are defined)
        offset += 2
    props = Props()
    for flag, name, decode in _PROPERTIES:
        if flags & flag:
            value, offset = decode(data, offset)
            setattr(props, name, value)
            if not flags & (flag - 1):
                break  # no property left
    return props


def decode_deliver(data: bytes, offset: int) -> Deliver:
    """A Basic.Deliver method's arguments, from ``offset`` (after its class and method)."""
    consumer_tag, offset = _decode_shortstr(data, offset)
    tag, bits = _tag_bits.unpack_from(data, offset)
    exchange, offset = _decode_shortstr(data, offset + 9)
    routing_key, _ = _decode_shortstr(data, offset)
    return Deliver(consumer_tag, tag, bool(bits & 1), exchange, routing_key)


def decode_return(data: bytes, offset: int) -> Return:
    """A Basic.Return method's arguments, from ``offset`` (after its class and method)."""
    (code,) = _u16.unpack_from(data, offset)
    text, offset = _decode_shortstr(data, offset + 2)
    exchange, offset = _decode_shortstr(data, offset)
    routing_key, _ = _decode_shortstr(data, offset)
    return Return(code, text, exchange, routing_key)


def decode_confirm(data: bytes, offset: int, ack: bool) -> Confirm:
    """A Basic.Ack or Basic.Nack method's arguments, from ``offset``."""
    tag, bits = _tag_bits.unpack_from(data, offset)
    return Confirm(tag, bool(bits & 1), ack)
