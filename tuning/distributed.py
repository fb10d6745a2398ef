"""Distributed tuning on KerasTuner's own chief/worker engine, with every wait bounded.

KerasTuner's chief serves the oracle over gRPC and workers ask it for trials. Left alone, the
chief polls for the end every 20 s, never exits when no worker connects, and waits forever on
a worker that died mid-trial; a worker waits an hour for a chief that is not there. kzoo runs
the same servicer with its own loop:

- the chief polls every `poll_seconds` and exits once the search is over and no trial is out;
- it gives up with an error (the search stays resumable) when no trial is out and no worker
  asked for one within `wait_workers` seconds: none connected, or all died between trials;
- a trial with no result after `trial_timeout` seconds is handed out again (once), then
  marked failed, and its worker is forgotten, so a killed worker never blocks the end;
- workers bound every call to the chief by `connect_timeout` seconds.
"""

from __future__ import annotations

import os
import time
from concurrent import futures

import grpc
from keras_tuner.src import protos
from keras_tuner.src.distribute.oracle_chief import OracleServicer

from kzoo.errors import UserError

ENV_KEYS = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


class DistributedError(UserError):
    """A chief or worker that cannot reach the other side in time."""


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port), with a one-line error naming the bad value."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"--oracle takes HOST:PORT, e.g. 10.0.0.5:8000. Received: oracle={address!r}")
    return host, int(port)


class environment:
    """Sets KERASTUNER_TUNER_ID / _ORACLE_IP / _ORACLE_PORT for the duration of a search."""

    def __init__(self, tuner_id: str, host: str, port: int):
        self.values = {"KERASTUNER_TUNER_ID": tuner_id, "KERASTUNER_ORACLE_IP": host,
                       "KERASTUNER_ORACLE_PORT": str(port)}

    def __enter__(self):
        self.saved = {k: os.environ.get(k) for k in ENV_KEYS}
        os.environ.update(self.values)
        return self

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def wait_for_chief(host: str, port: int, timeout: float):
    """Blocks until the chief's gRPC server answers, or raises `DistributedError` after `timeout`."""
    channel = grpc.insecure_channel(f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        raise DistributedError(f"No kzoo tune chief answered at {host}:{port} within {timeout:g} s. "
                               f"Start the chief first. Received: oracle={host}:{port}") from None
    finally:
        channel.close()


class _BoundedStub:
    """Wraps a worker's gRPC stub so that no call waits longer than `timeout` seconds."""

    def __init__(self, stub, timeout: float):
        self._stub = stub
        self._timeout = timeout

    def __getattr__(self, name):
        method = getattr(self._stub, name)

        def call(*args, **kwargs):
            kwargs["timeout"] = min(kwargs.get("timeout", self._timeout), self._timeout)
            return method(*args, **kwargs)

        return call


def bound_worker_calls(tuner, timeout: float):
    """Applies `timeout` to every request a worker tuner sends to its chief."""
    stub = getattr(tuner.oracle, "stub", None)
    if stub is not None and not isinstance(stub, _BoundedStub):
        tuner.oracle.stub = _BoundedStub(stub, timeout)


def is_chief_gone(error) -> bool:
    """Whether a gRPC error means the chief stopped answering (the search ended without us)."""
    return isinstance(error, grpc.RpcError) and error.code() in (
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def serve(oracle, host: str, port: int, poll_seconds: float = 2.0, wait_workers: float = 600.0,
          trial_timeout: float = 3600.0, log=print):
    """Serves `oracle` to workers until the search is over; every wait is bounded.

    Args:
        oracle: the chief's oracle (a `kzoo.tuning.search` bookkeeping oracle).
        host, port: where to listen.
        poll_seconds: how often to check for the end and for stale trials. Defaults to `2.0`.
        wait_workers: give up when no trial is out and no worker asked for one within this many
            seconds. Defaults to `600.0`.
        trial_timeout: seconds after which a trial with no result is handed out again (then
            failed). Defaults to `3600.0`.
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    if not server.add_insecure_port(f"{host}:{port}"):
        raise DistributedError(f"The chief cannot listen on {host}:{port} (in use?). Received: oracle={host}:{port}")
    server.start()
    log(f"chief: serving the search on {host}:{port}; start workers with --role worker --oracle {host}:{port}")
    start = time.monotonic()
    idle_since = None
    try:
        while True:
            time.sleep(poll_seconds)
            for line in oracle.expire_stale(trial_timeout):
                log(line)
            finished = servicer.stop_triggered or oracle.kzoo_search_over()
            last = oracle.kzoo_last_contact or start
            if not finished and not oracle.ongoing_trials and time.monotonic() - last > wait_workers:
                what = "connected" if oracle.kzoo_last_contact is None else "asked for a trial"
                raise DistributedError(f"No worker {what} at {host}:{port} for {wait_workers:g} s; "
                                       f"{len(oracle.end_order)} trial(s) finished. Run the chief again to resume. "
                                       f"Received: wait_workers={wait_workers:g}")
            if finished and not oracle.ongoing_trials:
                if not oracle.tuner_ids:
                    break
                # A worker that died between trials never asks again: do not wait for it long.
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > max(3 * poll_seconds, 10.0):
                    break
            else:
                idle_since = None
    finally:
        server.stop(grace=1.0)
