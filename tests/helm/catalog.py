"""The RAGMESH_* settings as the Helm chart sees them, and the chart's generated docs.

Every pydantic-settings class in services/*/config.py is a source of RAGMESH_*
environment variables. The chart puts each one in exactly one place:

- `config.<section>.<camelCaseKey>` in values.yaml → the ConfigMap (most settings);
- computed by the chart from other values (service addresses, Milvus, Redis, LLM,
  TEI) → CHART_MANAGED below, in the ConfigMap or, when a Secret is involved, in
  the pod's env;
- secrets → a Secret, never the ConfigMap (SECRET_SOURCES below).

`python -m tests.helm.catalog --write` regenerates the `config:` block of
values.yaml, its part of values.schema.json, and the values table of the chart
README; tests/helm/test_chart.py fails when any of them is out of date.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices, SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from scripts.config_table import config_modules as table_modules

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "ragmesh"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
README = CHART / "README.md"

BEGIN_CONFIG = "# BEGIN GENERATED CONFIG (python -m tests.helm.catalog --write)"
END_CONFIG = "# END GENERATED CONFIG"
BEGIN_TABLE = "<!-- BEGIN VALUES TABLE (python -m tests.helm.catalog --write) -->"
END_TABLE = "<!-- END VALUES TABLE -->"

# Settings whose value the chart derives from other values, and where it comes from.
CHART_MANAGED: dict[str, str] = {
    "RAGMESH_CHUNKING_ADDR": "the chunking Service: `dns:///<fullname>-chunking-headless."
    "<namespace>.svc.<clusterDomain>:<chunking.port>` (`grpcLoadBalancing.enabled`), else "
    "`<fullname>-chunking:<chunking.port>`",
    "RAGMESH_EMBEDDING_ADDR": "the embedding Service",
    "RAGMESH_RETRIEVAL_ADDR": "the retrieval Service",
    "RAGMESH_GENERATION_ADDR": "the generation Service",
    "RAGMESH_GATEWAY_ADDR": "the gateway Service",
    "RAGMESH_WEB_PORT": "`web.port` (the web container's `--port`)",
    "RAGMESH_WEB_GATEWAY_TLS": "`gateway.tls.existingSecret` (TLS to the gateway when set)",
    "RAGMESH_WEB_GATEWAY_CA_FILE": "the mounted ca.crt of `gateway.tls.existingSecret`",
    "RAGMESH_GRPC_LB_POLICY": "`grpcLoadBalancing.enabled` (`round_robin` over the headless "
    "Services; false: `pick_first`)",
    "RAGMESH_EMBEDDING_BACKEND": "`embedding.backend`",
    "RAGMESH_EMBEDDING_TEI_URL": "the TEI Service (`embedding.backend: tei`)",
    "RAGMESH_EMBEDDING_OPENAI_BASE_URL": "`embedding.openai.baseUrl`",
    "RAGMESH_EMBEDDING_OPENAI_MODEL": "`embedding.openai.model`",
    "RAGMESH_RETRIEVAL_MILVUS_URI": "the bundled Milvus Service or `externalMilvus.uri`",
    "RAGMESH_REDIS_URL": "the bundled Redis or `externalRedis.*` (password from a Secret)",
    "RAGMESH_GATEWAY_API_KEYS_FILE": "the mounted `apiKeys` Secret",
    # only with gateway.tls.existingSecret: the mounted kubernetes.io/tls Secret
    "RAGMESH_GATEWAY_TLS_CERT_FILE": "`gateway.tls.existingSecret` (its tls.crt, mounted)",
    "RAGMESH_GATEWAY_TLS_KEY_FILE": "`gateway.tls.existingSecret` (its tls.key, mounted)",
    "RAGMESH_GATEWAY_TLS_CLIENT_CA_FILE": "`gateway.tls.requireClientCert` (the Secret's ca.crt)",
    "RAGMESH_GATEWAY_HEALTH_PORT": "`gateway.tls.healthPort` (with TLS, for the kubelet's probes)",
    "RAGMESH_GENERATION_LLM_BASE_URL": "the vLLM Service or `llm.external.baseUrl`",
    "RAGMESH_GENERATION_LLM_MODEL": "`vllm.model` or `llm.external.model`",
    "RAGMESH_WORKER_QUEUE": "`worker.queue` (also the workers' `--queues` and KEDA's list)",
    "RAGMESH_KEEP_ORIGINALS": "`originals.store` (`none`: false)",
    "RAGMESH_BLOB_STORE": "`originals.store` (pods share no directory: always `s3`)",
    "RAGMESH_BLOB_S3_ENDPOINT": "`originals.s3.endpoint`, or the bundled Milvus's MinIO",
    "RAGMESH_BLOB_S3_BUCKET": "`originals.s3.bucket`",
    "RAGMESH_BLOB_S3_PREFIX": "`originals.s3.prefix`",
    "RAGMESH_BLOB_S3_REGION": "`originals.s3.region`",
    "RAGMESH_BLOB_S3_ACCESS_KEY": "`originals.s3.existingSecret`, or the bundled MinIO's Secret",
}

# Secret settings and the Secret each comes from; none of them is ever in the ConfigMap.
SECRET_SOURCES: dict[str, str] = {
    "RAGMESH_EMBEDDING_OPENAI_API_KEY": "`embedding.openai.existingSecret`",
    "RAGMESH_RETRIEVAL_MILVUS_TOKEN": "`externalMilvus.existingSecret`, or for the bundled Milvus "
    "`root:$(MILVUS_ROOT_PASSWORD)` with the password from the Secret Milvus reads it from",
    "RAGMESH_GATEWAY_API_KEYS": "not set: the keys come from the `apiKeys` Secret as a file",
    "RAGMESH_GENERATION_LLM_API_KEY": "`llm.external.existingSecret`",
    "RAGMESH_RERANK_API_KEY": "`reranker.existingSecret`",
    "RAGMESH_BLOB_S3_SECRET_KEY": "`originals.s3.existingSecret`, or the bundled MinIO's Secret",
}

# Defaults that differ in a cluster from a developer's machine.
KUBERNETES_DEFAULTS: dict[str, Any] = {
    "RAGMESH_BIND_HOST": "0.0.0.0",  # reachable from other pods
    "RAGMESH_LOG_FORMAT": "json",
    "RAGMESH_EMBEDDING_CACHE_DIR": "/cache/ragmesh",  # an emptyDir: the root fs is read-only
    # several retrieval replicas: a read must see writes made through any replica
    "RAGMESH_RETRIEVAL_CONSISTENCY": "Strong",
    # one thread per requested CPU: the runtimes' default is every core of the node
    "RAGMESH_EMBEDDING_THREADS": 1,
    # vLLM and hosted APIs answer many requests at once (make run's llama.cpp server one);
    # each generation replica queues beyond this many
    "RAGMESH_GENERATION_LLM_MAX_CONCURRENCY": 16,
    # the chart's LLM is vLLM or an external API, never the bundled 135M model: AUTO
    # answers are generative (docs/generation.md, answer modes)
    "RAGMESH_GATEWAY_LLM_SMALL": False,
    # clients resolve the headless Services again: new replicas get calls within minutes
    "RAGMESH_GRPC_MAX_CONNECTION_AGE_S": 300,
}


@dataclass(frozen=True)
class Setting:
    env: str  # RAGMESH_...
    section: str  # values key under config: (common, gateway, ...)
    key: str  # camelCase key inside the section
    default: Any  # JSON-compatible; None when unset
    description: str
    annotation: Any
    owner: str  # module:Class

    @property
    def is_secret(self) -> bool:
        return _is_secret(self.env, self.annotation)

    @property
    def in_config(self) -> bool:
        return self.env not in CHART_MANAGED and self.env not in SECRET_SOURCES


_SECRET_NAME = re.compile(r"(API_KEYS?|PASSWORD|SECRET|CREDENTIALS|TOKEN)$")
_COUNT_NAME = re.compile(r"(PER|MAX|MIN|NUM|OVERHEAD)_TOKENS?$")


def _is_secret(env: str, annotation: Any) -> bool:
    """A setting that holds a credential (by type, or by a name like *_API_KEY or *_TOKEN)."""
    if annotation is SecretStr or SecretStr in typing.get_args(annotation):
        return True
    return bool(_SECRET_NAME.search(env)) and not _COUNT_NAME.search(env)


def camel(snake: str) -> str:
    head, *rest = snake.lower().split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def config_modules() -> list[str]:
    """The services' settings modules (not the local launcher's: no pod reads those)."""
    return list(table_modules(include_dev=False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, tuple | list | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def settings_classes() -> list[type[BaseSettings]]:
    found: list[type[BaseSettings]] = []
    for name in config_modules():
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseSettings)
                and obj is not BaseSettings
                and obj.__module__ == module.__name__
                and str(obj.model_config.get("env_prefix", "")).upper().startswith("RAGMESH_")
            ):
                found.append(obj)
    return found


def discover() -> list[Setting]:
    """Every RAGMESH_* setting, one entry per environment variable, sorted by name."""
    classes = settings_classes()
    prefixes = sorted(
        {str(c.model_config.get("env_prefix", "")).upper() for c in classes}, key=len, reverse=True
    )
    settings: dict[str, Setting] = {}
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        for field_name, info in cls.model_fields.items():
            env = prefix + field_name.upper()
            alias = info.validation_alias
            if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
                env = alias.choices[0].upper()
            elif isinstance(alias, str):
                env = alias.upper()
            section_prefix = next(p for p in prefixes if env.startswith(p))
            section = camel(section_prefix.removeprefix("RAGMESH_").strip("_")) or "common"
            if info.default is not PydanticUndefined:
                default = info.default
            elif info.default_factory is not None:
                default = info.default_factory()  # type: ignore[call-arg]
            else:
                default = None
            default = _jsonable(default)
            if isinstance(default, str) and default.startswith((str(REPO), str(Path.home()))):
                # a path on the machine that generated this file: in the image the
                # service's own default applies
                default = None
            default = KUBERNETES_DEFAULTS.get(env, default)
            setting = Setting(
                env=env,
                section=section,
                key=camel(env.removeprefix(section_prefix)),
                default=default,
                description=" ".join((info.description or "").split()),
                annotation=info.annotation,
                owner=f"{cls.__module__}:{cls.__name__}",
            )
            # the same variable read by two classes (e.g. shared by gateway and worker)
            settings.setdefault(env, setting)
    return sorted(settings.values(), key=lambda s: s.env)


# ---- values.yaml config block --------------------------------------------------------


def _yaml_scalar(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)  # JSON is YAML, and unambiguous


def config_block(settings: list[Setting]) -> str:
    lines = [BEGIN_CONFIG, "config:"]
    sections: dict[str, list[Setting]] = {}
    for s in settings:
        if s.in_config:
            sections.setdefault(s.section, []).append(s)
    order = sorted(sections, key=lambda name: (name != "common", name))
    for section in order:
        lines.append(f"  {section}:")
        for s in sorted(sections[section], key=lambda s: s.key):
            doc = s.description or "(undocumented)"
            lines.append(f"    # -- {doc} ({s.env})")
            lines.append(f"    {s.key}: {_yaml_scalar(s.default)}")
    lines.append(END_CONFIG)
    return "\n".join(lines)


def replace_between(text: str, begin: str, end: str, block: str) -> str:
    start = text.index(begin)
    stop = text.index(end, start) + len(end)
    return text[:start] + block + text[stop:]


# ---- values.schema.json config part ---------------------------------------------------


def _json_type(annotation: Any) -> list[str]:  # noqa: PLR0911 - one return per manifest kind
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        out: list[str] = []
        for arg in args:
            out += [t for t in _json_type(arg) if t not in out]
        return out
    if origin is typing.Literal:
        return sorted({_json_type(type(a))[0] for a in args})
    if annotation is type(None):
        return ["null"]
    if annotation is bool:
        return ["boolean"]
    if annotation is int:
        return ["integer"]
    if annotation is float:
        return ["number"]
    if annotation in (str, Path, SecretStr) or (
        isinstance(annotation, type) and issubclass(annotation, str | Path | Enum)
    ):
        return ["string"]
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set):
        return ["array"]
    if origin is dict or annotation is dict:
        return ["object"]
    return ["string", "number", "boolean", "array", "object", "null"]


def _section_prefix(section: str) -> str:
    if section == "common":
        return "RAGMESH_"
    return "RAGMESH_" + re.sub(r"(?<!^)(?=[A-Z])", "_", section).upper() + "_"


def config_schema(settings: list[Setting]) -> dict[str, Any]:
    sections: dict[str, dict[str, Any]] = {}
    for s in settings:
        if not s.in_config:
            continue
        prop: dict[str, Any] = {"description": f"{s.description} ({s.env})"}
        kinds = _json_type(s.annotation)
        if s.default is None and "null" not in kinds:
            kinds.append("null")
        prop["type"] = kinds[0] if len(kinds) == 1 else kinds
        if typing.get_origin(s.annotation) is typing.Literal:
            prop["enum"] = list(typing.get_args(s.annotation))
        section = sections.setdefault(
            s.section,
            {
                "type": "object",
                "description": f"{_section_prefix(s.section)}* settings",
                "additionalProperties": True,
                "properties": {},
            },
        )
        section["properties"][s.key] = prop
    return {
        "type": "object",
        "description": "RAGMESH_* settings rendered into the ConfigMap (generated).",
        "additionalProperties": {"type": "object"},
        "properties": dict(sorted(sections.items())),
    }


# ---- the README values table ------------------------------------------------------------

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.\-/\"]+):(?P<rest>.*)$")


@dataclass(frozen=True)
class DocumentedValue:
    path: str
    description: str


def documented_values(text: str) -> tuple[list[DocumentedValue], list[str]]:  # noqa: C901 - walks values.yaml and the schema together
    """Values with a `# --` comment, and the leaf keys that have none.

    A documented key whose value is a block (e.g. `resources:`) covers the keys
    inside it.
    """
    stack: list[tuple[int, str]] = []
    pending: str | None = None
    covered_below: int | None = None  # indent of a documented block being skipped
    documented: list[DocumentedValue] = []
    undocumented: list[str] = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = stripped[4:].strip()
            continue
        if not stripped:
            pending = None
            continue
        if stripped.startswith(("#", "- ")):
            continue
        match = _KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        if covered_below is not None:
            if indent > covered_below:
                continue
            covered_below = None
        key = match["key"].strip('"')
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        rest = match["rest"].strip()
        is_block = rest == "" and _next_is_child(lines, number, indent)
        if pending is not None:
            documented.append(DocumentedValue(path, pending))
            pending = None
            if is_block:
                covered_below = indent
                continue
        elif not is_block:
            undocumented.append(path)
        if is_block:
            stack.append((indent, key))
    return documented, undocumented


def _next_is_child(lines: list[str], number: int, indent: int) -> bool:
    for line in lines[number + 1 :]:
        if not line.strip() or line.strip().startswith("#"):
            continue
        return len(line) - len(line.lstrip()) > indent
    return False


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


def values_table(text: str) -> str:
    documented, _ = documented_values(text)
    data = yaml.safe_load(text)
    rows = [BEGIN_TABLE, "| Key | Default | Description |", "|---|---|---|"]
    for value in documented:
        default = json.dumps(_lookup(data, value.path), ensure_ascii=False).replace("|", "\\|")
        description = (
            value.description.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
        )
        rows.append(f"| `{value.path}` | `{default}` | {description} |")
    rows.append(END_TABLE)
    return "\n".join(rows)


# ---- writing -----------------------------------------------------------------------------


def expected_files() -> dict[Path, str]:
    """The generated files' expected contents."""
    settings = discover()
    values = replace_between(VALUES.read_text(), BEGIN_CONFIG, END_CONFIG, config_block(settings))
    schema = json.loads(SCHEMA.read_text())
    schema["properties"]["config"] = config_schema(settings)
    readme = replace_between(README.read_text(), BEGIN_TABLE, END_TABLE, values_table(values))
    return {
        VALUES: values,
        SCHEMA: json.dumps(schema, indent=2, ensure_ascii=False) + "\n",
        README: readme,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update the generated files")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected_files().items():
        if path.read_text() != text:
            stale.append(path)
            if args.write:
                path.write_text(text)
    for path in stale:
        print(f"{'updated' if args.write else 'out of date'}: {path.relative_to(REPO)}")
    return 1 if stale and not args.write else 0


if __name__ == "__main__":
    sys.exit(main())
