"""Serializer and compression registries."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
import zlib

import pytest

from aiotq.codecs import Codecs
from aiotq.exceptions import ContentDisallowed, DecodeError, ImproperlyConfigured

RICH = {"when": dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC), "day": dt.date(2026, 1, 2),
        "id": uuid.UUID(int=5), "price": decimal.Decimal("10.01"), "raw": b"\x00\x01",
        "nested": [{"id": uuid.UUID(int=6)}], "plain": [1, "two", None, 3.5, True]}


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_rich_types_survive(name: str) -> None:
    codecs = Codecs()
    payload, content_type, _ = codecs.encode(RICH, name)
    assert codecs.decode(payload, content_type, None) == RICH


@pytest.mark.parametrize("name", ["json", "msgpack", "pickle", "yaml"])
def test_every_serializer_round_trips_plain_data(name: str) -> None:
    codecs = Codecs()
    value = [[1, 2], {"a": "b"}, {"callbacks": None}]
    payload, content_type, _ = codecs.encode(value, name)
    assert codecs.decode(payload, content_type, None) == value


def test_accept_list_refuses_pickle() -> None:
    codecs = Codecs()
    payload, content_type, _ = codecs.encode([1], "pickle")
    accept = codecs.content_types(["json", "msgpack"])
    with pytest.raises(ContentDisallowed):
        codecs.decode(payload, content_type, accept)


def test_custom_serializer_and_compressor() -> None:
    codecs = Codecs()
    codecs.register_serializer("upper", lambda v: str(v).upper().encode(),
                               lambda b: b.decode().lower(), "text/x-upper")
    payload, content_type, _ = codecs.encode("abc", "upper")
    assert (payload, codecs.decode(payload, content_type, None)) == (b"ABC", "abc")
    codecs.register_compressor("rev", lambda b: b[::-1], lambda b: b[::-1], "application/x-rev")
    data, kind = codecs.compress(b"hello", "rev")
    assert codecs.decompress(data, kind, 100) == b"hello"
    with pytest.raises(DecodeError, match="exceeds"):
        codecs.decompress(data, kind, 3)


@pytest.mark.parametrize("name", ["gzip", "zlib", "bzip2", "lzma"])
def test_decompression_is_bounded(name: str) -> None:
    codecs = Codecs()
    bomb, kind = codecs.compress(b"\x00" * 5_000_000, name)
    assert len(bomb) < 100_000
    with pytest.raises(DecodeError, match="exceeds"):
        codecs.decompress(bomb, kind, 1_000_000)
    assert codecs.decompress(bomb, kind, 5_000_000) == b"\x00" * 5_000_000


def test_aliases_and_errors() -> None:
    codecs = Codecs()
    data = zlib.compress(b"x")
    assert codecs.decompress(data, "application/x-zlib", 10) == b"x"
    with pytest.raises(ImproperlyConfigured, match="unknown serializer"):
        codecs.serializer("nope")
    with pytest.raises(DecodeError):
        codecs.decode(b"{", "application/json", None)
    with pytest.raises(DecodeError):
        codecs.decompress(b"not zlib", "zlib", 10)
