"""The envelope every broker carries: Celery's message protocol v2.

Headers: ``lang, task, id, root_id, parent_id, group, eta, expires, retries, timelimit,
argsrepr, kwargsrepr, origin, ignore_result`` (+ ``compression``); properties
``correlation_id, reply_to, content_type, content_encoding, priority, delivery_mode``; body
``[args, kwargs, {"callbacks", "errbacks", "chain", "chord"}]`` serialized by the chosen
codec. Brokers that have no native headers (Redis, SQLite) store :func:`pack`'s bytes.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .codecs import Codecs
from .exceptions import MessageError

PROTOCOL_HEADERS = (
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin", "ignore_result",
)
REPR_LIMIT = 1024


@dataclass(slots=True)
class Message:
    """One task message, independent of the transport."""

    headers: dict[str, Any]
    body: bytes
    content_type: str
    content_encoding: str = "utf-8"
    correlation_id: str = ""
    reply_to: str | None = None
    priority: int | None = None
    delivery_mode: int = 2

    @property
    def task_id(self) -> str:
        return str(self.headers.get("id") or self.correlation_id)

    @property
    def task_name(self) -> str:
        return str(self.headers.get("task", ""))

    @property
    def eta(self) -> dt.datetime | None:
        return parse_time(self.headers.get("eta"), "eta")

    @property
    def expires(self) -> dt.datetime | None:
        return parse_time(self.headers.get("expires"), "expires")


@dataclass(slots=True)
class Embed:
    """The third element of the body: what happens after the task."""

    callbacks: list[dict[str, Any]] = field(default_factory=list)
    errbacks: list[dict[str, Any]] = field(default_factory=list)
    chain: list[dict[str, Any]] = field(default_factory=list)
    chord: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "callbacks": self.callbacks or None,
            "errbacks": self.errbacks or None,
            "chain": self.chain or None,
            "chord": self.chord,
        }


@dataclass(slots=True)
class Body:
    args: list[Any]
    kwargs: dict[str, Any]
    embed: Embed


_ORIGIN: str | None = None

#: The RFC 4122 variant nibble (``10xx``) for each random hex digit.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def new_id() -> str:
    """A random (version 4) UUID string, as ``str(uuid.uuid4())`` gives.

    Task ids are made per publish: formatting the hex ourselves costs a third of
    building a ``uuid.UUID`` and converting it back to text.
    """
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def origin() -> str:
    """``pid@host`` of this process (recomputed after a fork)."""
    global _ORIGIN
    if _ORIGIN is None:
        _ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
    return _ORIGIN


def _forget_origin() -> None:
    global _ORIGIN
    _ORIGIN = None


# Every message carries the origin: forgetting it in a forked child spares a getpid()
# system call per message. (No fork, and no hook, on Windows.)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_origin)


def format_time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_time(value: Any, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise MessageError(f"header {name!r} is not an ISO 8601 time: {value!r}") from None
    else:
        raise MessageError(f"header {name!r} has type {type(value).__name__}, not a time")
    # Celery clients before 5.x sent naive UTC times: read them as UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def safe_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


def build(
    codecs: Codecs,
    *,
    task_name: str,
    task_id: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    embed: Embed,
    serializer: str,
    compression: str | None,
    eta: dt.datetime | None,
    expires: dt.datetime | None,
    root_id: str | None,
    parent_id: str | None,
    group_id: str | None,
    group_index: int | None,
    retries: int,
    time_limit: tuple[float | None, float | None],
    ignore_result: bool,
    reply_to: str | None,
    priority: int | None,
    shadow: str | None = None,
    extra_headers: Mapping[str, Any] | None = None,
) -> Message:
    """Serialize a call into a :class:`Message`."""
    payload, content_type, content_encoding = codecs.encode(
        [list(args), dict(kwargs), embed.as_dict()], serializer
    )
    headers: dict[str, Any] = {
        **(extra_headers or {}),
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "shadow": shadow,
        "eta": format_time(eta),
        "expires": format_time(expires),
        "group": group_id,
        "group_index": group_index,
        "retries": retries,
        "timelimit": list(time_limit),
        "root_id": root_id or task_id,
        "parent_id": parent_id,
        "argsrepr": safe_repr(tuple(args)),
        "kwargsrepr": safe_repr(dict(kwargs)),
        "origin": origin(),
        "ignore_result": ignore_result,
    }
    if compression:
        payload, headers["compression"] = codecs.compress(payload, compression)
    return Message(
        headers=headers,
        body=payload,
        content_type=content_type,
        content_encoding=content_encoding,
        correlation_id=task_id,
        reply_to=reply_to,
        priority=priority,
    )


def validate(message: Message) -> None:
    """Check the headers a worker relies on; raise :class:`MessageError` if one is off."""
    headers = message.headers
    if not isinstance(headers, dict):
        raise MessageError("headers are not a mapping")
    for name in ("task", "id"):
        if not isinstance(headers.get(name), str) or not headers[name]:
            raise MessageError(f"header {name!r} is missing or not a string")
    if not isinstance(headers.get("retries", 0) or 0, int):
        raise MessageError("header 'retries' is not an integer")
    message.eta  # noqa: B018 - parsing validates
    message.expires  # noqa: B018


def decode_body(
    codecs: Codecs, message: Message, accept: frozenset[str], max_size: int
) -> Body:
    """Decompress (bounded) and deserialize the body; check its shape."""
    data = message.body
    if len(data) > max_size:
        raise MessageError(f"body of {len(data)} bytes exceeds the limit of {max_size}")
    compression = message.headers.get("compression")
    if compression:
        data = codecs.decompress(data, str(compression), max_size)
    value = codecs.decode(data, message.content_type, accept)
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise MessageError("body is not [args, kwargs, embed]")
    args, kwargs, embed = value
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise MessageError("body args is not a list or kwargs not a mapping")
    embed = embed or {}
    if not isinstance(embed, dict):
        raise MessageError("body embed is not a mapping")
    return Body(
        list(args),
        kwargs,
        Embed(
            callbacks=list(embed.get("callbacks") or []),
            errbacks=list(embed.get("errbacks") or []),
            chain=list(embed.get("chain") or []),
            chord=embed.get("chord"),
        ),
    )


# -- packing for brokers without native headers ---------------------------------------


def pack(message: Message) -> bytes:
    """One compact frame holding the whole message (headers, properties, body)."""
    frame: bytes = msgpack.packb(
        [
            message.headers,
            message.content_type,
            message.content_encoding,
            message.correlation_id,
            message.reply_to,
            message.priority,
            message.body,
        ],
        use_bin_type=True,
    )
    return frame


def unpack(frame: bytes) -> Message:
    """Inverse of :func:`pack`; raises :class:`MessageError` on anything else."""
    try:
        value = msgpack.unpackb(frame, raw=False, strict_map_key=False)
        headers, content_type, content_encoding, correlation_id, reply_to, priority, body = value
    except Exception as exc:
        raise MessageError(f"not an aiotq message frame: {exc}") from exc
    if not isinstance(headers, dict) or not isinstance(body, bytes):
        raise MessageError("not an aiotq message frame: wrong field types")
    return Message(
        headers=headers,
        body=body,
        content_type=str(content_type),
        content_encoding=str(content_encoding),
        correlation_id=str(correlation_id or ""),
        reply_to=reply_to,
        priority=priority if isinstance(priority, int) else None,
    )


# -- result metas as Celery's clients read them ---------------------------------------
# The redis:// and rpc:// result backends share their results with Celery, so they store
# metas in Celery's shape and read Celery's back into aiotq's.

_REVOKED = "TaskRevokedError"


def _rename_revoked(result: Any, old: str, new: str) -> Any:
    if (isinstance(result, dict) and result.get("exc_type") == _REVOKED
            and result.get("exc_module") == old):
        return {**result, "exc_module": new}
    return result


def meta_to_celery(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` as Celery stores it: each child as a result tuple ``[[id, parent], None]``
    (Celery's ``AsyncResult`` rebuilds its children from these tuples), and a revoked task's
    error as Celery's own ``TaskRevokedError``, which Celery clients catch by that class."""
    children = meta.get("children")
    result = _rename_revoked(meta.get("result"), "aiotq.exceptions", "celery.exceptions")
    if not children and result is meta.get("result"):
        return meta
    return {**meta, "result": result,
            "children": [[[child, None], None] for child in children or ()]}


def _child_id(child: Any) -> Any:
    # A result tuple is [[id, parent], None]; a group's is [[id, parent], [members]].
    if isinstance(child, list | tuple) and child and isinstance(child[0], list | tuple):
        return child[0][0]
    return child


def meta_from_celery(meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`meta_to_celery`, for metas either side stored."""
    children = meta.get("children")
    result = _rename_revoked(meta.get("result"), "celery.exceptions", "aiotq.exceptions")
    if not children and result is meta.get("result"):
        return meta
    return {**meta, "result": result, "children": [_child_id(c) for c in children or ()]}
