"""The web service in the chart: its Deployment (HTTP probes on its own health
endpoints), Service, optional Ingress with SSE-friendly annotations, and TLS to a
gateway that serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate

from tests.helm.test_chart import (  # chart_copy: the fixture
    KUBE_VERSION,
    chart_copy,
    container,
    manifests,
)

__all__ = ["chart_copy"]


def config_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    (data,) = [
        d["data"] for d in docs if d["kind"] == "ConfigMap" and "config" in d["metadata"]["name"]
    ]
    return dict(data)


def ours(docs: list[dict[str, Any]], kind: str, suffix: str = "-web") -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]


def test_web_deployment_service_and_probes(chart_copy: Path) -> None:
    docs = manifests(chart_copy, {})
    (deployment,) = ours(docs, "Deployment")
    c = container(deployment)
    assert c["args"] == ["serve", "web", "--port", "8080"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    (service,) = ours(docs, "Service")
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 8080)]
    (config,) = [
        d["data"] for d in docs if d["kind"] == "ConfigMap" and "config" in d["metadata"]["name"]
    ]
    assert config["RAGMESH_WEB_PORT"] == "8080"
    assert config["RAGMESH_WEB_GATEWAY_TLS"] == "false"
    assert config["RAGMESH_GATEWAY_ADDR"].endswith("-gateway:50051")
    assert not ours(docs, "Ingress")  # off by default


def test_web_ingress_keeps_event_streams_unbuffered(chart_copy: Path) -> None:
    values = {
        "web": {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": ["rag.example.com"],
                "tls": [{"secretName": "rag-tls", "hosts": ["rag.example.com"]}],
            }
        }
    }
    docs = manifests(chart_copy, values)
    (ingress,) = ours(docs, "Ingress")
    kubernetes_validate.validate(ingress, KUBE_VERSION, strict=True)
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 300
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "rag.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["port"] == {"name": "http"} and backend["name"].endswith("-web")


def test_web_verifies_a_tls_gateway_and_can_be_turned_off(chart_copy: Path) -> None:
    docs = manifests(chart_copy, {"gateway": {"tls": {"existingSecret": "gw-tls"}}})
    (deployment,) = ours(docs, "Deployment")
    (config,) = [
        d["data"] for d in docs if d["kind"] == "ConfigMap" and "config" in d["metadata"]["name"]
    ]
    assert config["RAGMESH_WEB_GATEWAY_TLS"] == "true"
    ca = config["RAGMESH_WEB_GATEWAY_CA_FILE"]
    (volume,) = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "gateway-tls"
    ]
    assert volume["secret"] == {
        "secretName": "gw-tls",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    (mount,) = [m for m in container(deployment)["volumeMounts"] if m["name"] == "gateway-tls"]
    assert ca == f"{mount['mountPath']}/ca.crt"
    assert not ours(manifests(chart_copy, {"web": {"enabled": False}}), "Deployment")
