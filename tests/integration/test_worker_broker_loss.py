"""A Celery ingestion worker survives its Redis broker being killed and
restarted while it holds an unacknowledged message.

Found by the chaos run (benchmarks/chaos): on losing the broker, Celery closes
the broken connection, and kombu's Redis channel then tries to give the
unacknowledged messages back through a transport whose connection info is
already gone — an AttributeError that is not a connection error, so the
worker's main process died ("Unrecoverable error") instead of reconnecting.
Real processes: a redis-server with AOF and the project's worker app; the
message held is a retry waiting for its countdown (an ETA task stays
unacknowledged in the worker), so no other service is needed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from devstack.deps import start_redis
from devstack.procs import ManagedProcess, free_port, port_open, worker_process
from services.jobs.queue import INGEST_TASK, UNACKED_KEY, CeleryQueue
from services.jobs.settings import JobsSettings

pytestmark = [pytest.mark.slow]


def _log_has(proc: ManagedProcess, text: str, after: int = 0) -> bool:
    return text in proc.log_path.read_text(errors="replace")[after:]


def test_worker_reconnects_after_redis_restarts_under_an_unacked_message(
    tmp_path: Path, log_dir: Path
) -> None:
    port = free_port()
    redis_proc, url = start_redis(tmp_path / "redis", port=port, log_dir=log_dir)
    queue = "ragmesh-broker-loss"
    env = {
        "RAGMESH_REDIS_URL": url,
        "RAGMESH_WORKER_QUEUE": queue,
        "RAGMESH_CHUNKING_ADDR": "127.0.0.1:9",
        "RAGMESH_EMBEDDING_ADDR": "127.0.0.1:9",
        "RAGMESH_RETRIEVAL_ADDR": "127.0.0.1:9",
    }
    worker = worker_process("broker-loss-worker", "broker-loss@%h", env=env, log_dir=log_dir)
    producer = CeleryQueue(JobsSettings(redis_url=url, worker_queue=queue))
    try:
        worker.start()
        worker.wait_until(lambda: _log_has(worker, " ready."), 120, "worker ready")
        # A message the worker takes and keeps unacknowledged until its ETA.
        producer.app.send_task(INGEST_TASK, args=["no-such-job"], queue=queue, countdown=600)
        r = redis.Redis.from_url(url)
        deadline = time.monotonic() + 30
        while not r.hlen(UNACKED_KEY):
            assert time.monotonic() < deadline, "the worker never took the message"
            time.sleep(0.1)
        r.close()
        mark = len(worker.log_path.read_text(errors="replace"))
        redis_proc.kill()
        time.sleep(2)
        redis_proc.start()
        redis_proc.wait_until(lambda: port_open("127.0.0.1", port), 30, "Redis port")
        # It reconnects instead of dying.
        worker.wait_until(lambda: _log_has(worker, "Connected to ", mark), 60, "a reconnection")
        assert worker.alive()
        assert not _log_has(worker, "Unrecoverable error", mark), worker.log_tail(60)
    finally:
        producer.close()
        worker.stop()
        redis_proc.stop()
