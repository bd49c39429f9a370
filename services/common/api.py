"""API conventions every service follows (ARCHITECTURE §4), in one place.

Page tokens, page-size and top_k bounds, protobuf Struct/Timestamp helpers.
No grpc here: errors are the project's own (services.common.errors), with
their ErrorInfo reasons catalogued in services.common.reasons.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from services.common.errors import InvalidArgument

#: metadata naming the tenant a call is made for, set by the gateway on its calls
#: to the internal services (the generation service queues answers by it)
TENANT_METADATA = "x-ragmesh-tenant"
#: metadata carrying a CheckAdmission reservation on the GenerateAnswer it was made for
RESERVATION_METADATA = "x-ragmesh-admission-reservation"

# ----------------------------------------------------------------- page tokens

_TOKEN_VERSION = 1


def _scope_tag(scope: str) -> str:
    """A short digest of what a token pages: tokens do not spell out key names."""
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def encode_page_token(after: str | int, scope: str) -> str:
    """An opaque page token carrying the last key of the page (a string or an int),
    bound to `scope`: what it pages (the list and, e.g., its knowledge base)."""
    data = {"v": _TOKEN_VERSION, "after": after, "s": _scope_tag(scope)}
    raw = json.dumps(data, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_page_token(token: str, scope: str, kind: type[str] | type[int] = str) -> Any:
    """The key a token from `encode_page_token` carries; None for the first page.

    Anything this server did not issue, of another kind, or issued for another list
    (another scope) is INVALID_ARGUMENT: a token of one list used on another would
    silently skip part of it.
    """
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        after = data["after"] if data.get("v") == _TOKEN_VERSION else None
        tag = data.get("s")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        after, tag = None, None
    if not isinstance(after, kind) or isinstance(after, bool):
        raise InvalidArgument(
            "page_token is not a token this server issued", reason="INVALID_PAGE_TOKEN"
        )
    if tag != _scope_tag(scope):
        raise InvalidArgument(
            "page_token belongs to another list: pass it back to the call (and with the "
            "arguments) that returned it",
            reason="INVALID_PAGE_TOKEN",
        )
    return after


# --------------------------------------------------------------------- bounds


def page_size(requested: int, default: int, maximum: int) -> int:
    """A List call's page size: 0 means `default`; larger than `maximum` is capped."""
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", reason="INVALID_PAGE_SIZE")
    return min(requested or default, maximum)


def top_k(requested: int, default: int, maximum: int) -> int:
    """A search's result count: 0 means `default`; outside 1..maximum is refused."""
    if requested < 0 or requested > maximum:
        raise InvalidArgument(
            f"top_k must be between 1 and {maximum} (0: {default})",
            reason="TOP_K_OUT_OF_RANGE",
            metadata={"top_k": requested, "max_top_k": maximum},
        )
    return requested or default


# ------------------------------------------------------------ protobuf helpers


def check_enum(enum: Any, value: int, field: str) -> int:
    """A protobuf enum value the API defines (an unknown number, which proto3
    accepts on the wire, is INVALID_ARGUMENT)."""
    if value not in enum.values():
        raise InvalidArgument(
            f"unknown {field} value {value}", reason="INVALID_ENUM", metadata={"field": field}
        )
    return value


def struct_from_dict(data: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(dict(data))
    return out


def dict_from_struct(struct: struct_pb2.Struct, field: str = "") -> dict[str, Any]:
    """A Struct as plain data; INVALID_ARGUMENT when it holds NaN or infinity
    (a Struct's numbers are doubles, JSON has no word for those)."""
    return dict(value_from_proto(struct, field))


def value_from_proto(message: Any, field: str = "") -> Any:
    """A Struct, Value or ListValue as plain data (json_format.MessageToDict raises
    ValueError on a non-finite number)."""
    try:
        return json_format.MessageToDict(message)
    except ValueError:
        raise InvalidArgument(
            f"{field or 'a value'} holds NaN or infinity, which JSON cannot carry",
            reason="NON_FINITE_NUMBER",
            metadata={"field": field} if field else None,
        ) from None


def timestamp(seconds: float) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for a Unix time; None (field left unset) for 0."""
    if not seconds:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts
