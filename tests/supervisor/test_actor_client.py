"""ActorClient without a Ray cluster: lookup, the timeout on every call, and the translation table."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayTaskError

from tradetree.core.config import ActorCallConfig
from tradetree.core.errors import (
    ActorDied,
    ActorNotFound,
    CallFailed,
    CallTimeout,
    DuplicateClientOrderId,
)
from tradetree.supervisor import ActorClient, RayBackend, translate_ray_error


def _task_error(cause: Exception) -> RayTaskError:
    """What Ray raises to the caller when the method raised ``cause`` (an instance of both)."""
    return RayTaskError("m", "Traceback: ...", cause).as_instanceof_cause()


class _Method:
    def __init__(self, result):
        self.result = result
        self.calls: list[tuple] = []

    def remote(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


class _Handle:
    def __init__(self, **methods):
        for name, result in methods.items():
            setattr(self, name, _Method(result))


def _async_ref(value=None, exc: BaseException | None = None, delay: float = 0.0):
    async def ref():
        if delay:
            await asyncio.sleep(delay)
        if exc is not None:
            raise exc
        return value
    return ref()


class _Registry:
    def __init__(self, **actors):
        self.actors = dict(actors)
        self.lookups: list[tuple[str, str | None]] = []

    def __call__(self, name, namespace):
        self.lookups.append((name, namespace))
        if name not in self.actors:
            raise ValueError(f"Failed to look up actor with name '{name}'")
        return self.actors[name]


def _sync_get(ref, timeout_secs):
    if isinstance(ref, BaseException):
        raise ref
    if ref == "hang":
        raise GetTimeoutError(f"Get timed out: some object(s) not ready after {timeout_secs}s")
    return ref


# -- translation -------------------------------------------------------------------------------

@pytest.mark.parametrize(("exc", "kind", "text"), [
    (GetTimeoutError("not ready"), CallTimeout, "gw.submit_order() did not answer within 2s"),
    (TimeoutError(), CallTimeout, "did not answer"),
    (ActorUnavailableError("restarting", None), CallFailed, "actor unavailable"),
    (ValueError("Failed to look up actor"), ActorNotFound, "Failed to look up"),
    (_task_error(ValueError("bad intent")), CallFailed, "raised ValueError: bad intent"),
    (_task_error(TimeoutError("inner")), CallFailed, "raised TimeoutError"),
    (RuntimeError("odd"), CallFailed, "RuntimeError: odd"),
])
def test_translation_table(exc, kind, text):
    err = translate_ray_error(exc, "gw.submit_order()", timeout_secs=2)
    assert type(err) is kind and text in str(err)


def test_a_dead_actor_is_actor_died_and_an_intended_exit_says_so():
    died = ActorDiedError()
    died.error_msg = "The actor died unexpectedly.\nkilled by `ray.kill`."
    err = translate_ray_error(died, "x.y()")
    assert isinstance(err, ActorDied) and not err.intended and "ray.kill" in str(err)
    exited = ActorDiedError()
    exited.error_msg = "Worker exit type: INTENDED_USER_EXIT"
    assert translate_ray_error(exited, "x.y()").intended


# -- the client ----------------------------------------------------------------------------------

def test_every_call_has_a_timeout_and_none_is_refused():
    assert ActorClient().timeout_secs == ActorCallConfig().call_timeout_secs
    assert ActorClient(config=ActorCallConfig(call_timeout_secs=4)).timeout_secs == 4
    with pytest.raises(ValueError, match="positive timeout"):
        ActorClient(timeout_secs=0)
    client = ActorClient(lookup=_Registry(gw=_Handle(stats={})), get=_sync_get)
    with pytest.raises(ValueError, match="positive timeout"):
        client.call_sync("gw", "stats", timeout_secs=-1)


def test_call_sync_looks_up_once_and_passes_arguments():
    handle = _Handle(pause={"ok": True})
    registry = _Registry(s1=handle)
    client = ActorClient("ns", lookup=registry, get=_sync_get, timeout_secs=5)
    assert client.call_sync("s1", "pause", "SAFE MODE", force=True) == {"ok": True}
    assert client.call_sync("s1", "pause", "again") == {"ok": True}
    assert registry.lookups == [("s1", "ns")]
    assert handle.pause.calls == [(("SAFE MODE",), {"force": True}), (("again",), {})]


def test_a_missing_actor_is_actor_not_found_naming_it_and_the_namespace():
    client = ActorClient("ns", lookup=_Registry(), get=_sync_get)
    with pytest.raises(ActorNotFound, match="no actor named 'Alerter' in namespace 'ns'"):
        client.call_sync("Alerter", "recent")


def test_a_timeout_is_call_timeout_and_the_handle_is_looked_up_again():
    registry = _Registry(gw=_Handle(stats="hang"))
    client = ActorClient(lookup=registry, get=_sync_get, timeout_secs=1.5)
    with pytest.raises(CallTimeout, match=r"gw.stats\(\) did not answer within 1.5s"):
        client.call_sync("gw", "stats")
    registry.actors["gw"] = _Handle(stats={"n": 1})
    assert client.call_sync("gw", "stats") == {"n": 1}
    assert len(registry.lookups) == 2


def test_a_project_error_the_method_raised_reaches_the_caller_as_is():
    dup = DuplicateClientOrderId("client order id c1 is already recorded")
    client = ActorClient(lookup=_Registry(gw=_Handle(submit_order=_task_error(dup))), get=_sync_get)
    with pytest.raises(DuplicateClientOrderId, match="c1 is already recorded"):
        client.call_sync("gw", "submit_order", object())


def test_a_missing_method_is_call_failed():
    client = ActorClient(lookup=_Registry(gw=_Handle()), get=_sync_get)
    with pytest.raises(CallFailed, match="no such method"):
        client.call_sync("gw", "nope")


async def test_async_call_times_out_on_a_hung_actor():
    handle = _Handle()
    handle.submit_order = _Method(_async_ref("late", delay=5))
    client = ActorClient(lookup=_Registry(gw=handle), timeout_secs=0.05)
    with pytest.raises(CallTimeout, match=r"gw.submit_order\(\) did not answer within 0.05s"):
        await client.call("gw", "submit_order", "intent")


async def test_async_call_after_a_death_resolves_the_re_created_actor():
    died = ActorDiedError()
    died.error_msg = "The actor died unexpectedly."
    first = _Handle()
    first.cancel_order = _Method(_async_ref(exc=died))
    registry = _Registry(gw=first)
    client = ActorClient(lookup=registry, timeout_secs=1)
    with pytest.raises(ActorDied):
        await client.call("gw", "cancel_order", "c1")
    second = _Handle()
    second.cancel_order = _Method(_async_ref("canceled"))
    registry.actors["gw"] = second
    assert await client.call("gw", "cancel_order", "c1") == "canceled"


async def test_async_project_error_passes_through():
    handle = _Handle()
    handle.submit_order = _Method(_async_ref(exc=_task_error(DuplicateClientOrderId("dup"))))
    client = ActorClient(lookup=_Registry(gw=handle), timeout_secs=1)
    with pytest.raises(DuplicateClientOrderId):
        await client.call("gw", "submit_order", "intent")


def test_tell_never_raises_and_says_whether_it_was_sent():
    handle = _Handle(pause=None)
    client = ActorClient(lookup=_Registry(s1=handle))
    assert client.tell("s1", "pause", "SAFE MODE: x") is True
    assert handle.pause.calls == [(("SAFE MODE: x",), {})]
    assert client.tell("missing", "pause", "x") is False


async def test_a_slow_lookup_counts_against_the_call_timeout():
    def slow_lookup(name, namespace):
        time.sleep(0.5)
        return _Handle(stats={"n": 1})

    client = ActorClient(lookup=slow_lookup, timeout_secs=0.1)
    started = time.monotonic()
    with pytest.raises(CallTimeout, match=r"gw.stats\(\) did not answer within 0.1s"):
        await client.call("gw", "stats")
    assert time.monotonic() - started < 0.4


# -- the supervisor's backend: the same handle-level call, project errors not passed through ------

async def test_ray_backend_makes_a_childs_project_error_a_call_failed():
    handle = _Handle()
    handle.start = _Method(_async_ref(exc=_task_error(DuplicateClientOrderId("dup"))))
    with pytest.raises(CallFailed, match=r"start\(\) raised DuplicateClientOrderId: dup"):
        await RayBackend().call(handle, "start", timeout_secs=1)


async def test_ray_backend_translates_a_refused_submission_with_the_shared_table():
    class _Refusing:
        def remote(self, *args, **kwargs):
            raise ActorUnavailableError("restarting", None)

    handle = _Handle()
    handle.check_health = _Refusing()
    with pytest.raises(CallFailed, match="actor unavailable"):
        await RayBackend().call(handle, "check_health", timeout_secs=1)
    with pytest.raises(CallFailed, match="no such method"):
        await RayBackend().call(handle, "nope", timeout_secs=1)
    with pytest.raises(CallTimeout, match=r"stats\(\) did not answer within 0.05s"):
        await RayBackend().call(_Handle(stats=_async_ref("late", delay=5)), "stats", timeout_secs=0.05)
