"""History turns to and from their protobuf (common.v1.ChatTurn); shared by the
gateway and the generation service."""

from __future__ import annotations

from collections.abc import Iterable

from ragmesh.common.v1 import common_pb2
from services.generation.history import ASSISTANT, USER, ChatTurn

_ROLES = {common_pb2.CHAT_ROLE_USER: USER, common_pb2.CHAT_ROLE_ASSISTANT: ASSISTANT}
_TO_PROTO = {USER: common_pb2.CHAT_ROLE_USER, ASSISTANT: common_pb2.CHAT_ROLE_ASSISTANT}


def history_from_proto(turns: Iterable[common_pb2.ChatTurn]) -> tuple[ChatTurn, ...]:
    """The turns; a role other than USER/ASSISTANT keeps a name the checks refuse."""
    return tuple(ChatTurn(_ROLES.get(t.role, f"role {int(t.role)}"), t.content) for t in turns)


def history_to_proto(turns: Iterable[ChatTurn]) -> list[common_pb2.ChatTurn]:
    return [common_pb2.ChatTurn(role=_TO_PROTO[t.role], content=t.content) for t in turns]
