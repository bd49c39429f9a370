"""Development and test support, outside the runtime packages (not in the wheel).

Process management (procs), starters of the third-party servers (deps: Redis,
llama.cpp, the Milvus server), the local launcher behind `make run`
(launcher), and that launcher run as a test or benchmark fixture (launched).
Used by tests/, benchmarks/ and `make run`; the runtime packages never import it.
"""
