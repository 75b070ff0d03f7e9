"""Where stage work runs: in this process, or on Ray actors (one model or backbone replica per worker).

Both executors have one method, ``map(factory, method, items)``: build workers with ``factory()``
(a picklable callable: the model or metric is loaded *on* the worker), call ``worker.<method>(*args)``
for every ``(tag, args)`` item, and yield ``(tag, result)`` as results arrive (the tag stays with the
driver and says what the result belongs to).

The driver does all file writes (it owns the run folder and its tables), so a worker that dies can
leave no partial file behind, and nothing about the run folder has to be shared with the workers:
items carry image bytes, not paths. At most a few items per worker are in flight, so neither the
driver nor the object store holds a whole sweep's images.

Failure: a Ray worker process that dies is restarted by Ray and its in-flight item is retried
(``max_restarts`` / ``max_task_retries``); work is deterministic, so the retry gives the same bytes.
A worker that raises stops the map after the other in-flight items are collected: everything
finished is saved by the caller, and a rerun resumes the rest.
"""
from __future__ import annotations

import collections
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import EvalkitError
from ..registry import Registry

IN_FLIGHT_PER_WORKER = 2  # one computing, one queued: workers never idle waiting for the driver
RESTARTS = 3  # a worker (and its in-flight item) is restarted/retried this often before the run stops
# What the default local cluster is started with, so that workers read the same caches and plugins as the driver.
FORWARDED_ENV = ("TORCH_HOME", "HF_HOME", "HF_HUB_OFFLINE", "XDG_CACHE_HOME", "PYTHONPATH")


class LocalExecutor:
    """One worker in this process. The next item is computed on a thread while the caller handles the
    last result (e.g. writes PNGs), so saving overlaps with rendering or scoring."""

    name = "local"
    workers = 1

    def __init__(self) -> None:
        self.load_seconds = 0.0  # time spent building replicas (loading the model or backbone) in map()

    def map(self, factory: Callable[[], Any], method: str, items: Iterable[tuple[Any, tuple]]) -> Iterator[tuple[Any, Any]]:
        iterator = iter(items)
        first = next(iterator, None)
        if first is None:
            return  # nothing to do: no model or backbone is loaded
        start = time.perf_counter()
        worker = factory()
        self.load_seconds += time.perf_counter() - start
        call = getattr(worker, method)
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalkit-local") as pool:
                # one item running, one queued behind it: the thread never waits for the caller to submit
                pending = collections.deque([(first[0], pool.submit(call, *first[1]))])
                while pending:
                    while len(pending) < IN_FLIGHT_PER_WORKER and (item := next(iterator, None)) is not None:
                        pending.append((item[0], pool.submit(call, *item[1])))
                    tag, future = pending.popleft()
                    yield tag, future.result()
        finally:
            getattr(worker, "close", lambda: None)()  # e.g. a renderer's NFE hook on a model this process keeps


@dataclass
class RayExecutor:
    """Ray actors, ``workers`` of them (default: as many as the cluster's CPUs, or GPUs / gpus_per_worker).

    ``address`` None starts a local Ray instance (a laptop); "auto" joins the cluster this machine is
    part of; "HOST:PORT" joins that cluster. The same code runs in all three cases. Every node needs
    evalkit installed (with the same versions) and its own weight caches.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    name: str = "ray"

    def __post_init__(self) -> None:
        self.ray = _import_ray()
        if not self.ray.is_initialized():
            _probe(self.address)
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            try:
                # "local": a new instance even if a stale or running cluster is recorded on this machine
                self.ray.init(address=self.address or "local", include_dashboard=False, log_to_driver=False,
                              runtime_env={"env_vars": env} if env and self.address is None else None)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                if self.address is None:
                    raise EvalkitError(f"can't start a local Ray instance ({_first_line(exc)}): check `ray status`, "
                                       "or pass --backend local") from None
                raise EvalkitError(
                    f"can't join the Ray cluster at {self.address!r} ({_first_line(exc)}): start one with `ray start "
                    "--head`; a cluster with token authentication (Ray's default) also needs RAY_AUTH_MODE=token "
                    "and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token) when joined by HOST:PORT") from None
        resources = self.ray.cluster_resources()
        if self.workers is None:
            if self.gpus_per_worker:
                self.workers = int(resources.get("GPU", 0) // self.gpus_per_worker)
            else:
                self.workers = int(resources.get("CPU", 1))
        if self.workers < 1:
            raise EvalkitError(f"the Ray cluster has {resources.get('GPU', 0):g} GPU(s), too few for "
                               f"--gpus-per-worker {self.gpus_per_worker:g}: lower it or add GPU nodes")
        # each worker takes 1 CPU (+ its GPUs); more than the cluster has would wait forever to be placed
        for name, need in (("CPU", self.workers), ("GPU", self.workers * self.gpus_per_worker)):
            if need > resources.get(name, 0):
                raise EvalkitError(f"--workers {self.workers} needs {need:g} {name}(s) but the Ray cluster has "
                                   f"{resources.get(name, 0):g}: lower --workers or add nodes")

    def start(self) -> list[Any]:
        """The worker pool: started once per process and cluster, and kept warm across stages (render,
        then each metric), so Python, torch and evalkit are imported once per worker, not per map."""
        ray = self.ray
        context = ray.get_runtime_context()
        # the session too: job ids restart at 01000000 in every new Ray instance, whose actors are not the old ones
        shape = (context.get_session_name(), context.get_job_id(), self.workers, self.gpus_per_worker)
        if _POOL.get("shape") != shape:
            for actor in _POOL.get("actors", []):
                with contextlib.suppress(Exception):  # a stale session's actors are gone already
                    ray.kill(actor)  # another shape: free its CPUs/GPUs first
            begin = time.perf_counter()
            actor_class = ray.remote(_Worker).options(num_cpus=1, num_gpus=self.gpus_per_worker,
                                                      max_restarts=RESTARTS, max_task_retries=RESTARTS)
            actors = [actor_class.remote() for _ in range(self.workers)]
            ray.get([actor.ready.remote() for actor in actors])
            _POOL.update(shape=shape, actors=actors, startup_seconds=time.perf_counter() - begin)
        return _POOL["actors"]

    def map(self, factory: Callable[[], Any], method: str, items: Iterable[tuple[Any, tuple]]) -> Iterator[tuple[Any, Any]]:
        ray = self.ray
        iterator = iter(items)
        first = next(iterator, None)
        if first is None:
            return
        actors = self.start()
        shared = ray.put(factory)  # stored once; each worker builds its replica from it on first use
        token = uuid.uuid4().hex  # names this map's replica
        load = {i: 0 for i in range(len(actors))}
        pending: dict[Any, tuple[int, Any]] = {}  # object ref -> (actor slot, tag)
        failure: BaseException | None = None

        def submit(item: tuple[Any, tuple]) -> None:
            slot = min(load, key=load.get)
            load[slot] += 1
            pending[actors[slot].call.remote(token, shared, method, *item[1])] = (slot, item[0])

        submit(first)
        while pending:
            while failure is None and len(pending) < IN_FLIGHT_PER_WORKER * len(actors):
                item = next(iterator, None)
                if item is None:
                    break
                submit(item)
            [ref], _ = ray.wait(list(pending), num_returns=1)
            slot, tag = pending.pop(ref)
            load[slot] -= 1
            try:
                result = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - collect the others' results, then stop
                failure = failure or exc
                continue
            yield tag, result
        if failure is not None:
            raise _worker_error(failure) from None


_POOL: dict[str, Any] = {}  # this process's Ray pool: shape (session, job, workers, GPUs), actors, start-up time


class _Worker:
    """The actor: builds a replica (model or backbone) from the factory it is sent, and keeps the current one.

    The replica is rebuilt when a map with another factory arrives (the previous one is dropped first,
    freeing its memory) and after Ray restarts a dead worker, so a retried item finds its replica."""

    def __init__(self) -> None:
        # the libraries every replica needs, imported while the pool starts rather than at the first item
        import diffusers  # noqa: F401
        import pandas  # noqa: F401
        import torch  # noqa: F401

        self.token: str | None = None
        self.impl: Any = None

    def ready(self) -> bool:
        return True

    def call(self, token: str, factory: Callable[[], Any], method: str, *args: Any) -> Any:
        if token != self.token:
            self.token = self.impl = None
            self.impl, self.token = factory(), token
        return getattr(self.impl, method)(*args)


def _worker_error(exc: BaseException) -> BaseException:
    """A worker's EvalkitError stays a one-line input error; a dead worker says how to resume."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, EvalkitError):
        return EvalkitError(str(cause))
    if type(exc).__name__ in ("ActorDiedError", "RayActorError", "ActorUnavailableError", "WorkerCrashedError"):
        return EvalkitError(f"a Ray worker died {RESTARTS + 1} times ({_first_line(exc)}): finished work is saved; "
                            "rerun the same command to resume")
    return exc


def _probe(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds on an unreachable HOST:PORT (Ray itself retries a dead address for minutes)."""
    if address in (None, "auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise EvalkitError(f"--ray-address {address!r} is not HOST:PORT: e.g. 10.0.0.5:6379, or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise EvalkitError(f"no Ray cluster answers at {address} ({exc.strerror or exc}): start one there with "
                           "`ray start --head --port PORT`, or fix --ray-address") from None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EvalkitError("--backend ray needs Ray: pip install 'evalkit[ray]' (or pass --backend local)") from None
    return ray


EXECUTORS: Registry[Callable[..., Any]] = Registry("backend")  # one per name in config.BACKENDS
EXECUTORS.add("local", lambda **_: LocalExecutor())
EXECUTORS.add("ray", lambda address=None, workers=None, gpus_per_worker=0.0: RayExecutor(address, workers,
                                                                                         gpus_per_worker))


def make_executor(config) -> LocalExecutor | RayExecutor:
    """The executor a sweep config asks for (`backend`, `ray_address`, `workers`, `gpus_per_worker`)."""
    return EXECUTORS.get(config.backend)(address=config.ray_address, workers=config.workers,
                                         gpus_per_worker=config.gpus_per_worker)
