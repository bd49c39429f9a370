"""The ragmesh Python SDK: sync and asyncio clients of the public gateway API.

    from ragmesh.client import RagmeshClient, NotFoundError

    with RagmeshClient("127.0.0.1:50051", api_key="dev-key") as rag:
        rag.create_knowledge_base("docs", language="english")
        upload = rag.upload_document("docs", "guide.md")
        rag.wait_for_job(upload.job.job_id, check=True)
        for hit in rag.search("docs", "install", top_k=3).hits:
            print(hit.score, hit.file_name, hit.text[:80])

Results are the gateway's protobuf messages (`ragmesh.gateway.v1.gateway_pb2`);
failures raise `RagmeshError` subclasses carrying the status code and ErrorInfo.
"""

from ragmesh.client.aio import AsyncRagmeshClient
from ragmesh.client.builders import filter_condition
from ragmesh.client.config import ClientSettings
from ragmesh.client.errors import (
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    JobFailedError,
    NotFoundError,
    PermissionDeniedError,
    RagmeshError,
    RequestCancelledError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    from_rpc_error,
)
from ragmesh.client.media import guess_media_type
from ragmesh.client.results import AskResult, location_text, pages_text
from ragmesh.client.sync import RagmeshClient, raise_for_job
from ragmesh.gateway.v1 import gateway_pb2

__all__ = [
    "AlreadyExistsError",
    "AskResult",
    "AsyncRagmeshClient",
    "ClientSettings",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "JobFailedError",
    "NotFoundError",
    "PermissionDeniedError",
    "RagmeshClient",
    "RagmeshError",
    "RequestCancelledError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "filter_condition",
    "from_rpc_error",
    "gateway_pb2",
    "guess_media_type",
    "location_text",
    "pages_text",
    "raise_for_job",
]
