"""How an ingestion run can end early: a dependency failed in a way that may
pass (retry later), retrying cannot help (the job fails), or the job is not
this run's any more."""

from __future__ import annotations

from services.jobs.records import ErrorRecord


class TransientError(Exception):
    """A dependency failed in a way that may pass: the task retries later."""

    def __init__(self, error: ErrorRecord) -> None:
        super().__init__(error.message)
        self.error = error


class PermanentError(Exception):
    """Retrying cannot help (unsupported or corrupt file, ...): the job fails."""

    def __init__(self, error: ErrorRecord) -> None:
        super().__init__(error.message)
        self.error = error


class JobLost(Exception):
    """The job is no longer this run's (cancelled, deleted, taken over)."""


class JobGone(JobLost):
    """What the job was for is gone (its document or knowledge base deleted): the job is
    still this run's, so the run ends it (CANCELLED with `error`) rather than leaving it
    to the reaper."""

    def __init__(self, error: ErrorRecord) -> None:
        super().__init__(error.reason)
        self.error = error
