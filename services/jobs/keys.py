"""The Redis key schema, under a configurable prefix (`rm` by default).

  {p}:{t}:kb:{kb}            hash  KnowledgeBaseRecord
  {p}:{t}:kbs                zset  knowledge base ids (lexicographic paging)
  {p}:{t}:doc:{kb}:{doc}     hash  DocumentRecord
  {p}:{t}:docs:{kb}          zset  document ids
  {p}:job:{job}              hash  JobRecord (carries its tenant)
  {p}:{t}:jobs, {p}:{t}:jobs:{kb}  zset  "<create ms>|<job>" (chronological paging)
  {p}:blob:{job}             string  the uploaded bytes, until the job succeeds
  {p}:active_jobs            zset  QUEUED/RUNNING job ids scored by last sign of life
  {p}:lock:{t}:{kb}:{doc}    string  held around chunk writes and deletes of a document
  {p}:events:{job}           pub/sub channel, a message on every job change
  {p}:reaper_lease           string  the gateway replica running the reaper
  {p}:{t}:usage              hash  the tenant's documents and stored bytes (quotas)
  {p}:{t}:deleting:{kb}      set   ids of the knowledge base's DELETING documents
  {p}:deleting_docs          zset  "t|kb|doc" of every DELETING document, by last attempt
  {p}:{t}:gone:{kb}:{col}    hash  a deleted knowledge base until its collection is dropped
  {p}:deleting_kbs           zset  "t|kb|col" of those, by last attempt
  {p}:retained_blobs         zset  job ids of FAILED/CANCELLED jobs holding bytes, by end time
  {p}:ended_jobs             zset  ended job ids, by end time (or last check): retention
  {p}:{t}:reindex:{kb}       set   documents still to embed into the re-index collection
  {p}:{t}:reindexed:{kb}     hash  document → "version|chunks" in the re-index collection
  {p}:reindexing             set   "t|kb" of knowledge bases being re-indexed
  {p}:drop_collections       zset  collections nobody uses any more, by when they stopped
                                    being used (a re-index's switch) or were last tried

Tenants, knowledge base ids and document ids are validated against patterns
without `:`, and job ids are generated here, so no two names share a key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "rm"

    def kb(self, tenant: str, kb: str) -> str:
        return f"{self.prefix}:{tenant}:kb:{kb}"

    def kbs(self, tenant: str) -> str:
        return f"{self.prefix}:{tenant}:kbs"

    def doc(self, tenant: str, kb: str, doc: str) -> str:
        return f"{self.prefix}:{tenant}:doc:{kb}:{doc}"

    def docs(self, tenant: str, kb: str) -> str:
        return f"{self.prefix}:{tenant}:docs:{kb}"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def jobs(self, tenant: str, kb: str | None = None) -> str:
        return f"{self.prefix}:{tenant}:jobs" if kb is None else f"{self.prefix}:{tenant}:jobs:{kb}"

    def blob(self, job_id: str) -> str:
        return f"{self.prefix}:blob:{job_id}"

    def lock(self, tenant: str, kb: str, doc: str) -> str:
        return f"{self.prefix}:lock:{tenant}:{kb}:{doc}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:events:{job_id}"

    def usage(self, tenant: str) -> str:
        return f"{self.prefix}:{tenant}:usage"

    def deleting_docs_of(self, tenant: str, kb: str) -> str:
        return f"{self.prefix}:{tenant}:deleting:{kb}"

    def gone_kb(self, tenant: str, kb: str, collection: str) -> str:
        return f"{self.prefix}:{tenant}:gone:{kb}:{collection}"

    def reindex_pending(self, tenant: str, kb: str) -> str:
        return f"{self.prefix}:{tenant}:reindex:{kb}"

    def reindexed(self, tenant: str, kb: str) -> str:
        return f"{self.prefix}:{tenant}:reindexed:{kb}"

    @property
    def reindexing(self) -> str:
        return f"{self.prefix}:reindexing"

    @property
    def drop_collections(self) -> str:
        return f"{self.prefix}:drop_collections"

    @property
    def deleting_docs(self) -> str:
        return f"{self.prefix}:deleting_docs"

    @property
    def deleting_kbs(self) -> str:
        return f"{self.prefix}:deleting_kbs"

    @property
    def retained_blobs(self) -> str:
        return f"{self.prefix}:retained_blobs"

    @property
    def ended_jobs(self) -> str:
        return f"{self.prefix}:ended_jobs"

    @property
    def active_jobs(self) -> str:
        return f"{self.prefix}:active_jobs"

    @property
    def reaper_lease(self) -> str:
        return f"{self.prefix}:reaper_lease"
