"""Actors that answer only the holders of their cluster's secret.

Any driver connected to a Ray cluster can list the named actors of every
namespace and call them. A raytfnode cluster's queue actors and coordinator
hold its training rows, its nodes' state and errors; no other job should read
or disturb them just by finding their names. So every such actor is created
with a random secret, and the only method it offers is :meth:`call`, which
checks the secret before it runs one of the body's methods. The driver, the
TF nodes and the producers (Spark tasks, Ray tasks) hold a
:class:`GuardedHandle`: the actor handle and the secret, which travels inside
the feed target and the node's manager, never in a name.

This keeps a job from reading another's feed by accident or curiosity. It is
not a defence against code that sets out to attack: Ray treats every job on a
cluster as trusted (see the README's Security section).
"""
import hmac
import inspect
import secrets

import ray


def new_secret():
    """A random secret for one cluster (or one ``TFManager``): 32 hex characters, as bytes."""
    return secrets.token_hex(16).encode("ascii")


def as_secret(key):
    """``key`` (bytes or str, as TensorFlowOnSpark's ``authkey``) as bytes; ``None`` stays ``None``."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    raise TypeError("an authkey must be bytes or str, got {}".format(type(key).__name__))


class AccessDeniedError(PermissionError):
    """A call to a raytfnode actor without its cluster's secret."""


class _GuardedActor:
    """Actor body: the real body, reachable only through :meth:`call` with the secret."""

    def __init__(self, body_class, secret, *args, **kwargs):
        self._secret = secret
        self._body = body_class(*args, **kwargs)
        self._name = body_class.__name__.lstrip("_")

    async def call(self, secret, method, *args, **kwargs):
        """Runs ``method`` of the body with ``args`` when ``secret`` is the actor's; else refuses."""
        if not isinstance(secret, bytes) or not hmac.compare_digest(secret, self._secret):
            raise AccessDeniedError("this raytfnode {} actor answers only its own cluster: the call to {}() came "
                                    "without the cluster's secret (TFManager.connect(address, authkey) needs "
                                    "cluster_info[i]['authkey'])".format(self._name, method))
        if method.startswith("_") or not callable(getattr(self._body, method, None)):
            raise AttributeError("a raytfnode {} actor has no method {!r}".format(self._name, method))
        result = getattr(self._body, method)(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result


def guarded_actor(body_class, **ray_options):
    """A Ray actor class whose instances run ``body_class`` behind a secret.

    Create one with ``cls.options(...).remote(secret, *body_args)`` and call it through
    :class:`GuardedHandle`. The actor is async (its body's coroutines run on its event
    loop; plain methods run there one at a time).
    """
    class Guarded(_GuardedActor):
        def __init__(self, secret, *args, **kwargs):
            super().__init__(body_class, secret, *args, **kwargs)

    Guarded.__name__ = Guarded.__qualname__ = body_class.__name__.lstrip("_") + "Actor"
    return ray.remote(**ray_options)(Guarded)


class _GuardedMethod:
    __slots__ = ("_actor", "_secret", "_name")

    def __init__(self, actor, secret, name):
        self._actor, self._secret, self._name = actor, secret, name

    def remote(self, *args, **kwargs):
        return self._actor.call.remote(self._secret, self._name, *args, **kwargs)


class GuardedHandle:
    """A handle to a guarded actor that passes the secret on every call: ``handle.method.remote(...)``.

    It pickles (into a Spark closure, a Ray task or another actor) with the secret.

    Attributes:
      :actor: the plain Ray actor handle (for ``ray.kill``).
    """

    def __init__(self, actor, secret):
        self.actor = actor
        self.secret = secret

    def __getattr__(self, name):
        if name.startswith("__") or name in ("actor", "secret"):
            raise AttributeError(name)
        return _GuardedMethod(self.actor, self.secret, name)

    def __reduce__(self):
        return (GuardedHandle, (self.actor, self.secret))

    def __repr__(self):
        return "GuardedHandle({!r})".format(self.actor)


def plain(handle):
    """The Ray actor handle behind ``handle`` (a :class:`GuardedHandle` or a plain handle)."""
    return handle.actor if isinstance(handle, GuardedHandle) else handle


__all__ = ["AccessDeniedError", "GuardedHandle", "as_secret", "guarded_actor", "new_secret", "plain"]
