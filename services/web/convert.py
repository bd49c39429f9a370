"""Gateway messages as JSON objects for the HTTP APIs.

The proto3 JSON mapping (field names as in the .proto, every field present, enums
by name, timestamps in RFC 3339) except that 64-bit integers stay numbers: the
mapping writes them as strings for JavaScript's sake, but no count or offset here
comes near 2^53. A field the protos gain later (pages, sentence offsets) appears
in the JSON without a change here.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from ragmesh.client.results import location_text
from ragmesh.common.v1 import common_pb2

_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_WELL_KNOWN = {"google.protobuf.Timestamp", "google.protobuf.Struct", "google.protobuf.Value"}


def _numbers(data: Any, desc: Any) -> Any:
    """int64 strings back to ints, through nested messages."""
    if not isinstance(data, dict):
        return data
    for fd in desc.fields:
        value = data.get(fd.name)
        if value is None:
            continue
        if fd.type in _INT64:
            data[fd.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and _plain(fd.message_type):
            items = value if isinstance(value, list) else [value]
            for item in items:
                _numbers(item, fd.message_type)
    return data


def _plain(desc: Descriptor | None) -> bool:
    """A message of ours (not a well-known type or a map entry, which JSON renders
    in their own ways)."""
    return (
        desc is not None and desc.full_name not in _WELL_KNOWN and not desc.GetOptions().map_entry
    )


def message_json(msg: Message) -> dict[str, Any]:
    data = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return dict(_numbers(data, msg.DESCRIPTOR))


def citation_json(citation: common_pb2.Citation) -> dict[str, Any]:
    """A citation (Ask source, Search hit) with `location`, its human-readable place:
    "p. 22, chars 100–900"."""
    data = message_json(citation)
    data["location"] = location_text(citation)
    return data
