"""Fuzzing every RPC of the gateway and of the four internal services with
generated requests, against the real servers over sockets.

For each method: messages drawn from its request descriptor (tests/fuzz/descriptors.py;
valid-looking values mixed with boundaries and nonsense), then raw bytes that no
protobuf encoder would write (tests/fuzz/wire.py), sent through identity
serializers. Pass: every call ends OK or with a status other than UNKNOWN and
INTERNAL that carries an ErrorInfo reason, no process dies, and afterwards the
stack still answers a normal Ask. `RAGMESH_FUZZ_MESSAGES` sets the number of
requests over all methods (1,000 in `make test`, 12,000 in `make fuzz`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor as _d
from hypothesis import HealthCheck, Phase, given, reject, seed, settings
from hypothesis import strategies as st

from devstack.procs import health_status
from ragmesh.chunking.v1 import chunking_pb2
from ragmesh.common.v1 import common_pb2
from ragmesh.embedding.v1 import embedding_pb2
from ragmesh.gateway.v1 import gateway_pb2 as pb
from ragmesh.generation.v1 import generation_pb2
from ragmesh.retrieval.v1 import retrieval_pb2
from tests.e2e.conftest import ALPHA_KEY, BETA_KEY
from tests.fuzz.conftest import MESSAGE_BYTES, MESSAGES, REPORT, FuzzStack, auth
from tests.fuzz.descriptors import messages
from tests.fuzz.harness import Caller
from tests.fuzz.wire import mutations

pytestmark = [
    pytest.mark.slow,
    pytest.mark.llm,
    # Hypothesis warns when it builds a long repr of a large drawn value.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
]

SERVICES: dict[str, _d.ServiceDescriptor] = {
    "gateway": pb.DESCRIPTOR.services_by_name["RagService"],
    "chunking": chunking_pb2.DESCRIPTOR.services_by_name["ChunkingService"],
    "embedding": embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"],
    "retrieval": retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"],
    "generation": generation_pb2.DESCRIPTOR.services_by_name["GenerationService"],
}
#: run last: they remove what the hints name (the seeded knowledge base, its
#: collection, its document), which would turn the later methods' valid-looking
#: requests into NOT_FOUND
DESTRUCTIVE = (
    "DeleteDocument",
    "DeleteDocumentChunks",
    "ReindexKnowledgeBase",
    "DeleteCollection",
    "DeleteKnowledgeBase",
)
METHODS = sorted(
    ((name, m.name) for name, svc in SERVICES.items() for m in svc.methods),
    key=lambda sm: DESTRUCTIVE.index(sm[1]) + 1 if sm[1] in DESTRUCTIVE else 0,
)
#: methods whose valid calls cost seconds (the LLM, a new collection, a re-index)
#: get fewer requests than the others
WEIGHTS = {
    "Ask": 0.3,
    "GenerateAnswer": 0.3,
    "RewriteQuery": 0.3,
    "ReindexKnowledgeBase": 0.5,
    "CreateKnowledgeBase": 0.7,
    "CreateCollection": 0.7,
}
#: the share of raw-bytes requests
WIRE_SHARE = 0.3
SEED = int(os.environ.get("RAGMESH_FUZZ_SEED", str(random.randrange(1 << 30))))
DIM = 384


def budget(method: str, kind: str) -> int:
    total_weight = sum(WEIGHTS.get(m, 1.0) for _, m in METHODS)
    share = WIRE_SHARE if kind == "wire" else 1 - WIRE_SHARE
    return max(3, round(MESSAGES * share * WEIGHTS.get(method, 1.0) / total_weight))


# ------------------------------------------------------------------ valid-looking values


def vector(dim: int, kind: str, rnd: int) -> list[float]:
    r = random.Random(rnd)
    values = [r.uniform(-1, 1) for _ in range(dim)]
    if kind == "zeros":
        return [0.0] * dim
    if kind == "nan" and dim:
        values[r.randrange(dim)] = float("nan")
    if kind == "huge":
        return [3.0e38] * dim
    return values


VECTORS = st.builds(
    vector,
    st.sampled_from([DIM, DIM, DIM, DIM - 1, 0, 1, 4096]),
    st.sampled_from(["random", "random", "zeros", "nan", "huge"]),
    st.integers(0, 1000),
)
TEXTS = st.sampled_from(
    [
        "zebra finch song at dawn",
        "What does the zebra finch sing?",
        "Section 3",
        "finch",
        "中文问题",
    ]
)


def _chunk(doc: str, index: int, text: str, vec: list[float]) -> retrieval_pb2.ChunkToUpsert:
    return retrieval_pb2.ChunkToUpsert(
        chunk=common_pb2.Chunk(
            id=f"{doc}:{index}",
            document_id=doc,
            chunk_index=index,
            text=text,
            start_offset=0,
            end_offset=len(text),
            token_count=len(text.split()),
        ),
        vector=vec,
    )


def hints(fs: FuzzStack) -> dict[str, st.SearchStrategy[Any]]:
    docs = st.sampled_from(["finches.md", "doc-1", "fuzz-doc"])
    kbs = st.sampled_from(["fuzz", "fuzz", "fuzz-b", "fuzz-c", "missing"])
    collections = st.sampled_from([fs.collection, fs.collection, "fuzz_c1", "fuzz_c2", "missing_c"])
    media = st.sampled_from(
        [
            "text/plain",
            "text/markdown",
            "text/html",
            "application/pdf",
            "text/plain; charset=utf-16",
            "text/plain; charset=punycode",
            "application/x-nothing",
            "",
        ]
    )
    contents = st.sampled_from(
        [
            b"# Title\n\nSome text about finches.",
            b"<html><head><title>T</title></head><body><p>Finches sing.</p></body></html>",
            b"plain words " * 50,
            b"%PDF-1.4\n%%EOF",
            b"",
        ]
    )
    chunks = st.builds(
        lambda doc, n, text, vec: [_chunk(doc, i, text, vec) for i in range(n)],
        docs,
        st.sampled_from([1, 1, 2, 0]),
        st.sampled_from(["A finch sings.", " ", "x" * 70_000]),
        VECTORS,
    )
    passages = st.builds(
        lambda n, text: [
            generation_pb2.Passage(id=f"p{i}", text=text, score=0.9, title="Finches", source="f.md")
            for i in range(n)
        ],
        # Prompts the LLM reads whole cost ~10 ms a token here: many short passages
        # and one far past the context window (refused before the LLM), not one that
        # just fits.
        st.sampled_from([1, 2, 0, 30]),
        st.sampled_from(["The zebra finch sings at dawn.", "", "word " * 20_000]),
    )
    filters = st.builds(
        lambda field, op, value: [
            common_pb2.FilterCondition(field=field, operator=op, value=value)
        ],
        st.sampled_from(
            ["document_id", "source", "language", "media_type", "page_start", "title", "x"]
        ),
        st.sampled_from(list(range(9))),
        messages(common_pb2.FilterCondition.DESCRIPTOR.fields_by_name["value"].message_type),
    )
    return {
        "knowledge_base_id": kbs,
        "document_id": docs,
        "job_id": st.sampled_from([*fs.job_ids, "0" * 32, "not-a-job"]),
        "file_name": st.sampled_from(["a.txt", "a.md", "a.html", "a.pdf", "noext", "a.docx", ""]),
        "media_type": media,
        "query": TEXTS,
        "question": TEXTS,
        "query_text": TEXTS,
        "top_k": st.sampled_from([1, 3, 10, 0, -1, 51, 1025]),
        "page_size": st.sampled_from([0, 1, 2, 1001, -1]),
        "collection": collections,
        "CreateCollectionRequest.name": st.sampled_from(["fuzz_c1", "fuzz_c2", "fuzz_c3"]),
        "GetCollectionRequest.name": collections,
        "DeleteCollectionRequest.name": st.sampled_from(["fuzz_c1", "fuzz_c2", "missing_c"]),
        "dimension": st.sampled_from([DIM, 0, -1, 1, 32_768, 32_769]),
        "vector": VECTORS,
        "query_vector": VECTORS,
        "texts": st.lists(TEXTS, min_size=1, max_size=4),
        "chunks": chunks,
        "passages": passages,
        # roles: USER, ASSISTANT, and ones the checks refuse (unset, unknown)
        "history": st.lists(
            st.builds(common_pb2.ChatTurn, role=st.sampled_from([1, 2, 1, 2, 0, 9]), content=TEXTS),
            max_size=4,
        ),
        "filters": filters,
        "content": contents,
        "data": contents,
        "UploadDocumentRequest.header": st.builds(
            pb.UploadHeader, knowledge_base_id=kbs, file_name=st.sampled_from(["a.md", "b.txt"])
        ),
    }


#: Requests that would make the LLM write: one token at most (0 means the default).
MAX_TOKENS = {"Ask": 6, "GenerateAnswer": 3, "RewriteQuery": 3}


def capped(method: str, request: Any) -> Any:
    # Out of range stays: it is refused before the LLM is called.
    if method in MAX_TOKENS and (request.max_tokens == 0 or 1 < request.max_tokens <= 1024):
        request.max_tokens = 1
    return request


AUTH = st.sampled_from(
    [auth()] * 16
    + [
        auth(BETA_KEY),
        (),
        (("authorization", "Bearer wrong-key-0000"),),
        (("authorization", "Basic abc"),),
        (("authorization", "Bearer " + "k" * 4000),),
        (*auth(), ("x-request-id", "r" * 200)),
        (*auth(), ("x-request-id", "")),
    ]
)


# ------------------------------------------------------------------------ the tests


def _run(n: int, strategy: st.SearchStrategy[Any], body: Callable[[Any], None]) -> None:
    @seed(SEED)
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(example: Any) -> None:
        body(example)

    run()


def _caller(fs: FuzzStack, service: str) -> Caller:
    md = auth() if service == "gateway" else ()
    # Longer than every server-side deadline (the gateway's Ask: 120 s; the LLM's
    # 150 s here): a call the client gives up on first is a hang.
    return Caller(fs.channel(service), SERVICES[service], fs.tally, md, timeout=300)


def _request_strategy(fs: FuzzStack, method: _d.MethodDescriptor) -> st.SearchStrategy[Any]:
    generated = messages(method.input_type, hints(fs))
    if method.client_streaming:  # an upload: a header then data, or any order at all
        header = messages(pb.UploadDocumentRequest.DESCRIPTOR, hints(fs)).filter(
            lambda r: r.HasField("header")
        )
        return st.one_of(
            st.lists(generated, max_size=4),
            st.builds(lambda h, rest: [h, *rest], header, st.lists(generated, max_size=3)),
        )
    return st.builds(lambda m: capped(method.name, m), generated)


def _check(fs: FuzzStack, method: str, kind: str) -> None:
    mine = [v for v in fs.tally.violations if v.method.endswith(f".{method}") and v.kind == kind]
    assert not mine, "\n\n".join(
        f"{v.kind} → {v.code}: {v.details}\n  request: {v.request}" for v in mine[:5]
    )
    assert not fs.dead(), fs.dead()


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m}" for s, m in METHODS])
def test_generated_messages(fuzz_stack: FuzzStack, service: str, method: str) -> None:
    caller = _caller(fuzz_stack, service)
    descriptor = SERVICES[service].methods_by_name[method]
    sent = [0]

    def body(example: tuple[Any, tuple[tuple[str, str], ...]]) -> None:
        request, md = example
        parts = request if descriptor.client_streaming else [request]
        if any(p.ByteSize() > MESSAGE_BYTES - 64 for p in parts):
            # past the client channel's own send limit: it would never leave this process
            reject()
        caller.call(descriptor, request, metadata=md if service == "gateway" else None)
        sent[0] += 1

    strategy = st.tuples(_request_strategy(fuzz_stack, descriptor), AUTH)
    _run(budget(method, "message"), strategy, body)
    print(f"{service}.{method}: {sent[0]} messages (seed {SEED})")
    _check(fuzz_stack, method, "message")


def _wire_seed(method: _d.MethodDescriptor, request: Any) -> bytes:
    if method.client_streaming:
        return b"".join(r.SerializeToString() for r in request[:1])
    return bytes(capped(method.name, request).SerializeToString())


#: appended to raw requests of the methods that reach the LLM: max_tokens 1 (a
#: later field wins), so that bytes which happen to parse still write one token
TOKEN_SUFFIX = {name: bytes([(field << 3) | 0, 1]) for name, field in MAX_TOKENS.items()}


@pytest.mark.parametrize(("service", "method"), METHODS, ids=[f"{s}.{m}" for s, m in METHODS])
def test_malformed_bytes(fuzz_stack: FuzzStack, service: str, method: str) -> None:
    caller = _caller(fuzz_stack, service)
    descriptor = SERVICES[service].methods_by_name[method]

    def body(example: tuple[Any, Callable[[bytes], bytes]]) -> None:
        request, mutate = example
        # Within the client channel's own send limit: past it the call never leaves
        # this process (and the servers' smaller limits are what is being tested).
        raw = mutate(_wire_seed(descriptor, request))[: MESSAGE_BYTES - 64]
        raw += TOKEN_SUFFIX.get(method, b"")
        if descriptor.client_streaming:
            header = pb.UploadDocumentRequest(
                header=pb.UploadHeader(knowledge_base_id="fuzz", file_name="w.txt")
            ).SerializeToString()
            caller.call(descriptor, [header, raw], raw=True)
        else:
            caller.call(descriptor, raw, raw=True)

    strategy = st.tuples(
        _request_strategy(fuzz_stack, descriptor), mutations(descriptor.input_type)
    )
    _run(budget(method, "wire"), strategy, body)
    _check(fuzz_stack, method, "wire")


def test_the_stack_still_answers(fuzz_stack: FuzzStack) -> None:
    """Last: every process alive and SERVING, and a normal Ask answers from the
    knowledge base no fuzzed request named."""
    assert not fuzz_stack.dead(), fuzz_stack.dead()
    for service, addr in fuzz_stack.addrs.items():
        assert health_status(addr) == "SERVING", service
    events = list(
        fuzz_stack.stack.rag.Ask(
            pb.AskRequest(
                knowledge_base_id="control",
                question="What does the zebra finch sing?",
                max_tokens=4,
            ),
            metadata=auth(ALPHA_KEY),
            timeout=300,
        )
    )
    final = [e for e in events if e.HasField("final")]
    assert final and (final[0].final.answer or final[0].final.abstained), events
    assert any(e.HasField("sources") and e.sources.sources for e in events), events
    tally = fuzz_stack.tally
    print(f"\n{tally.total()} requests; by status and reason:")
    for (code, reason), n in tally.by_status().most_common():
        print(f"  {n:6d}  {code} {reason}")
    if REPORT:
        tally.dump(Path(REPORT))
    assert tally.total() >= MESSAGES * 0.9
