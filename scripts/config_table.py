"""Print the README's configuration table from the settings classes themselves.

Every RAGMESH_* variable is a field of a pydantic-settings class in
services/common/config.py, services/<name>/config.py (or settings.py) or
devstack/launcher/settings.py; this walks them so the
README table cannot drift (tests/unit/test_readme_config.py checks it).
`python -m scripts.config_table` prints the Markdown rows.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

import services

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setting:
    env: str
    default: str
    description: str
    owner: str


def config_modules(include_dev: bool = True) -> Iterator[str]:
    """Modules declaring settings classes: the services' (and `make run`'s own)."""
    yield "services.common.config"
    for info in sorted(pkgutil.iter_modules(services.__path__), key=lambda m: m.name):
        if info.ispkg and info.name != "common":
            for sub in ("config", "settings"):
                name = f"services.{info.name}.{sub}"
                if importlib.util.find_spec(name) is not None:
                    yield name
    if include_dev:
        yield "devstack.launcher.settings"  # `make run`'s own settings


def _default(field: object) -> str:
    default = getattr(field, "default", None)
    factory = getattr(field, "default_factory", None)
    if factory is not None:
        default = factory()
    if default is None or default == "":
        return ""
    if isinstance(default, bool):
        return str(default).lower()
    # Paths inside the checkout or the home directory are machine-specific: show
    # them relative to the repository, or under ~.
    text = str(default).replace(f"{REPO}/", "")
    return text.replace(str(Path.home()), "~")


def _alias(alias: object) -> str | None:
    """The environment name a field reads when it declares one (str or AliasChoices)."""
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return next((c for c in alias.choices if isinstance(c, str)), None)
    return None


def settings() -> list[Setting]:
    found: dict[str, Setting] = {}
    for module_name in config_modules():
        module = importlib.import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if not issubclass(cls, BaseSettings) or cls is BaseSettings:
                continue
            if cls.__module__ != module_name:
                continue
            prefix = str(cls.model_config.get("env_prefix", ""))
            for name, field in cls.model_fields.items():
                alias = _alias(field.validation_alias)
                env = (alias or f"{prefix}{name}").upper()
                if not env.startswith("RAGMESH_") or env in found:
                    continue
                found[env] = Setting(
                    env,
                    _default(field),
                    (field.description or "").strip(),
                    module_name.split(".")[1],
                )
    return sorted(found.values(), key=lambda s: (s.owner != "common", s.owner, s.env))


def markdown(owners: set[str] | None = None) -> str:
    """The table of every setting, or of those of the named owners (the package
    that declares them: common, chunking, gateway, jobs, launcher, ...)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in settings():
        if owners is not None and s.owner not in owners:
            continue
        default = f"`{s.default}`" if s.default else "(empty)"
        rows.append(f"| `{s.env}` | {default} | {s.description.replace('|', '/')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(markdown() + "\n")
