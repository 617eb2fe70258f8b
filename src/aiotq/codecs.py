"""Serializer and compression registries, in the manner of kombu's.

Each :class:`App` owns a :class:`Codecs` instance (no global registry), built with the
standard serializers (json, msgpack, pickle, yaml) and compressors (gzip, zlib, bzip2,
lzma). Register your own with :meth:`Codecs.register_serializer` and
:meth:`Codecs.register_compressor`.
"""

from __future__ import annotations

import base64
import bz2
import datetime as dt
import decimal
import lzma
import pickle
import re
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson

from .exceptions import ContentDisallowed, DecodeError, EncodeError, ImproperlyConfigured

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]

#: Default limit for a decompressed payload: a zip bomb stops here.
DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Serializer:
    name: str
    content_type: str
    content_encoding: str
    encode: Encoder
    decode: Decoder


@dataclass(frozen=True, slots=True)
class Compressor:
    name: str
    content_type: str
    compress: Callable[[bytes], bytes]
    #: ``decompress(data, max_size)`` raises ``DecodeError`` past ``max_size`` bytes.
    decompress: Callable[[bytes, int], bytes]


# -- json: orjson, with tagged values so datetimes, UUIDs, Decimals and bytes survive ----

_TAG = "__aiotq__"


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {_TAG: "time", "v": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {_TAG: "uuid", "v": str(value)}
    if isinstance(value, decimal.Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_JSON_DECODERS: dict[str, Callable[[str], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "uuid": uuid.UUID,
    "decimal": decimal.Decimal,
    "bytes": base64.b64decode,
}

# Native datetime/UUID output of orjson would lose the type on the way back: tag them too.
_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag is not None and len(value) == 2 and tag in _JSON_DECODERS:
            return _JSON_DECODERS[tag](value["v"])
        return {k: _untag(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value


def _has_tag(data: bytes) -> bool:
    return _TAG.encode() in data


#: What orjson writes for a UUID. Only when its output holds one can a UUID object have
#: been flattened to a string, so only then is the (slower) tagging walk needed.
_UUID_TEXT = re.compile(rb'"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"')


def json_dumps(value: Any) -> bytes:
    data = orjson.dumps(value, default=_json_default, option=_JSON_OPTIONS)
    if _UUID_TEXT.search(data) is None:
        return data
    return orjson.dumps(_preconvert(value), default=_json_default, option=_JSON_OPTIONS)


def _preconvert(value: Any) -> Any:
    # orjson writes UUIDs as plain strings, which would come back as str: tag them first.
    # Exact type checks: this walks every message's arguments, so it must be cheap.
    kind = type(value)
    if kind is dict:
        return {k: _preconvert(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_preconvert(v) for v in value]
    if kind is uuid.UUID:
        return _json_default(value)
    if isinstance(value, uuid.UUID | dict | list | tuple):
        return _preconvert(_exact(value))
    return value


def _exact(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return uuid.UUID(int=value.int)
    if isinstance(value, dict):
        return dict(value)
    return list(value)


def json_loads(data: bytes) -> Any:
    value = orjson.loads(data)
    return _untag(value) if _has_tag(data) else value


# -- msgpack: ext types for the same values ----------------------------------------------


def msgpack_dumps(value: Any) -> bytes:
    data: bytes = msgpack.packb(value, default=_json_default, use_bin_type=True,
                                datetime=False)
    return data


def msgpack_loads(data: bytes) -> Any:
    value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    return _untag(value) if _has_tag(data) else value


def pickle_dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def pickle_loads(data: bytes) -> Any:
    return pickle.loads(data)  # only reached when pickle is in accept_content


def yaml_dumps(value: Any) -> bytes:
    import yaml

    return yaml.safe_dump(value, allow_unicode=True).encode("utf-8")


def yaml_loads(data: bytes) -> Any:
    import yaml

    return yaml.safe_load(data)


# -- compression ---------------------------------------------------------------------------


def _bounded(decompressobj: Any, data: bytes, max_size: int) -> bytes:
    out = decompressobj.decompress(data, max_size + 1)
    if len(out) > max_size:
        raise DecodeError(f"decompressed payload exceeds {max_size} bytes")
    return bytes(out)


def _zlib_decompress(wbits: int) -> Callable[[bytes, int], bytes]:
    def decompress(data: bytes, max_size: int) -> bytes:
        return _bounded(zlib.decompressobj(wbits), data, max_size)

    return decompress


def _bz2_decompress(data: bytes, max_size: int) -> bytes:
    return _bounded(bz2.BZ2Decompressor(), data, max_size)


def _lzma_decompress(data: bytes, max_size: int) -> bytes:
    return _bounded(lzma.LZMADecompressor(), data, max_size)


class Codecs:
    """The serializers and compressors one app knows, by name and by content type."""

    def __init__(self) -> None:
        self._serializers: dict[str, Serializer] = {}
        self._by_content_type: dict[str, Serializer] = {}
        self._compressors: dict[str, Compressor] = {}
        self._compressors_by_type: dict[str, Compressor] = {}
        self.register_serializer("json", json_dumps, json_loads, "application/json")
        self.register_serializer("msgpack", msgpack_dumps, msgpack_loads,
                                 "application/x-msgpack", content_encoding="binary")
        self.register_serializer("pickle", pickle_dumps, pickle_loads,
                                 "application/x-python-serialize", content_encoding="binary")
        self.register_serializer("yaml", yaml_dumps, yaml_loads, "application/x-yaml")
        # As kombu does: "gzip" and "zlib" write zlib data labelled application/x-gzip, so
        # Celery reads them; reading accepts zlib and gzip data alike (wbits 47).
        self.register_compressor("gzip", zlib.compress, _zlib_decompress(47),
                                 "application/x-gzip",
                                 aliases=("zlib", "application/x-zlib", "application/gzip"))
        self.register_compressor("bzip2", bz2.compress, _bz2_decompress,
                                 "application/x-bz2", aliases=("bz2",))
        self.register_compressor("lzma", lzma.compress, _lzma_decompress,
                                 "application/x-lzma", aliases=("xz",))

    # -- registration --

    def register_serializer(
        self,
        name: str,
        encode: Encoder,
        decode: Decoder,
        content_type: str,
        content_encoding: str = "utf-8",
    ) -> None:
        """Register a serializer under ``name`` (replacing any of that name)."""
        serializer = Serializer(name, content_type, content_encoding, encode, decode)
        self._serializers[name] = serializer
        self._by_content_type[content_type] = serializer

    def register_compressor(
        self,
        name: str,
        compress: Callable[[bytes], bytes],
        decompress: Callable[[bytes, int], bytes] | Callable[[bytes], bytes],
        content_type: str,
        aliases: Iterable[str] = (),
    ) -> None:
        """Register a compressor. ``decompress`` may take ``(data, max_size)`` or ``(data)``;
        a one-argument one is checked against the limit after the fact."""
        bounded = _as_bounded(decompress)
        compressor = Compressor(name, content_type, compress, bounded)
        self._compressors[name] = compressor
        for key in (name, content_type, *aliases):
            self._compressors_by_type[key] = compressor

    # -- lookups --

    def serializer(self, name: str) -> Serializer:
        try:
            return self._serializers[name]
        except KeyError:
            raise ImproperlyConfigured(
                f"unknown serializer {name!r}; known: {', '.join(sorted(self._serializers))}"
            ) from None

    def compressor(self, name: str) -> Compressor:
        try:
            return self._compressors_by_type[name]
        except KeyError:
            raise ImproperlyConfigured(
                f"unknown compression {name!r}; known: {', '.join(sorted(self._compressors))}"
            ) from None

    def name_for(self, content_type: str) -> str | None:
        """The serializer name of a content type (to re-send a message as it came)."""
        codec = self._by_content_type.get(content_type)
        return codec.name if codec is not None else None

    def content_types(self, names: Iterable[str]) -> frozenset[str]:
        """Content types for an ``accept_content`` list of names or content types."""
        out = set()
        for name in names:
            out.add(self._serializers[name].content_type if name in self._serializers else name)
        return frozenset(out)

    # -- encode / decode --

    def encode(self, value: Any, serializer: str) -> tuple[bytes, str, str]:
        """Return ``(payload, content_type, content_encoding)``."""
        codec = self.serializer(serializer)
        try:
            return codec.encode(value), codec.content_type, codec.content_encoding
        except Exception as exc:
            raise EncodeError(f"cannot serialize with {serializer}: {exc}") from exc

    def decode(self, data: bytes, content_type: str, accept: frozenset[str] | None) -> Any:
        if accept is not None and content_type not in accept:
            raise ContentDisallowed(f"refusing content of type {content_type!r}")
        codec = self._by_content_type.get(content_type)
        if codec is None:
            raise DecodeError(f"no serializer for content type {content_type!r}")
        try:
            return codec.decode(data)
        except Exception as exc:
            raise DecodeError(f"cannot deserialize {content_type}: {exc}") from exc

    def compress(self, data: bytes, compression: str) -> tuple[bytes, str]:
        codec = self.compressor(compression)
        try:
            return codec.compress(data), codec.content_type
        except Exception as exc:
            raise EncodeError(f"cannot compress with {compression}: {exc}") from exc

    def decompress(self, data: bytes, compression: str, max_size: int) -> bytes:
        codec = self._compressors_by_type.get(compression)
        if codec is None:
            raise DecodeError(f"unknown compression {compression!r}")
        try:
            return codec.decompress(data, max_size)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"cannot decompress {compression}: {exc}") from exc


def _as_bounded(
    decompress: Callable[[bytes, int], bytes] | Callable[[bytes], bytes],
) -> Callable[[bytes, int], bytes]:
    import inspect

    try:
        arity = len(inspect.signature(decompress).parameters)
    except (TypeError, ValueError):
        arity = 2
    if arity >= 2:
        return decompress  # type: ignore[return-value]
    single: Callable[[bytes], bytes] = decompress  # type: ignore[assignment]

    def checked(data: bytes, max_size: int) -> bytes:
        out = single(data)
        if len(out) > max_size:
            raise DecodeError(f"decompressed payload exceeds {max_size} bytes")
        return out

    return checked
