"""The retrieval service: the only component that talks to Milvus (docs/retrieval.md)."""
