"""Cancel and retry an ingestion job over REST (the page's buttons): the gateway's
CancelIngestionJob and RetryIngestionJob, answered with the job as it is then."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.web.convert import message_json
from services.web.deps import Gateway, state

router = APIRouter(prefix="/api/v1", tags=["REST"])


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
async def cancel_job(job_id: str, request: Request, rag: Gateway) -> dict[str, Any]:
    timeout = state(request).settings.request_timeout_s
    return message_json(await rag.cancel_ingestion_job(job_id, timeout=timeout))


@router.post("/jobs/{job_id}/retry", summary="Run a failed or cancelled job again")
async def retry_job(job_id: str, request: Request, rag: Gateway) -> dict[str, Any]:
    timeout = state(request).settings.request_timeout_s
    return message_json(await rag.retry_ingestion_job(job_id, timeout=timeout))
