"""`ragmesh chat` against the real stack: questions from stdin, streamed answers with
their sources, the conversation kept for the session, a clean end."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
