"""The catalogue of ErrorInfo reasons: every reason a ragmesh service puts in an
error (or in a failed job's ErrorDetail), with its status code, what it means
and what the caller should do.

Raise sites keep their reason as a string literal next to the message; a test
(tests/unit/test_reasons.py) walks the code and fails when a raised reason is
missing here, is raised with another status code than the one listed, or when
an entry here is raised nowhere. docs/errors.md is generated from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

RETRY = "Retry later with backoff (the SDK does when the status carries RetryInfo)."
FIX = "Fix the request; retrying it unchanged fails again."


@dataclass(frozen=True)
class Reason:
    name: str
    #: the grpc.StatusCode name it travels with
    code: str
    meaning: str
    action: str = FIX
    #: raised only through a pattern (e.g. DOWNSTREAM_<CODE>), not as a literal
    dynamic: bool = False


_CATALOGUE = (
    # --------------------------------------------------------------- authentication
    Reason(
        "MISSING_API_KEY",
        "UNAUTHENTICATED",
        "No `authorization` metadata.",
        "Send `authorization: Bearer <api key>`.",
    ),
    Reason(
        "MALFORMED_API_KEY",
        "UNAUTHENTICATED",
        "`authorization` is not `Bearer <key>`.",
        "Send `authorization: Bearer <api key>`.",
    ),
    Reason(
        "INVALID_API_KEY",
        "UNAUTHENTICATED",
        "The API key is not known.",
        "Use a key the operator configured.",
    ),
    Reason(
        "NO_API_KEYS",
        "INVALID_ARGUMENT",
        "The gateway has no API key configured (startup).",
        "Set RAGMESH_GATEWAY_API_KEYS or RAGMESH_GATEWAY_API_KEYS_FILE.",
    ),
    Reason(
        "BAD_KEY",
        "INVALID_ARGUMENT",
        "An API key entry is malformed (startup).",
        "Write entries as `key:tenant`, keys of 8+ characters.",
    ),
    # authentication and transport (hostile input)
    Reason(
        "AUTH_RATE_LIMITED",
        "RESOURCE_EXHAUSTED",
        "Too many failed authentications from the caller's address "
        "(RAGMESH_GATEWAY_AUTH_FAILURE_LIMIT within RAGMESH_GATEWAY_AUTH_FAILURE_WINDOW_S); "
        "every call from it is refused, even with a right key, until the window passes.",
        "Fix the API key, then wait the RetryInfo delay (the SDK does not retry this by itself).",
    ),
    Reason(
        "BAD_TLS_CONFIG",
        "INVALID_ARGUMENT",
        "The gateway's TLS files are missing, unreadable, not PEM, or the key does not fit "
        "the certificate (startup).",
        "Operator: fix RAGMESH_GATEWAY_TLS_CERT_FILE / _KEY_FILE / _CLIENT_CA_FILE.",
    ),
    Reason(
        "UNREADABLE_CA_FILE",
        "(none)",
        "SDK: the CA file given for TLS (ca_file, --ca-file, RAGMESH_TLS_CA_FILE) cannot be read.",
        "Check the path and its permissions.",
    ),
    # ---------------------------------------------------------------- request shape
    Reason("MISSING_KNOWLEDGE_BASE_ID", "INVALID_ARGUMENT", "knowledge_base_id is empty."),
    Reason(
        "INVALID_KNOWLEDGE_BASE_ID",
        "INVALID_ARGUMENT",
        "knowledge_base_id does not match [a-z0-9][a-z0-9_-]{0,62}.",
    ),
    Reason(
        "MISSING_DOCUMENT_ID",
        "INVALID_ARGUMENT",
        "No document_id, and none can be derived from the file name.",
    ),
    Reason(
        "INVALID_DOCUMENT_ID",
        "INVALID_ARGUMENT",
        "document_id does not match [A-Za-z0-9][A-Za-z0-9._-]{0,127}.",
    ),
    Reason("DESCRIPTION_TOO_LONG", "INVALID_ARGUMENT", "A description over 2,000 characters."),
    Reason(
        "METADATA_TOO_LARGE",
        "INVALID_ARGUMENT",
        "Upload metadata larger than RAGMESH_GATEWAY_MAX_METADATA_BYTES as JSON.",
    ),
    Reason(
        "MISSING_UPLOAD_HEADER",
        "INVALID_ARGUMENT",
        "An upload stream that does not start with its header.",
        "Send the header first, then the bytes.",
    ),
    Reason("DUPLICATE_UPLOAD_HEADER", "INVALID_ARGUMENT", "A second header in an upload."),
    Reason("EMPTY_DOCUMENT", "INVALID_ARGUMENT", "A document with no bytes."),
    Reason(
        "UNSUPPORTED_MEDIA_TYPE",
        "INVALID_ARGUMENT",
        "A media type ragmesh does not parse.",
        "Use text/plain, text/markdown, text/html or application/pdf, or leave it empty.",
    ),
    Reason(
        "MEDIA_TYPE_MISMATCH",
        "INVALID_ARGUMENT",
        "The declared media type contradicts the content (e.g. a PDF sent as text).",
        "Send the right media type or leave it empty to detect it.",
    ),
    Reason("UNSUPPORTED_CHARSET", "INVALID_ARGUMENT", "A charset Python cannot decode."),
    Reason("EMPTY_QUERY", "INVALID_ARGUMENT", "A Search query that is empty or blank."),
    Reason(
        "QUERY_TOO_LONG",
        "INVALID_ARGUMENT",
        "A Search query longer than RAGMESH_GATEWAY_MAX_QUERY_CHARS.",
    ),
    Reason("EMPTY_QUESTION", "INVALID_ARGUMENT", "An Ask question that is empty or blank."),
    Reason(
        "QUESTION_TOO_LONG",
        "INVALID_ARGUMENT",
        "A question longer than the gateway's or the generation service's limit.",
    ),
    Reason(
        "TOP_K_OUT_OF_RANGE",
        "INVALID_ARGUMENT",
        "top_k negative or above the service's maximum (metadata: max_top_k).",
        "Ask for at most max_top_k results (0: the default).",
    ),
    Reason(
        "MAX_TOKENS_OUT_OF_RANGE",
        "INVALID_ARGUMENT",
        "max_tokens (answer length, or chunk size for ChunkDocument) outside its bounds.",
    ),
    Reason("TEMPERATURE_OUT_OF_RANGE", "INVALID_ARGUMENT", "temperature outside 0..2."),
    Reason("INVALID_PAGE_SIZE", "INVALID_ARGUMENT", "A negative page_size."),
    Reason(
        "INVALID_PAGE_TOKEN",
        "INVALID_ARGUMENT",
        "A page_token this server did not issue, or issued for another list (another "
        "call, knowledge base or document).",
        "Pass next_page_token unchanged to the call that returned it, or empty for the first page.",
    ),
    Reason("INVALID_JOB_STATE", "INVALID_ARGUMENT", "An unknown job state filter."),
    Reason("INVALID_ENUM", "INVALID_ARGUMENT", "An enum number the service does not know."),
    Reason(
        "NON_FINITE_NUMBER",
        "INVALID_ARGUMENT",
        "A Struct or Value field (metadata, index_params, a filter value) holds NaN or "
        "infinity, which JSON cannot carry.",
    ),
    Reason(
        "MALFORMED_REQUEST",
        "INVALID_ARGUMENT",
        "The request bytes are not a protobuf message of the method's request type "
        "(truncated, invalid UTF-8 in a string, nested too deeply, ...).",
        "Send the message your generated stubs serialize; do not hand-craft bytes.",
    ),
    # ------------------------------------------------------------ not found, exists
    Reason(
        "KNOWLEDGE_BASE_NOT_FOUND",
        "NOT_FOUND",
        "No such knowledge base for this tenant (another tenant's looks the same).",
        "Create it, or check the id.",
    ),
    Reason(
        "KNOWLEDGE_BASE_EXISTS",
        "ALREADY_EXISTS",
        "A knowledge base with that id exists.",
        "Use it, or delete it first.",
    ),
    Reason("DOCUMENT_NOT_FOUND", "NOT_FOUND", "No such document in the knowledge base."),
    Reason("JOB_NOT_FOUND", "NOT_FOUND", "No such ingestion job for this tenant."),
    Reason(
        "COLLECTION_NOT_FOUND",
        "NOT_FOUND",
        "The Milvus collection behind a knowledge base does not exist.",
        "`ragmesh kb check KB --repair` re-creates it and re-indexes its documents from "
        "their originals.",
    ),
    Reason(
        "COLLECTION_EXISTS",
        "ALREADY_EXISTS",
        "A collection with that name exists with other settings.",
    ),
    # ---------------------------------------------------------------- job lifecycle
    Reason("JOB_ALREADY_ENDED", "FAILED_PRECONDITION", "Cancel of a job that already ended."),
    Reason(
        "JOB_NOT_RETRYABLE",
        "FAILED_PRECONDITION",
        "Retry of a job that is not FAILED or CANCELLED.",
    ),
    Reason(
        "JOB_SUPERSEDED",
        "FAILED_PRECONDITION",
        "Retry of a job whose document was uploaded again since.",
        "Follow the newer job (the document's last_job_id).",
    ),
    Reason(
        "JOB_DOCUMENT_DELETED",
        "FAILED_PRECONDITION",
        "Retry of a job whose document was deleted since.",
        "Upload the document again.",
    ),
    Reason(
        "DOCUMENT_DELETED",
        "CANCELLED",
        "Job error: the document was deleted while it was ingested.",
        "Nothing (upload it again to index it).",
    ),
    Reason(
        "UPLOAD_GONE",
        "FAILED_PRECONDITION",
        "The upload's bytes are no longer stored (retry of an old job).",
        "Upload the document again.",
    ),
    Reason(
        "SUPERSEDED",
        "CANCELLED",
        "Job error: a newer upload of the same document replaced this job.",
        "Nothing: the newer job indexes the document.",
    ),
    Reason(
        "CANCELLED_BY_USER",
        "CANCELLED",
        "Job error: the job was cancelled by a caller.",
        "RetryIngestionJob to run it again.",
    ),
    Reason(
        "KNOWLEDGE_BASE_DELETED",
        "CANCELLED",
        "Job error: the knowledge base was deleted while the job was active.",
        "Nothing.",
    ),
    Reason(
        "WORKER_LOST",
        "UNAVAILABLE",
        "Job error: the workers running the job vanished too many times "
        "(RAGMESH_GATEWAY_JOB_MAX_ATTEMPTS).",
        "Check the workers' logs (a document that kills its worker?), then retry the job.",
    ),
    Reason(
        "QUEUE_UNAVAILABLE",
        "UNAVAILABLE",
        "The task queue (Redis) refused the job; the upload is not queued.",
        RETRY,
    ),
    Reason(
        "INDEX_INCOMPLETE",
        "ABORTED",
        "Job error (transient): chunks kept disappearing while the job indexed them.",
        "Nothing: the task retries; if it ends FAILED, retry the job.",
    ),
    Reason(
        "DOCUMENT_LOCKED",
        "UNAVAILABLE",
        "Another writer holds the document's lock (a delete or an upsert).",
        RETRY,
    ),
    Reason(
        "INTERNAL_ERROR",
        "INTERNAL",
        "An unexpected error; the message carries the request id to find it in the logs.",
        "Report it with the request id.",
    ),
    # ----------------------------------------------------------------- documents
    Reason(
        "DOCUMENT_TOO_LARGE",
        "RESOURCE_EXHAUSTED",
        "A document over the upload limit (gateway) or the chunking limit.",
        "Split the document; the limit is in the metadata.",
    ),
    Reason(
        "CORRUPT_DOCUMENT",
        "INVALID_ARGUMENT",
        "A document that cannot be parsed.",
        "Check the file; upload a repaired copy.",
    ),
    Reason(
        "ENCRYPTED_DOCUMENT",
        "INVALID_ARGUMENT",
        "An encrypted PDF or Office document.",
        "Upload a decrypted copy.",
    ),
    Reason(
        "NO_TEXT_CONTENT",
        "INVALID_ARGUMENT",
        "A document with no text to index (mostly binary, or a scanned PDF).",
        "Upload a text version (OCR a scanned PDF first).",
    ),
    Reason(
        "RESPONSE_TOO_LARGE",
        "RESOURCE_EXHAUSTED",
        "The chunks of a document would exceed the largest gRPC message.",
        "Split the document.",
    ),
    Reason("INVALID_OVERLAP", "INVALID_ARGUMENT", "A negative chunk overlap other than -1."),
    Reason("OVERLAP_TOO_LARGE", "INVALID_ARGUMENT", "A chunk overlap not below max_tokens."),
    # chunking budgets (hostile input)
    Reason(
        "DOCUMENT_TOO_MANY_CHUNKS",
        "INVALID_ARGUMENT",
        "The document splits into more chunks than RAGMESH_WORKER_MAX_CHUNKS_PER_DOCUMENT "
        "(the job fails before embedding).",
        "Split the document into smaller ones.",
    ),
    Reason(
        "INGEST_TIME_LIMIT",
        "DEADLINE_EXCEEDED",
        "Ingesting the document took longer than RAGMESH_WORKER_TASK_TIME_LIMIT_S.",
        "Split the document, or ask the operator for a longer limit.",
    ),
    Reason(
        "DOCUMENT_TOO_COMPLEX",
        "INVALID_ARGUMENT",
        "A document over a structural or memory limit of the chunking service: HTML nested "
        "deeper than RAGMESH_CHUNKING_MAX_HTML_DEPTH, a PDF with more pages than "
        "RAGMESH_CHUNKING_MAX_PDF_PAGES or a stream inflating past 75 MB (a decompression "
        "bomb), a Word/OpenDocument container over its entry, size or ratio limits, or one "
        "needing more memory than RAGMESH_CHUNKING_WORKER_MEMORY_MB (metadata: limit).",
        "Simplify or split the document; retrying it unchanged fails again.",
    ),
    Reason(
        "PARSE_TIMEOUT",
        "INVALID_ARGUMENT",
        "Parsing and splitting a document took longer than RAGMESH_CHUNKING_PARSE_TIMEOUT_S; "
        "its worker process was killed (metadata: timeout_s).",
        "Split or simplify the document; retrying it unchanged fails again.",
    ),
    Reason(
        "PARSER_CRASHED",
        "INTERNAL",
        "The chunking worker process handling a document crashed (a parser bug on this "
        "input); it was replaced (metadata: worker_exit).",
        "Report it with the request id and, if possible, the document.",
    ),
    # ------------------------------------------------------------------ embedding
    Reason("NO_TEXTS", "INVALID_ARGUMENT", "EmbedTexts without texts."),
    Reason(
        "TOO_MANY_TEXTS",
        "INVALID_ARGUMENT",
        "More texts than RAGMESH_EMBEDDING_MAX_TEXTS_PER_CALL in one call.",
        "Send them in several calls.",
    ),
    Reason("EMPTY_TEXT", "INVALID_ARGUMENT", "An empty text to embed or store."),
    Reason(
        "TEXT_TOO_LARGE",
        "INVALID_ARGUMENT",
        "A text over RAGMESH_EMBEDDING_MAX_TEXT_CHARS characters, even with truncate.",
    ),
    Reason(
        "TEXT_TOO_LONG",
        "INVALID_ARGUMENT",
        "A text over the model's token limit without truncate.",
        "Split it, or set truncate.",
    ),
    Reason("UNKNOWN_INPUT_TYPE", "INVALID_ARGUMENT", "An unknown input type."),
    Reason(
        "UNKNOWN_MODEL",
        "NOT_FOUND",
        "An embedding model that the embedding service does not serve (metadata: model).",
        "Name one that GetModelInfo lists (or the alias minilm or multilingual).",
    ),
    Reason(
        "EMBEDDING_FAILED",
        "INTERNAL",
        "The local model failed on a batch.",
        "Report it with the request id.",
    ),
    Reason(
        "EMBEDDING_BACKEND_UNAVAILABLE",
        "UNAVAILABLE",
        "The remote embedding server (TEI, OpenAI-compatible) cannot be reached.",
        RETRY,
    ),
    Reason(
        "EMBEDDING_BACKEND_TIMEOUT",
        "UNAVAILABLE",
        "The remote embedding server did not answer in time.",
        RETRY,
    ),
    Reason(
        "EMBEDDING_BACKEND_OVERLOADED",
        "RESOURCE_EXHAUSTED",
        "The remote embedding server answered 429 (rate limit).",
        RETRY,
    ),
    Reason(
        "EMBEDDING_BACKEND_AUTH_FAILED",
        "FAILED_PRECONDITION",
        "The remote embedding server refused the configured key.",
        "Operator: fix RAGMESH_EMBEDDING_OPENAI_API_KEY.",
    ),
    Reason(
        "EMBEDDING_BACKEND_REJECTED_INPUT",
        "INVALID_ARGUMENT",
        "The remote embedding server refused the input.",
    ),
    Reason(
        "EMBEDDING_BACKEND_BAD_RESPONSE",
        "INTERNAL",
        "The remote embedding server answered something malformed.",
        "Operator: check the embedding server.",
    ),
    Reason(
        "EMBEDDING_BACKEND_ERROR",
        "INTERNAL",
        "The remote embedding server failed.",
        "Operator: check the embedding server.",
    ),
    # ------------------------------------------------------------------ retrieval
    Reason(
        "INVALID_COLLECTION_NAME",
        "INVALID_ARGUMENT",
        "A collection name outside [a-zA-Z_][a-zA-Z0-9_]{0,254}.",
    ),
    Reason("INVALID_LABELS", "INVALID_ARGUMENT", "Collection labels out of their bounds."),
    Reason("INVALID_DIMENSION", "INVALID_ARGUMENT", "A vector dimension out of bounds."),
    Reason(
        "DIMENSION_MISMATCH",
        "INVALID_ARGUMENT",
        "A vector whose dimension differs from the collection's.",
    ),
    Reason("INVALID_VECTOR", "INVALID_ARGUMENT", "A vector with NaN or infinite values."),
    Reason(
        "INVALID_INDEX_PARAMS",
        "INVALID_ARGUMENT",
        "Index parameters unknown for the index type, or out of their bounds.",
    ),
    Reason(
        "INDEX_TYPE_UNSUPPORTED",
        "FAILED_PRECONDITION",
        "An index type the Milvus backend does not offer.",
    ),
    Reason(
        "SPARSE_UNSUPPORTED",
        "FAILED_PRECONDITION",
        "BM25 (SPARSE or HYBRID) on a Milvus without full-text search (the 2.3 server).",
        "Use DENSE, or Milvus Lite / Milvus 2.5+.",
    ),
    Reason(
        "ANALYZER_UNAVAILABLE",
        "FAILED_PRECONDITION",
        "The text analyzer for the language is not installed in Milvus.",
    ),
    Reason(
        "FOREIGN_COLLECTION",
        "FAILED_PRECONDITION",
        "A collection of that name exists but was not made by ragmesh.",
    ),
    Reason(
        "DOCUMENT_ID_MISMATCH",
        "INVALID_ARGUMENT",
        "A chunk whose document_id differs from the upsert's.",
    ),
    Reason("INVALID_CHUNK_INDEX", "INVALID_ARGUMENT", "A negative chunk index."),
    Reason("DUPLICATE_CHUNK_INDEX", "INVALID_ARGUMENT", "Two chunks with one index in an upsert."),
    Reason(
        "INVALID_OFFSETS",
        "INVALID_ARGUMENT",
        "Chunk offsets (or pages) that are negative or reversed.",
    ),
    Reason("FIELD_TOO_LONG", "INVALID_ARGUMENT", "A chunk field over its stored length."),
    Reason("TOO_MANY_CHUNKS", "INVALID_ARGUMENT", "More chunks than one upsert may carry."),
    Reason("EMPTY_UPSERT", "INVALID_ARGUMENT", "An upsert without chunks (use a delete)."),
    Reason("MISSING_QUERY_VECTOR", "INVALID_ARGUMENT", "A DENSE search without a vector."),
    Reason("MISSING_QUERY_TEXT", "INVALID_ARGUMENT", "A SPARSE search without text."),
    Reason("INVALID_FUSION", "INVALID_ARGUMENT", "Fusion parameters out of bounds."),
    Reason("INVALID_MIN_SCORE", "INVALID_ARGUMENT", "A min_score that is not finite."),
    Reason(
        "TOO_MANY_EXCLUDED_DOCUMENTS",
        "INVALID_ARGUMENT",
        "More excluded documents than RAGMESH_RETRIEVAL_MAX_EXCLUDED_DOCUMENTS.",
    ),
    Reason("TOO_MANY_FILTERS", "INVALID_ARGUMENT", "More filter conditions than allowed."),
    Reason(
        "UNKNOWN_FILTER_FIELD",
        "INVALID_ARGUMENT",
        "A filter on a field that does not exist.",
        "Filter on document_id, chunk_index, source, language, media_type, title or "
        "metadata.<key>.",
    ),
    Reason(
        "INVALID_FILTER_VALUE",
        "INVALID_ARGUMENT",
        "A filter value of the wrong type for its field or operator.",
    ),
    Reason("MILVUS_UNAVAILABLE", "UNAVAILABLE", "Milvus cannot be reached.", RETRY),
    Reason("MILVUS_ERROR", "INTERNAL", "Milvus failed a call.", "Report it with the request id."),
    Reason(
        "HISTORY_TOO_LONG",
        "INVALID_ARGUMENT",
        "An Ask history with more turns than the limit (RAGMESH_GATEWAY_MAX_HISTORY_TURNS, "
        "or the generation service's; metadata: limit).",
        "Send only the newest turns.",
    ),
    Reason(
        "HISTORY_TURN_TOO_LONG",
        "INVALID_ARGUMENT",
        "A history turn longer than RAGMESH_GATEWAY_MAX_HISTORY_TURN_CHARS (metadata: field, "
        "limit).",
    ),
    Reason(
        "HISTORY_TOO_LARGE",
        "INVALID_ARGUMENT",
        "History turns longer in all than RAGMESH_GATEWAY_MAX_HISTORY_CHARS (metadata: limit).",
        "Send only the newest turns.",
    ),
    Reason(
        "INVALID_HISTORY_ROLE",
        "INVALID_ARGUMENT",
        "A history turn whose role is neither USER nor ASSISTANT (metadata: field).",
    ),
    Reason(
        "EMPTY_HISTORY_TURN",
        "INVALID_ARGUMENT",
        "A history turn with empty or blank content (metadata: field).",
    ),
    Reason(
        "EMPTY_HISTORY",
        "INVALID_ARGUMENT",
        "A RewriteQuery without history (a lone question needs no rewriting).",
    ),
    # ----------------------------------------------------------------- generation
    Reason("TOO_MANY_PASSAGES", "INVALID_ARGUMENT", "More passages than the service accepts."),
    Reason("MISSING_PASSAGE_ID", "INVALID_ARGUMENT", "A passage without an id."),
    Reason("DUPLICATE_PASSAGE_ID", "INVALID_ARGUMENT", "Two passages with one id."),
    Reason("EMPTY_PASSAGE", "INVALID_ARGUMENT", "A passage without text."),
    Reason("PASSAGE_TOO_LONG", "INVALID_ARGUMENT", "A passage over its character limit."),
    Reason("PASSAGE_FIELD_TOO_LONG", "INVALID_ARGUMENT", "A passage title or source too long."),
    Reason("INVALID_PASSAGE_SCORE", "INVALID_ARGUMENT", "A passage score that is not finite."),
    Reason("INVALID_MIN_RELEVANCE", "INVALID_ARGUMENT", "A min_relevance that is not finite."),
    Reason(
        "PASSAGE_EXCEEDS_CONTEXT_WINDOW",
        "INVALID_ARGUMENT",
        "Not even one passage fits the LLM's context window.",
    ),
    Reason(
        "QUESTION_TOO_LONG_FOR_CONTEXT",
        "INVALID_ARGUMENT",
        "The question leaves no room for passages in the LLM's context window.",
    ),
    Reason("LLM_UNAVAILABLE", "UNAVAILABLE", "The LLM server cannot be reached.", RETRY),
    Reason("LLM_SERVER_ERROR", "UNAVAILABLE", "The LLM server answered 5xx.", RETRY),
    Reason("LLM_CONNECTION_LOST", "UNAVAILABLE", "The LLM server dropped the connection.", RETRY),
    Reason(
        "LLM_STREAM_INTERRUPTED", "UNAVAILABLE", "The LLM stream ended without a finish.", RETRY
    ),
    Reason(
        "LLM_TIMEOUT",
        "DEADLINE_EXCEEDED",
        "The LLM did not finish before the call's deadline.",
        "Retry with a longer deadline or a smaller max_tokens.",
    ),
    Reason("LLM_RATE_LIMITED", "RESOURCE_EXHAUSTED", "The LLM server answered 429.", RETRY),
    Reason(
        "LLM_QUEUE_FULL",
        "RESOURCE_EXHAUSTED",
        "Every LLM slot is busy and RAGMESH_GENERATION_LLM_MAX_QUEUED answers already wait.",
        RETRY,
    ),
    Reason(
        "LLM_TENANT_QUEUE_FULL",
        "RESOURCE_EXHAUSTED",
        "The tenant already has RAGMESH_GENERATION_LLM_MAX_QUEUED_PER_TENANT answers waiting "
        "for the LLM.",
        "Wait for your earlier questions' answers, then retry (RetryInfo says when).",
    ),
    Reason(
        "LLM_QUEUE_WAIT_EXCEEDS_DEADLINE",
        "RESOURCE_EXHAUSTED",
        "The answers queued ahead would not let this one finish before the call's deadline.",
        "Retry after the RetryInfo delay, or with a longer deadline.",
    ),
    Reason(
        "INVALID_TIME_REMAINING",
        "INVALID_ARGUMENT",
        "CheckAdmission's time_remaining_ms is negative or not a finite number.",
    ),
    Reason(
        "LLM_QUEUE_TIMEOUT",
        "DEADLINE_EXCEEDED",
        "The call's deadline passed while the answer waited for an LLM slot (the queue "
        "moved slower than expected).",
        "Retry with a longer deadline.",
    ),
    Reason(
        "SERVER_BUSY",
        "RESOURCE_EXHAUSTED",
        "The server is handling RAGMESH_MAX_CONCURRENT_RPCS calls.",
        RETRY,
    ),
    Reason(
        "LLM_AUTH_FAILED",
        "INTERNAL",
        "The LLM server refused the configured key.",
        "Operator: fix RAGMESH_GENERATION_LLM_API_KEY.",
    ),
    Reason(
        "LLM_NOT_FOUND",
        "INTERNAL",
        "The LLM server does not know the configured model.",
        "Operator: fix RAGMESH_GENERATION_LLM_MODEL.",
    ),
    Reason(
        "LLM_REQUEST_REJECTED",
        "INTERNAL",
        "The LLM server refused the request (4xx).",
        "Report it with the request id.",
    ),
    Reason(
        "LLM_MALFORMED_RESPONSE",
        "INTERNAL",
        "The LLM server answered something malformed.",
        "Operator: check the LLM server.",
    ),
    Reason(
        "LLM_STREAM_ERROR",
        "INTERNAL",
        "The LLM stream carried an error.",
        "Operator: check the LLM server.",
    ),
    Reason(
        "LLM_EMPTY_STREAM",
        "INTERNAL",
        "The LLM stream ended without any answer.",
        "Operator: check the LLM server.",
    ),
    # -------------------------------------------------------------- service state
    Reason("NOT_READY", "UNAVAILABLE", "The service is still starting.", RETRY),
    Reason("REDIS_UNAVAILABLE", "UNAVAILABLE", "Redis cannot be reached.", RETRY),
    Reason(
        "DEADLINE_EXCEEDED",
        "DEADLINE_EXCEEDED",
        "The call's deadline passed.",
        "Retry with a longer deadline.",
    ),
    Reason(
        "TOO_MANY_CONCURRENT_UPLOADS",
        "RESOURCE_EXHAUSTED",
        "The tenant has RAGMESH_GATEWAY_MAX_CONCURRENT_UPLOADS_PER_TENANT uploads open.",
        RETRY,
    ),
    Reason(
        "DOWNSTREAM_<CODE>",
        "(the peer's)",
        "An internal service failed without an ErrorInfo (<CODE> is its status code).",
        "As for the status code.",
        dynamic=True,
    ),
    # ---------------------------------------------- quotas, uploads, deletes (hostile input)
    Reason("INVALID_JOB_ID", "INVALID_ARGUMENT", "A job id that is not 32 hex digits."),
    Reason(
        "UPLOAD_IDLE_TIMEOUT",
        "DEADLINE_EXCEEDED",
        "An upload stream sent nothing for RAGMESH_GATEWAY_UPLOAD_IDLE_TIMEOUT_S.",
        "Upload again; send the pieces without long pauses.",
    ),
    Reason(
        "UPLOAD_BUFFER_FULL",
        "RESOURCE_EXHAUSTED",
        "The gateway holds RAGMESH_GATEWAY_UPLOAD_BUFFER_BYTES of uploads already.",
        RETRY,
    ),
    Reason(
        "TOO_MANY_CONCURRENT_WATCHES",
        "RESOURCE_EXHAUSTED",
        "The tenant has RAGMESH_GATEWAY_MAX_CONCURRENT_WATCHES_PER_TENANT watches open.",
        RETRY,
    ),
    Reason(
        "KNOWLEDGE_BASE_QUOTA_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "The tenant has RAGMESH_GATEWAY_MAX_KNOWLEDGE_BASES_PER_TENANT knowledge bases.",
        "Delete a knowledge base, or ask the operator for a higher limit.",
    ),
    Reason(
        "DOCUMENT_QUOTA_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "The tenant has RAGMESH_GATEWAY_MAX_DOCUMENTS_PER_TENANT documents.",
        "Delete documents, or ask the operator for a higher limit.",
    ),
    Reason(
        "STORAGE_QUOTA_EXCEEDED",
        "RESOURCE_EXHAUSTED",
        "The upload would take the tenant's stored upload bytes over "
        "RAGMESH_GATEWAY_MAX_STORED_BYTES_PER_TENANT.",
        "Wait for queued jobs to finish (their bytes are dropped), retry or delete failed "
        "ones, or delete documents.",
    ),
    Reason(
        "ORIGINAL_GONE",
        "FAILED_PRECONDITION",
        "Job error: a repair or re-index job found no kept original of its document.",
        "Upload the document again.",
    ),
    Reason(
        "BLOB_STORE_UNAVAILABLE",
        "UNAVAILABLE",
        "The store of originals (a directory, or S3) failed.",
        RETRY,
    ),
    Reason(
        "ORIGINAL_NOT_KEPT",
        "FAILED_PRECONDITION",
        "The document's original (or text) is not kept: not indexed yet, indexed before "
        "originals were kept, or RAGMESH_KEEP_ORIGINALS is off.",
        "Wait for the document to be indexed, or upload it again.",
    ),
    Reason("INVALID_TEXT_RANGE", "INVALID_ARGUMENT", "A negative offset or max_chars."),
    Reason(
        "ORIGINALS_MISSING",
        "FAILED_PRECONDITION",
        "A re-index of a knowledge base with documents indexed before originals were kept.",
        "Upload those documents again (the error names one), then re-index.",
    ),
    Reason(
        "REINDEX_IN_PROGRESS",
        "FAILED_PRECONDITION",
        "A re-index of a knowledge base that is being re-indexed.",
        "Wait for it to finish (`ragmesh kb check` shows its progress).",
    ),
    Reason(
        "DOCUMENT_BEING_DELETED",
        "UNAVAILABLE",
        "An upload of a document that is being deleted.",
        RETRY,
    ),
    Reason(
        "KNOWLEDGE_BASE_BEING_DELETED",
        "FAILED_PRECONDITION",
        "Creating a knowledge base whose deleted namesake is still being purged.",
        "Create it again in a moment.",
    ),
    Reason(
        "KNOWLEDGE_BASE_RECREATED",
        "CANCELLED",
        "Job error: the job's knowledge base was deleted and made again (or re-indexed) since "
        "the job was made; its collection is not the knowledge base's any more.",
        "Nothing (upload the document again to index it).",
        dynamic=True,
    ),
    # ------------------------------------------------------------- web (HTTP) service
    Reason(
        "MALFORMED_JSON",
        "INVALID_ARGUMENT",
        "web: the request body (or a JSON form field) is not valid JSON (HTTP 400).",
    ),
    Reason(
        "INVALID_REQUEST_BODY",
        "INVALID_ARGUMENT",
        "web: a field of the body is missing, of the wrong type or out of range; `param` "
        "names it (HTTP 400).",
    ),
    Reason(
        "BODY_TOO_LARGE",
        "RESOURCE_EXHAUSTED",
        "web: the body is larger than RAGMESH_WEB_MAX_BODY_BYTES (uploads: "
        "RAGMESH_WEB_MAX_UPLOAD_BYTES) (HTTP 413).",
        "Send less: a shorter conversation, a smaller document.",
    ),
    Reason(
        "LAST_MESSAGE_NOT_USER",
        "INVALID_ARGUMENT",
        "web: a chat completion's last message is not the user's question (HTTP 400).",
    ),
    Reason(
        "UNSUPPORTED_N",
        "INVALID_ARGUMENT",
        "web: a chat completion asked for n > 1 answers (HTTP 400).",
    ),
    Reason(
        "UNSUPPORTED_CONTENT",
        "INVALID_ARGUMENT",
        "web: a message part is not text (images, audio) (HTTP 400).",
    ),
    Reason(
        "INVALID_MODEL",
        "INVALID_ARGUMENT",
        "web: the model name names no knowledge base (`ragmesh/<kb>`) (HTTP 400).",
    ),
    Reason(
        "INVALID_OPTION",
        "INVALID_ARGUMENT",
        "web: an unknown search mode, filter operator, metric, index type, language or job "
        "state (HTTP 400).",
    ),
    Reason(
        "MISSING_UPLOAD",
        "INVALID_ARGUMENT",
        "web: an upload has neither a `file` part nor a `text` field, or both (HTTP 400).",
    ),
    Reason(
        "MISSING_FILE_NAME",
        "INVALID_ARGUMENT",
        "web: an uploaded file part has no file name and no `file_name` field (HTTP 400).",
    ),
    Reason(
        "NO_SUCH_ROUTE",
        "NOT_FOUND",
        "web: no endpoint at this path (HTTP 404).",
        "See /docs for the endpoints.",
    ),
    Reason(
        "METHOD_NOT_ALLOWED",
        "INVALID_ARGUMENT",
        "web: the endpoint does not take this HTTP method (HTTP 405).",
    ),
    Reason(
        "GATEWAY_UNAVAILABLE",
        "UNAVAILABLE",
        "web: the gateway cannot be reached (HTTP 503).",
        RETRY,
    ),
    # -------------------------------------------------------------- SDK, client side
    Reason(
        "JOB_WAIT_TIMEOUT",
        "DEADLINE_EXCEEDED",
        "SDK: wait_for_job gave up before the job ended (the job goes on).",
        "Wait again, or watch the job.",
    ),
    Reason(
        "UNREADABLE_FILE",
        "(none)",
        "SDK: a file to upload could not be read.",
        "Check the path and its permissions.",
    ),
    Reason(
        "JOB_<STATE>",
        "(none)",
        "SDK: JobFailedError for a job that ended FAILED or CANCELLED without an error.",
        "Look at the job.",
        dynamic=True,
    ),
)

REASONS: dict[str, Reason] = {r.name: r for r in _CATALOGUE}


# Statuses whose details a public service keeps in its logs: its callers get
# only `public_message` (the details name hosts, ports, URLs, upstream bodies).
SANITIZED_CODES = frozenset({"INTERNAL", "UNAVAILABLE", "UNKNOWN", "DATA_LOSS"})


def public_message(code: str, reason: str) -> str:
    """What a caller is told of an INTERNAL or UNAVAILABLE error: the catalogue's
    meaning of its reason."""
    entry = REASONS.get(reason)
    if entry is not None:
        return entry.meaning.rstrip(".")
    if code == "UNAVAILABLE":
        return "A service ragmesh depends on is unavailable"
    return "Internal error"
