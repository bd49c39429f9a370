"""The chart's `tracing.*` values: off by default (no OTEL_* variable anywhere);
on, every ragmesh Deployment — the five services and the workers — gets the
standard OTEL_* variables, each under its own service.name, and the services'
own set-up (services.common.tracing) reads them as "on"."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from services.common import tracing
from tests.helm.test_chart import (
    CHART,
    GRPC_SERVICES,
    KUBE_VERSION,
    chart_copy,
    container,
    manifests,
)

__all__ = ["chart_copy"]  # the fixture, shared with test_chart

# web gets the variables too (it reads them; no spans of its own yet: docs/observability.md)
COMPONENTS = {*GRPC_SERVICES, "worker", "web"}
ON = {
    "tracing": {
        "enabled": True,
        "otlpEndpoint": "http://otel-collector.observability:4317",
        "sampler": "parentbased_traceidratio",
        "samplerArg": "0.25",
        "resourceAttributes": {"deployment.environment": "prod", "cluster": "eu-1"},
        "headersSecret": "otlp-auth",
    }
}


def ragmesh_containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The container of each ragmesh Deployment, by component."""
    found = {}
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        if doc["kind"] == "Deployment" and labels.get("app.kubernetes.io/part-of"):
            found[labels["app.kubernetes.io/component"]] = container(doc)
    return found


def otel_env(c: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom"))
        for e in c.get("env", [])
        if e["name"].startswith("OTEL_")
    }


def test_off_by_default(chart_copy: Path) -> None:
    containers = ragmesh_containers(manifests(chart_copy, {}))
    assert set(containers) == COMPONENTS
    for component, c in containers.items():
        assert otel_env(c) == {}, component
        env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
        assert not tracing.wanted(env)


def test_every_deployment_exports_under_its_own_name(chart_copy: Path) -> None:
    docs = manifests(chart_copy, ON)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    containers = ragmesh_containers(docs)
    assert set(containers) == COMPONENTS
    for component, c in containers.items():
        env = otel_env(c)
        assert env == {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4317",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_SERVICE_NAME": f"ragmesh-{component}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
            "OTEL_RESOURCE_ATTRIBUTES": "cluster=eu-1,deployment.environment=prod",
            "OTEL_EXPORTER_OTLP_HEADERS": {"secretKeyRef": {"name": "otlp-auth", "key": "headers"}},
        }, component
        assert tracing.wanted({k: v for k, v in env.items() if isinstance(v, str)})


def test_a_minimal_setting_and_the_prefix(chart_copy: Path) -> None:
    values = {
        "tracing": {
            "enabled": True,
            "otlpEndpoint": "https://otlp.example:4317",
            "insecure": False,
            "serviceNamePrefix": "rag-staging",
        }
    }
    containers = ragmesh_containers(manifests(chart_copy, values))
    env = otel_env(containers["generation"])
    assert env["OTEL_SERVICE_NAME"] == "rag-staging-generation"
    assert env["OTEL_EXPORTER_OTLP_INSECURE"] == "false"
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_always_on"
    for absent in (
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ):
        assert absent not in env


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"tracing": {"enabled": True}}, "/tracing/otlpEndpoint"),
        ({"tracing": {"sampler": "sometimes"}}, "/tracing/sampler"),
        ({"tracing": {"endpoint": "http://c:4317"}}, "endpoint"),
    ],
)
def test_schema_rejects_bad_tracing_values(values: dict[str, Any], where: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as excinfo:
        chart.validate_schema(values)
    assert where in str(excinfo.value)


def test_the_templates_require_an_endpoint_even_without_the_schema(
    chart_copy: Path, tmp_path: Path
) -> None:
    unchecked = tmp_path / "ragmesh"
    shutil.copytree(chart_copy, unchecked)
    (unchecked / "values.schema.json").unlink()
    with helm.Chart.load(str(unchecked)) as chart, pytest.raises(helm.HelmError) as excinfo:
        chart.render({"tracing": {"enabled": True}})
    assert "tracing.otlpEndpoint is required" in str(excinfo.value)
