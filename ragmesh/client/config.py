"""Where the SDK and the CLI find the gateway, the API key and how to reach it.

Precedence: explicit arguments, then RAGMESH_GATEWAY_ADDR / RAGMESH_API_KEY,
then the client config file the local launcher (`make run`) writes, then the
default address 127.0.0.1:50051.

TLS follows the same order: `tls` / `ca_file` arguments (`--tls`, `--no-tls`,
`--ca-file`), then RAGMESH_TLS (true/false) and RAGMESH_TLS_CA_FILE, then the
config file's `tls` and `ca_file` keys, which describe the gateway the file
names and so apply only while the address comes from the file too. At each
level a CA file means TLS unless that level also turns TLS off; the highest
level that says anything decides. TLS without a CA file trusts the system's
roots.

The config file is the first that exists of: $RAGMESH_CONFIG,
`.ragmesh/config.json` in the working directory or a parent, and
`~/.config/ragmesh/config.json`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_GATEWAY_ADDR = "127.0.0.1:50051"
PROJECT_CONFIG = Path(".ragmesh") / "config.json"


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ragmesh" / "config.json"


def config_candidates(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> list[Path]:
    env = os.environ if env is None else env
    explicit = env.get("RAGMESH_CONFIG")
    if explicit:
        return [Path(explicit)]
    here = (cwd or Path.cwd()).resolve()
    found = [parent / PROJECT_CONFIG for parent in (here, *here.parents)]
    return [*found, user_config_path()]


def find_config_file(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    for path in config_candidates(cwd, env):
        if path.is_file():
            return path
    return None


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read ragmesh config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"ragmesh config {path} must hold a JSON object")
    return data


def write_config_file(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically, readable by the owner only (it holds an API key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(data), fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{what} must be true or false, not {value!r}")


@dataclass
class ClientSettings:
    gateway_addr: str = DEFAULT_GATEWAY_ADDR
    api_key: str = ""
    knowledge_base: str = ""
    # Internal services' addresses (for `ragmesh status`), by service name.
    services: dict[str, str] = field(default_factory=dict)
    source: str = "defaults"  # where gateway_addr came from, for error messages
    #: talk TLS to the gateway
    tls: bool = False
    #: PEM CA bundle to verify the gateway's certificate with (empty: system roots)
    ca_file: str = ""

    @classmethod
    def resolve(
        cls,
        gateway_addr: str | None = None,
        api_key: str | None = None,
        *,
        tls: bool | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        read_file: bool = True,
    ) -> ClientSettings:
        """Settings from the arguments, the environment and (unless `read_file` is
        False) the config file, in that order of precedence."""
        env = os.environ if env is None else env
        file_data: dict[str, Any] = {}
        path = find_config_file(cwd, env) if read_file else None
        if path is not None:
            file_data = read_config_file(path)
        settings = cls()
        if file_data and path is not None:
            settings.gateway_addr = str(file_data.get("gateway_addr") or settings.gateway_addr)
            settings.api_key = str(file_data.get("api_key") or "")
            settings.knowledge_base = str(file_data.get("knowledge_base") or "")
            services = file_data.get("services") or {}
            if isinstance(services, dict):
                settings.services = {str(k): str(v) for k, v in services.items()}
            settings.source = str(path)
            if file_data.get("ca_file"):
                # relative to the config file, not to the working directory
                settings.ca_file = str(path.parent / str(file_data["ca_file"]))
            settings.tls = parse_bool(file_data.get("tls", bool(settings.ca_file)), f"{path}: tls")
        if env.get("RAGMESH_GATEWAY_ADDR"):
            settings.gateway_addr = env["RAGMESH_GATEWAY_ADDR"]
            settings.source = "RAGMESH_GATEWAY_ADDR"
        if env.get("RAGMESH_API_KEY"):
            settings.api_key = env["RAGMESH_API_KEY"]
        if gateway_addr:
            settings.gateway_addr = gateway_addr
            settings.source = "--addr"
        if api_key:
            settings.api_key = api_key
        if settings.source != str(path):
            # the file's TLS settings describe the file's gateway, not this one
            settings.tls, settings.ca_file = False, ""
        settings._resolve_tls(tls, ca_file, env)
        return settings

    def _resolve_tls(
        self, tls: bool | None, ca_file: str | os.PathLike[str] | None, env: Mapping[str, str]
    ) -> None:
        """Each level (arguments, then the environment; the file's already in place)
        may say TLS on or off, explicitly or by naming a CA file; the highest that
        says anything wins. The CA file is the highest level's that names one."""
        env_tls: bool | None = None
        if env.get("RAGMESH_TLS") is not None:
            env_tls = parse_bool(env["RAGMESH_TLS"], "RAGMESH_TLS")
        if env.get("RAGMESH_TLS_CA_FILE"):
            self.ca_file = env["RAGMESH_TLS_CA_FILE"]
            env_tls = True if env_tls is None else env_tls
        if env_tls is not None:
            self.tls = env_tls
        if ca_file:
            self.ca_file = os.fspath(ca_file)
            tls = True if tls is None else tls
        if tls is not None:
            self.tls = tls
