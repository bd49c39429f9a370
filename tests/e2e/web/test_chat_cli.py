"""`ragmesh chat` against the real stack: questions from stdin, streamed answers with
their sources, the conversation kept for the session, a clean end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ragmesh.gateway.v1 import gateway_pb2 as pb
from tests.e2e.conftest import ALPHA_KEY
from tests.e2e.web.conftest import KB, WebStack

pytestmark = pytest.mark.llm


def test_a_session(web: WebStack) -> None:
    env = {**os.environ, "RAGMESH_GATEWAY_ADDR": web.gateway, "RAGMESH_API_KEY": ALPHA_KEY}
    env.pop("RAGMESH_CONFIG", None)
    lines = "Who invented the Zorblat reactor?\n/sources all\n/history\n/quit\n"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragmesh.cli",
            "chat",
            "--kb",
            KB,
            "--max-tokens",
            "40",
            "--top-k",
            "2",
        ],
        input=lines,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # The history holds the turn: the question and the answer that was streamed.
    assert "user: Who invented the Zorblat reactor?" in out
    assert "assistant: " in out
    answer = out.split("user: ")[0]
    assert answer.strip()


def test_an_unknown_knowledge_base_is_reported_and_the_session_goes_on(web: WebStack) -> None:
    env = {**os.environ, "RAGMESH_GATEWAY_ADDR": web.gateway, "RAGMESH_API_KEY": ALPHA_KEY}
    done = subprocess.run(
        [sys.executable, "-m", "ragmesh.cli", "chat", "--kb", "no-such-kb"],
        input="hello?\n/help\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert "NOT_FOUND [KNOWLEDGE_BASE_NOT_FOUND]" in done.stdout
    assert "/quit" in done.stdout  # the help after the error: the session went on


CONVERSATION_KB = "clitalk"
CONVERSATION_DOCS = {
    "eiffel.txt": "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in "
    "Paris, France. It is 330 metres tall and was completed in 1889.\n",
    "giraffe.txt": "Giraffes are the tallest living animals. How tall is a giraffe? An adult "
    "giraffe stands about 5 metres tall.\n",
}


def test_a_follow_up_goes_with_the_conversation(web: WebStack) -> None:
    """The second question names nothing; the session sends the first exchange with
    it, shows the query that was searched, and the answer is about the tower."""
    web.stack.call(
        "CreateKnowledgeBase", pb.CreateKnowledgeBaseRequest(knowledge_base_id=CONVERSATION_KB)
    )
    for name, text in CONVERSATION_DOCS.items():
        job = web.stack.upload(CONVERSATION_KB, name, text.encode()).job
        assert web.stack.wait(job.job_id).state == pb.JOB_STATE_SUCCEEDED
    env = {**os.environ, "RAGMESH_GATEWAY_ADDR": web.gateway, "RAGMESH_API_KEY": ALPHA_KEY}
    env.pop("RAGMESH_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "ragmesh.cli", "chat", "--kb", CONVERSATION_KB, "--top-k", "2"],
        input="What is the Eiffel Tower?\nHow tall is it?\n/quit\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    print(done.stdout)
    # answers are the unindented lines; sources and the searched query are indented
    answers: list[str] = []
    indented = True
    for line in done.stdout.splitlines():
        if line.startswith("  "):
            indented = True
        elif indented:
            answers.append(line)
            indented = False
        else:
            answers[-1] += "\n" + line
    assert len(answers) == 2, done.stdout
    assert "330 metres" in answers[1], done.stdout
    searched = [line for line in done.stdout.splitlines() if line.startswith("  (searched")]
    assert len(searched) == 1 and "Eiffel" in searched[0], done.stdout
