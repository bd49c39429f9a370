"""Ingestion state shared by the gateway and the worker.

Records (knowledge bases, documents, jobs), the Redis key schema and its Lua
scripts, the catalogue, the job state machine, the reaper, and the interfaces
of the blob store (upload bytes) and of the ingestion queue. The gateway and
the worker both depend on this package and never on each other; it imports
neither of them, nor grpc.
"""
