"""ragmesh: retrieval-augmented generation as gRPC microservices around Milvus.

Generated gRPC stubs live in `ragmesh.<service>.v1` (built by `make proto`);
the Python SDK is `ragmesh.client`; the command line is `ragmesh.cli`.
"""

__version__ = "0.1.0"
