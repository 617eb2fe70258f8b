"""aiotq's AMQP frame encoders write exactly pamqp's bytes (and raise pamqp's errors)."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import random
import struct
from collections.abc import Iterator
from typing import Any

import pamqp.frame
import pytest
from pamqp import encode as pamqp_encode
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from aiotq import _amqp_wire as wire
from aiotq.codecs import Codecs
from aiotq.message import Embed, build

UUID = "5b0f6a3e-4b8a-4a39-9c4e-1a2b3c4d5e6f"


def celery_headers(**options: Any) -> dict[str, Any]:
    """The headers aiotq's calling path builds (Celery's protocol v2)."""
    defaults: dict[str, Any] = {
        "task_name": "proj.add", "task_id": UUID, "args": (2, 2), "kwargs": {"x": "é"},
        "embed": Embed(), "serializer": "json", "compression": None, "eta": None,
        "expires": None, "root_id": None, "parent_id": None, "group_id": None,
        "group_index": None, "retries": 0, "time_limit": (None, None),
        "ignore_result": False, "reply_to": None, "priority": None,
    }
    return build(Codecs(), **{**defaults, **options}).headers


INTEGERS = [0, 1, -1, 127, 128, -128, -129, 32767, 32768, -32768, -32769, 65535, 65536,
            2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32 - 1, 2**32, 2**63 - 1, -(2**63)]

TABLES: list[dict[str, Any]] = [
    {},
    celery_headers(),
    celery_headers(eta=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), group_id="g", group_index=3,
                   retries=70000, time_limit=(30.0, 10), ignore_result=True,
                   compression="zlib", parent_id="p", root_id="r"),
    {"stamps": {"a": ["x", 1, None, True, 2.5]}, "stamped_headers": None,
     "replaced_task_nesting": 0, "x-aiotq-deliveries": 3, "x-aiotq-priority": 255,
     "x-aiotq-reason": "poison: delivered 6 times", "x-aiotq-dead-at": 1767225600.25},
    {f"n{i}": value for i, value in enumerate(INTEGERS)},
    {"empty": "", "unicode": "żółw 🐢", "nested": {"deeper": {"list": [[], {}, [[1]]]}},
     "false": False, "floats": [0.0, -1.5, 1e30, float("inf")]},
    # Values pamqp encodes itself (aiotq hands them over): the bytes are its bytes.
    {"decimal": decimal.Decimal("10.01"), "when": dt.datetime(2026, 1, 2, 3, 4, 5),
     "raw": bytearray(b"\x00\x01"), "ordered": collections.OrderedDict(b=1, a=2)},
]


@pytest.mark.parametrize("table", TABLES)
def test_tables_are_pamqps_bytes(table: dict[str, Any]) -> None:
    assert wire.table(table) == pamqp_encode.field_table(table)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(INTEGERS) + rng.choice([0, 0, 1, -1])
    if kind == 3:
        return rng.uniform(-1e6, 1e6)
    if kind in (4, 5):
        return "".join(rng.choice("aZ9 _-é中🙂") for _ in range(rng.randrange(40)))
    if kind == 6:
        return rng.choice(["", "py", UUID])
    if kind == 7:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    return {f"k{rng.randrange(50)}": random_value(rng, depth + 1)
            for _ in range(rng.randrange(6))}


def random_tables(count: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(20261126)
    for _ in range(count):
        yield {rng.choice(["id", "task", "eta", "ä", "x-y", "k"]) + str(rng.randrange(9)):
               random_value(rng) for _ in range(rng.randrange(20))}


def test_random_tables_are_pamqps_bytes() -> None:
    for table in random_tables(500):
        try:
            expected = pamqp_encode.field_table(table)
        except (TypeError, struct.error):
            with pytest.raises((TypeError, struct.error)):
                wire.table(table)
            continue
        assert wire.table(table) == expected, table


def test_a_header_layout_is_sorted_once_and_still_right_when_values_change() -> None:
    for retries in (0, 1, 300):
        headers = celery_headers(retries=retries)
        assert wire.table(headers) == pamqp_encode.field_table(headers)


def test_long_keys_are_truncated_as_pamqp_does() -> None:
    table = {"k" * 200: 1, "short": "x"}
    assert wire.table(table) == pamqp_encode.field_table(table)


@pytest.mark.parametrize("value", [b"bytes", (1, 2), {1, 2}, object(), 2**64, -(2**63) - 1])
def test_unsupported_values_raise_pamqps_error(value: Any) -> None:
    with pytest.raises(TypeError) as expected:
        pamqp_encode.field_table({"key": value})
    with pytest.raises(TypeError) as got:
        wire.table({"key": value})
    assert str(got.value) == str(expected.value)


def test_a_key_that_is_not_a_string_raises_pamqps_error() -> None:
    with pytest.raises(AttributeError):
        pamqp_encode.field_table({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(AttributeError):
        wire.table({1: "x"})  # type: ignore[dict-item]


def test_float_overflow_raises_as_pamqp_does() -> None:
    with pytest.raises(OverflowError):
        pamqp_encode.field_table({"x": 1e300})
    with pytest.raises(OverflowError):
        wire.table({"x": 1e300})


def test_deprecated_rabbitmq_integers_follow_pamqps_switch() -> None:
    table = {f"n{i}": value for i, value in enumerate(INTEGERS)}
    pamqp_encode.support_deprecated_rabbitmq(True)
    try:
        assert wire.table(table) == pamqp_encode.field_table(table)
    finally:
        pamqp_encode.support_deprecated_rabbitmq(False)


PROPERTIES: list[dict[str, Any]] = [
    {},
    {"content_type": "application/json", "content_encoding": "utf-8",
     "headers": celery_headers(), "delivery_mode": 2, "priority": 0, "correlation_id": UUID,
     "reply_to": "c7a6e0d2-reply"},
    {"headers": {}, "delivery_mode": 1, "priority": 255},
    {"content_type": "", "content_encoding": "", "correlation_id": "", "reply_to": ""},
]


@pytest.mark.parametrize("fields", PROPERTIES)
@pytest.mark.parametrize("message_id", [None, "0123456789abcdef.42"])
@pytest.mark.parametrize("body", [b"", b"[[2, 2], {}, {}]", bytes(range(256)) * 40])
def test_publish_frames_are_pamqps_bytes(fields: dict[str, Any], message_id: str | None,
                                         body: bytes) -> None:
    channel, frame_max = 7, 4096
    properties = Basic.Properties(message_id=message_id, **fields)
    chunk = frame_max - 8
    expected = b"".join([
        pamqp.frame.marshal(Basic.Publish(exchange="tasks", routing_key="math.add",
                                          mandatory=True), channel),
        pamqp.frame.marshal(ContentHeader(body_size=len(body), properties=properties),
                            channel),
        *(pamqp.frame.marshal(ContentBody(body[i:i + chunk]), channel)
          for i in range(0, len(body), chunk)),
    ])
    encoded = wire.properties(**{
        name: fields.get(name) for name in (
            "content_type", "content_encoding", "headers", "delivery_mode", "priority",
            "correlation_id", "reply_to")
    })
    frames = [wire.publish_method(channel, "tasks", "math.add", True),
              *wire.content(channel, *encoded, message_id, body, frame_max)]
    assert b"".join(frames) == expected


def test_a_body_of_exactly_one_frame_is_one_frame() -> None:
    body = b"x" * (4096 - 8)
    frames = wire.content(1, 0, b"", None, body, 4096)
    assert b"".join(frames) == b"".join([
        pamqp.frame.marshal(ContentHeader(body_size=len(body)), 1),
        pamqp.frame.marshal(ContentBody(body), 1),
    ])


@pytest.mark.parametrize(("exchange", "key", "mandatory"),
                         [("", "celery", False), ("", "", True), ("a.b:c@d#e,f/g+h i", "k", True)])
def test_publish_methods_are_pamqps_bytes(exchange: str, key: str, mandatory: bool) -> None:
    expected = pamqp.frame.marshal(
        Basic.Publish(exchange=exchange, routing_key=key, mandatory=mandatory), 3)
    assert wire.publish_method(3, exchange, key, mandatory) == expected


@pytest.mark.parametrize(("exchange", "key"), [("bad*name", ""), ("x" * 128, ""), ("", "k" * 256)])
def test_invalid_names_raise_value_error(exchange: str, key: str) -> None:
    with pytest.raises(ValueError):
        wire.publish_method(1, exchange, key, True)


def test_invalid_properties_raise_as_pamqp_does() -> None:
    with pytest.raises(ValueError, match="delivery_mode"):
        wire.properties(content_type=None, content_encoding=None, headers=None,
                        delivery_mode=3, priority=None, correlation_id=None, reply_to=None)
    with pytest.raises(TypeError):
        wire.properties(content_type="x" * 256, content_encoding=None, headers=None,
                        delivery_mode=None, priority=None, correlation_id=None,
                        reply_to=None)
    with pytest.raises(struct.error):
        wire.properties(content_type=None, content_encoding=None, headers=None,
                        delivery_mode=None, priority=256, correlation_id=None,
                        reply_to=None)


@pytest.mark.parametrize(("tag", "multiple"), [(1, False), (2**40, True), (2**63 - 1, False)])
def test_acks_are_pamqps_bytes(tag: int, multiple: bool) -> None:
    expected = pamqp.frame.marshal(Basic.Ack(delivery_tag=tag, multiple=multiple), 9)
    assert wire.ack(9, tag, multiple) == expected
