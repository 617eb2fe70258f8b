"""Option resolution and validation of apply_async: pure, no broker involved."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from aiotq import App, ImproperlyConfigured
from aiotq.calling import prepare
from aiotq.clock import ManualClock
from aiotq.exceptions import EncodeError
from aiotq.retry import NO_RETRY, RetryPolicy


@pytest.fixture
def app() -> App:
    app = App("proj", broker="memory://", clock=ManualClock(1_000_000.0),
              task_routes={"proj.routed": {"queue": "from-routes", "priority": 3},
                           "proj.glob.*": "globbed"},
              task_default_priority=1)

    @app.task(queue="from-task", serializer="msgpack", priority=7)
    async def configured(x: int) -> int:
        return x

    @app.task(name="proj.routed")
    async def routed() -> None: ...

    @app.task(name="proj.glob.x")
    async def globbed() -> None: ...

    return app


def call(app: App, name: str, **options: Any) -> Any:
    return prepare(app, name, (), {}, options, app.tasks.get(name))


def test_precedence_call_over_task_over_routes_over_settings(app: App) -> None:
    name = next(n for n in app.tasks if n.endswith("configured"))
    from_task = call(app, name)
    assert from_task.outgoing.route.queue == "from-task"
    assert from_task.outgoing.message.priority == 7
    assert from_task.outgoing.message.content_type == "application/x-msgpack"
    overridden = call(app, name, queue="q", priority=9, serializer="json")
    assert overridden.outgoing.route.queue == "q"
    assert overridden.outgoing.message.priority == 9
    assert overridden.outgoing.message.content_type == "application/json"
    routed = call(app, "proj.routed")
    assert routed.outgoing.route.queue == "from-routes"
    assert routed.outgoing.message.priority == 3
    assert call(app, "proj.glob.x").outgoing.route.queue == "globbed"
    default = call(app, "unknown.task")
    assert default.outgoing.route.queue == "celery"
    assert default.outgoing.message.priority == 1


def test_callable_router(app: App) -> None:
    def router(name: str, args: Any, kwargs: Any, options: Any) -> dict[str, str] | None:
        return {"queue": "by-callable"} if name.startswith("special.") else None

    app.conf.task_routes = [router, {"*": "catch-all"}]
    assert call(app, "special.x").outgoing.route.queue == "by-callable"
    assert call(app, "plain.x").outgoing.route.queue == "catch-all"


def test_settings_changed_after_a_call_route_the_next_call(app: App) -> None:
    def route(target: App) -> tuple[str, str | None, str | None]:
        found = call(target, "plain.x").outgoing.route
        return found.queue, found.exchange, found.routing_key

    assert route(app) == ("celery", None, "celery")
    app.conf.task_default_queue = "other"
    assert route(app) == ("other", None, "other")
    app.conf.task_queues = [{"name": "other", "exchange": "tasks", "routing_key": "k"}]
    assert route(app) == ("other", "tasks", "k")
    app.conf.update(task_default_exchange="tasks", task_default_routing_key="k")
    assert route(app) == ("other", "tasks", "k")
    app.conf.task_queues = [{"name": "bound", "exchange": "tasks", "routing_key": "k"}]
    assert route(app) == ("bound", "tasks", "k")
    app.conf.task_default_routing_key = "nowhere"
    with pytest.raises(ImproperlyConfigured, match="no queue is bound"):
        route(app)
    assert route(App("fresh", broker="memory://")) == ("celery", None, "celery")


def test_countdown_and_eta(app: App) -> None:
    eta = call(app, "t", countdown=3).outgoing.eta
    assert eta == dt.datetime.fromtimestamp(1_000_003.0, dt.UTC)
    naive = dt.datetime(2030, 1, 1, 12, 0)
    resolved = call(app, "t", eta=naive).outgoing
    assert resolved.eta == naive.replace(tzinfo=dt.UTC)
    assert resolved.message.headers["eta"] == "2030-01-01T12:00:00+00:00"


def test_expires_seconds_or_datetime(app: App) -> None:
    headers = call(app, "t", expires=60).outgoing.message.headers
    assert headers["expires"] == dt.datetime.fromtimestamp(1_000_060.0, dt.UTC).isoformat()
    when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert call(app, "t", expires=when).outgoing.message.headers["expires"] == when.isoformat()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"countdown": -1}, "countdown must not be negative"),
        ({"countdown": "soon"}, "countdown must be a number"),
        ({"countdown": 1, "eta": dt.datetime(2030, 1, 1)}, "not both"),
        ({"eta": 12}, "eta must be a datetime"),
        ({"priority": 256}, "priority must be an int from 0 to 255"),
        ({"priority": -1}, "priority must be an int from 0 to 255"),
        ({"priority": True}, "priority must be an int from 0 to 255"),
        ({"serializer": "xml"}, "unknown serializer 'xml'"),
        ({"compression": "zstd-nope"}, "unknown compression"),
        ({"retry_policy": {"max_retry": 1}}, "unknown retry_policy keys"),
        ({"colour": "red"}, "unknown apply_async option"),
        ({"link": "not a signature"}, "link/link_error take signatures"),
    ],
)
def test_bad_values_are_clear_errors(app: App, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        call(app, "t", **options)


def test_unencodable_argument(app: App) -> None:
    with pytest.raises(EncodeError, match="cannot serialize with json"):
        prepare(app, "t", (object(),), {}, {})


def test_unroutable_exchange_is_an_error(app: App) -> None:
    with pytest.raises(ImproperlyConfigured, match="no queue is bound"):
        call(app, "t", exchange="nowhere", routing_key="x")


def test_retry_options(app: App) -> None:
    assert call(app, "t", retry=False).policy is NO_RETRY
    assert call(app, "t").policy == RetryPolicy()
    custom = call(app, "t", retry_policy={"max_retries": 1, "interval_start": 0.5})
    assert custom.policy == RetryPolicy(1, 0.5, 0.2, 0.2)
    app.conf.update(task_publish_retry=False)
    assert call(app, "t").policy is NO_RETRY


def test_envelope_follows_protocol_v2(app: App) -> None:
    prepared = prepare(app, "proj.add", (2, 2), {"z": 1},
                       {"task_id": "abc", "countdown": 1, "link": app.signature("proj.cb")})
    message = prepared.outgoing.message
    headers = message.headers
    assert headers["lang"] == "py" and headers["task"] == "proj.add" and headers["id"] == "abc"
    assert headers["root_id"] == "abc" and headers["parent_id"] is None
    assert headers["retries"] == 0 and headers["timelimit"] == [None, None]
    assert headers["argsrepr"] == "(2, 2)" and headers["kwargsrepr"] == "{'z': 1}"
    assert message.correlation_id == "abc" and message.delivery_mode == 2
    import orjson

    args, kwargs, embed = orjson.loads(message.body)
    assert (args, kwargs) == ([2, 2], {"z": 1})
    assert embed["callbacks"][0]["task"] == "proj.cb"
    assert set(embed) == {"callbacks", "errbacks", "chain", "chord"}
