"""Upload memory: 16 concurrent 32 MiB uploads from 4 tenants against one
gateway with its default in-flight budget (RAGMESH_GATEWAY_UPLOAD_BUFFER_BYTES).

Measured: the gateway's resident memory (sampled every 20 ms from /proc) above
its idle baseline, and what each upload got: accepted, or refused with
RESOURCE_EXHAUSTED (UPLOAD_BUFFER_FULL, or TOO_MANY_CONCURRENT_UPLOADS). No
worker runs: the accepted jobs stay QUEUED and are cancelled at the end
(ingesting 512 MiB of text is not the point). Written to docs/reliability.md.
"""

from __future__ import annotations

import collections
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from devstack.deps import start_redis
from devstack.procs import ManagedProcess, start_service
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.gateway.v1 import gateway_pb2_grpc
from ragmesh.rpc import error_info_of

DOC = "reliability.md"
TENANTS = 4
UPLOADS = 16
SIZE = 32 * 1024 * 1024
PIECE = 64 * 1024
MIB = 1024 * 1024


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler:
    """The highest RSS of a process while running."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_bytes(self.pid))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _upload(stub: gateway_pb2_grpc.RagServiceStub, key: str, n: int) -> tuple[str, str]:
    """('accepted', job id) or ('refused', reason)."""
    body = (f"upload {n}: " + "lorem ipsum dolor sit amet " * 40 + "\n").encode()

    def messages() -> Iterator[pb.UploadDocumentRequest]:
        yield pb.UploadDocumentRequest(
            header=pb.UploadHeader(knowledge_base_id="big", file_name=f"big-{n}.txt")
        )
        sent = 0
        while sent < SIZE:
            piece = (body * (PIECE // len(body) + 1))[: min(PIECE, SIZE - sent)]
            yield pb.UploadDocumentRequest(data=piece)
            sent += len(piece)

    try:
        resp = stub.UploadDocument(
            messages(), metadata=[("authorization", f"Bearer {key}")], timeout=600
        )
        return "accepted", resp.job.job_id
    except grpc.RpcError as err:
        info = error_info_of(err)
        return "refused", f"{err.code().name} {info.reason if info else ''}"  # type: ignore[attr-defined]


def run() -> str:
    procs: list[ManagedProcess] = []
    with tempfile.TemporaryDirectory(prefix="bench-uploads-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            redis, url = start_redis(tmp / "redis", log_dir=tmp)
            procs.append(redis)
            retrieval, raddr = start_service(
                "retrieval", env={"RAGMESH_RETRIEVAL_MILVUS_URI": str(tmp / "m.db")}, log_dir=tmp
            )
            embedding, eaddr = start_service("embedding", log_dir=tmp)
            procs += [retrieval, embedding]
            keys = {f"tenant{i}": f"bench-upload-key-{i}" for i in range(TENANTS)}
            gateway, gaddr = start_service(
                "gateway",
                env={
                    "RAGMESH_REDIS_URL": url,
                    "RAGMESH_RETRIEVAL_ADDR": raddr,
                    "RAGMESH_EMBEDDING_ADDR": eaddr,
                    "RAGMESH_GATEWAY_API_KEYS": ",".join(f"{k}:{t}" for t, k in keys.items()),
                    "RAGMESH_GATEWAY_MAX_STORED_BYTES_PER_TENANT": str(8 * SIZE),
                },
                log_dir=tmp,
            )
            procs.append(gateway)
            channel = grpc.insecure_channel(
                gaddr, options=[("grpc.max_send_message_length", 2 * PIECE)]
            )
            stub = gateway_pb2_grpc.RagServiceStub(channel)
            for key in keys.values():
                stub.CreateKnowledgeBase(
                    pb.CreateKnowledgeBaseRequest(knowledge_base_id="big"),
                    metadata=[("authorization", f"Bearer {key}")],
                    timeout=60,
                )
            time.sleep(1)
            baseline = _rss_bytes(gateway.pid)
            order = [list(keys.values())[i % TENANTS] for i in range(UPLOADS)]
            start = time.perf_counter()
            with Sampler(gateway.pid) as sampler, ThreadPoolExecutor(UPLOADS) as pool:
                outcomes = list(
                    pool.map(lambda a: _upload(stub, *a), zip(order, range(UPLOADS), strict=True))
                )
            seconds = time.perf_counter() - start
            alive = gateway.alive()
            for (kind, value), key in zip(outcomes, order, strict=True):
                if kind == "accepted":
                    stub.CancelIngestionJob(
                        pb.CancelIngestionJobRequest(job_id=value),
                        metadata=[("authorization", f"Bearer {key}")],
                        timeout=30,
                    )
            channel.close()
        finally:
            for proc in reversed(procs):
                proc.stop()
    counts = collections.Counter(kind if kind == "accepted" else value for kind, value in outcomes)
    budget = 256 * MIB
    rows = "\n".join(f"| {what} | {n} |" for what, n in sorted(counts.items()))
    return f"""## Upload memory (hostile input)

{UPLOADS} concurrent uploads of {SIZE // MIB} MiB from {TENANTS} tenants (64 KiB pieces)
against one gateway with the default in-flight budget of {budget // MIB} MiB
(`RAGMESH_GATEWAY_UPLOAD_BUFFER_BYTES`); no worker, accepted jobs cancelled after.

| figure | value |
|---|---|
| gateway RSS at rest | {baseline / MIB:.0f} MiB |
| gateway peak RSS during the uploads | {sampler.peak / MIB:.0f} MiB |
| peak above rest | {(sampler.peak - baseline) / MIB:.0f} MiB (budget {budget // MIB} MiB) |
| gateway still running afterwards | {"yes" if alive else "NO"} |
| wall time of the {UPLOADS} uploads | {seconds:.1f} s |

| outcome | uploads |
|---|---|
{rows}
"""
