"""Ray: each attempt is one Ray task with the slice's CPUs/GPUs, on a running cluster or a local one.

The cluster is `--ray-address`, else `$RAY_ADDRESS`, else a Ray already initialised in this process
(tests share one), else a local Ray started here with `--local-cpus` CPUs, no dashboard and a small
object store (tasks return small dicts; their data goes to the shared file system). Ray's own task
retries are off (`max_retries=0`): a crashed worker (SIGKILL, out of memory) surfaces here as a
failed attempt and the driver retries it, counted. On a remote cluster every node needs `cpt`
installed and the input/output paths mounted.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from typing import Any

from cpt.launch.executors import Attempt, Executor, _last_line, _log_tail
from cpt.launch.spec import LaunchError
from cpt.launch.task import Task, run_task

OBJECT_STORE_BYTES = 96 << 20
CONNECT_TIMEOUT_S = 5.0


def _import_ray():
    try:
        import ray
    except ImportError:
        raise LaunchError("--executor ray needs Ray, which is not installed: pip install 'cpt[ray]'") from None
    return ray


def check_reachable(address: str) -> None:
    """Fail in seconds, with one line, where Ray itself would retry for a minute or more."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise LaunchError(f"Ray address {address!r} is not HOST:PORT (or ray://HOST:PORT, auto)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise LaunchError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); "
                          f"check --ray-address / RAY_ADDRESS and that the head node is up") from None


def join_failure(address: str, error: BaseException) -> str:
    """One line for a cluster that answers but refuses us: Ray raises a ConnectionError whose cause
    chain holds the reason; token authentication (on by default in recent Ray) is the usual one."""
    chain, e = [], error
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if any(type(c).__name__ == "AuthenticationError" for c in chain):
        return (f"the Ray cluster at {address} refused this driver's authentication token: give it the cluster's "
                f"token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, see `ray get-auth-token`), "
                f"or start the cluster with RAY_AUTH_MODE=disabled on a private network")
    root = chain[-1]
    return f"cannot join the Ray cluster at {address}: {type(root).__name__}: {_last_line(str(root))}"


class RayExecutor(Executor):
    def start(self) -> None:
        ray = _import_ray()
        self.ray, self.owned, self.in_flight, self.warming = ray, False, {}, []
        address = self.spec.ray_address or os.environ.get("RAY_ADDRESS")
        if ray.is_initialized() and not self.spec.ray_address:
            self.owned = False  # a Ray this process already joined: use it, leave it running
        elif address:
            check_reachable(address)
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
                raise LaunchError(join_failure(address, e)) from None
            self.owned = True
        else:
            # address="local": a new Ray of our own even where another one runs on this machine
            ray.init(address="local", num_cpus=self.spec.local_cpus or os.cpu_count(), include_dashboard=False,
                     object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False, configure_logging=False)
            self.owned = True
        self.remote = ray.remote(run_task).options(
            num_cpus=self.spec.cpus_per_task, num_gpus=self.spec.gpus_per_task, max_retries=0,
            retry_exceptions=False)

    def stop(self) -> None:
        """Cancel what is still in flight (an interrupted driver), then leave a Ray we started."""
        for ref in [*getattr(self, "in_flight", {}).values(), *self._warming_refs(ready=False)]:
            self.ray.cancel(ref, force=True)
        if getattr(self, "owned", False):
            self.ray.shutdown()

    def submit(self, task: Task, number: int) -> Attempt:
        ref = self._submit(task, number)
        self.in_flight[ref.hex()] = ref
        return Attempt(task, number, ref, ref.hex()[:16])

    def _submit(self, task: Task, number: int):
        env = {"OMP_NUM_THREADS": str(self.spec.cpus_per_task), **task.env}
        return self.remote.remote(task.to_json() | {"env": env}, str(self.launch_dir), number)

    def warm_up(self, task: Task, count: int) -> None:
        """One warm-up per slot the cluster has room for now, up to `count`. They are the same Ray
        function with the same resources as the attempts (one scheduling class), so Ray hands each
        warmed worker, as its warm-up ends, the next attempt waiting for one."""
        for i in range(min(count, self._slots())):
            named = dataclasses.replace(task, name=f"{task.name}-{i:05d}")
            ref = self._submit(named, 1)
            self.warming.append(Attempt(named, 1, ref, ref.hex()[:16]))

    def _slots(self) -> int:
        """Attempts the cluster's CPUs (and GPUs, where asked for) can hold at once now."""
        resources = self.ray.cluster_resources()
        slots = int(resources.get("CPU", 0) // self.spec.cpus_per_task)
        if self.spec.gpus_per_task:
            slots = min(slots, int(resources.get("GPU", 0) // self.spec.gpus_per_task))
        return slots

    def warm_ups(self):
        ready = set(self._warming_refs(ready=True))
        return [self._outcome(a) if a.handle in ready else (a, None, "still running when the tasks ended")
                for a in self.warming]

    def _warming_refs(self, ready: bool) -> list:
        refs = [a.handle for a in getattr(self, "warming", [])]
        if not refs:
            return []
        done, pending = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        return done if ready else pending

    def wait(self, running, timeout):
        by_ref = {a.handle: a for a in running}
        ready, _ = self.ray.wait(list(by_ref), num_returns=len(by_ref), timeout=timeout)
        for ref in ready:
            self.in_flight.pop(ref.hex(), None)
        return [self._outcome(by_ref[ref]) for ref in ready]

    def _outcome(self, a: Attempt) -> tuple[Attempt, dict[str, Any] | None, str | None]:
        exceptions = self.ray.exceptions
        try:
            return a, self.ray.get(a.handle), None
        except exceptions.RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            return a, None, f"{type(cause).__name__}: {_last_line(str(cause))}"
        except exceptions.RayError as e:
            return a, None, f"Ray worker died ({type(e).__name__}: killed, out of memory or node lost; " \
                            f"log: {_log_tail(self.launch_dir, a)})"


__all__ = ["RayExecutor", "check_reachable", "join_failure"]
