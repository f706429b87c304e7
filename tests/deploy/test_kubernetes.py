"""deploy/kubernetes: every manifest valid against the Kubernetes API schemas, and every name in them that the
server defines (probe paths, port, E5RT_* variables, metric names, the image's user) read from the code.

The base and the multi-model overlay are rendered with `kubectl kustomize` (kustomize v5 built into kubectl, on
this kind of machine); the raw files are validated too, so a machine without kubectl still checks the base."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are meant for (HPA v2, PDB v1, startupProbe)
CRDS = {"ServiceMonitor"}  # the Prometheus Operator's: no schema in the Kubernetes API, checked by hand below
RENDERED = ["base", "overlays/multi-model"]


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _render(path: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    proc = subprocess.run([kubectl, "kustomize", str(KUBE / path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return _docs(proc.stdout)


def _validate(doc: dict[str, Any]) -> None:
    if doc["kind"] in CRDS:
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _resource_files() -> Iterator[Path]:
    for path in sorted(KUBE.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            yield path


@pytest.mark.parametrize("path", [p.relative_to(KUBE).as_posix() for p in _resource_files()])
def test_each_file_is_valid(path: str) -> None:
    for doc in _docs((KUBE / path).read_text()):
        _validate(doc)


@pytest.fixture(scope="module", params=RENDERED)
def rendered(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    docs = _render(request.param)
    for doc in docs:
        _validate(doc)  # what kubectl apply would send
    return {doc["kind"]: doc for doc in docs}


def _serve_routes() -> set[tuple[str, str]]:
    from e5rt import Embedder
    from e5rt.config import ServeOptions
    from e5rt.server.app import create_app
    from e5rt.server.models import ModelEntry, ModelSet

    return set(create_app(ModelSet([ModelEntry(Embedder.fake)], ServeOptions())).handlers)


def _variables(command: str) -> set[str]:
    """The E5RT_* variables a command of the real parser reads (its help names each one)."""
    from e5rt.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    names: set[str] = set()
    for action in sub.choices[command]._actions:
        names.update(re.findall(r"E5RT_[A-Z0-9_]+", action.help or ""))
    return names


def _metric_names() -> set[str]:
    from e5rt.server.metrics import ServerMetrics

    return {metric.name for metric in ServerMetrics().registry.collect()}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "<from secret>") for e in container.get("env", [])}


def test_probes_port_and_variables_are_the_servers(rendered: dict[str, dict[str, Any]]) -> None:
    from e5rt.config import ServeOptions

    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    routes = _serve_routes()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = server[probe]["httpGet"]
        assert ("GET", get["path"]) in routes, (probe, get)
        assert get["port"] == "http"
    (port,) = server["ports"]
    env = _env(server)
    assert port["name"] == "http" and port["containerPort"] == int(env["E5RT_PORT"])
    assert ServeOptions().port == port["containerPort"]  # the image's default too (Dockerfile: E5RT_PORT)
    known = _variables("serve")
    assert set(k for k in env if k.startswith("E5RT_")) <= known, set(env) - known
    for init in pod["initContainers"]:
        assert init["command"] == ["e5rt", "pull"]
        init_env = _env(init)
        assert set(k for k in init_env if k.startswith("E5RT_")) <= _variables("pull")
        # the init container fills the entry the server looks up: the same sources and cache-key settings
        assert init["args"] == server["args"]
        for key in ("E5RT_MODEL_CACHE", "E5RT_REVISION", "E5RT_EXPORT_VARIANTS"):
            assert init_env.get(key) == env.get(key), key
    # ONNX Runtime's threads are the CPU the pod asked for
    assert env["E5RT_THREADS"] == str(server["resources"]["requests"]["cpu"])
    service = rendered["Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == rendered["Deployment"]["spec"]["selector"]["matchLabels"]


def test_shutdown_fits_in_the_grace_period(rendered: dict[str, dict[str, Any]]) -> None:
    from e5rt.config import ServeOptions

    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    timeout = float(_env(server).get("E5RT_SHUTDOWN_TIMEOUT", ServeOptions().shutdown_timeout_s))
    pause = server["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > timeout + float(pause[1])


def test_pods_run_as_the_images_user_on_a_read_only_root(rendered: dict[str, dict[str, Any]]) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None
    pod = rendered["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == tuple(map(int, user.groups()))
    mounts = set()
    for c in pod["containers"] + pod["initContainers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts |= {(m["name"], m["mountPath"]) for m in c["volumeMounts"]}
    # the cache (E5RT_MODEL_CACHE) and /tmp are volumes: nothing else is written
    assert ("models", "/models") in mounts and ("tmp", "/tmp") in mounts
    assert {v["name"] for v in pod["volumes"]} == {"models", "tmp"}


def test_disruption_budget_and_autoscalers_point_at_the_deployment(rendered: dict[str, dict[str, Any]]) -> None:
    deployment = rendered["Deployment"]
    pdb, hpa = rendered["PodDisruptionBudget"], rendered["HorizontalPodAutoscaler"]
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain never blocks
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    kinds = {m["type"] for m in hpa["spec"]["metrics"]}
    assert "Resource" in kinds
    metrics = _metric_names()
    for m in hpa["spec"]["metrics"]:
        if m["type"] == "Pods":
            assert m["pods"]["metric"]["name"] in metrics
            assert "ServiceMonitor" in rendered  # the series must be scraped to exist


def test_the_service_monitor_scrapes_the_servers_metrics() -> None:
    docs = _render("overlays/multi-model")
    by_kind = {d["kind"]: d for d in docs}
    monitor, service = by_kind["ServiceMonitor"], by_kind["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert ("GET", endpoint["path"]) in _serve_routes() and endpoint["path"] == "/metrics"
    assert "e5rt_queue_texts" in _metric_names()
    # the overlay serves several models in one pod and pulls them all first
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    assert len(pod["containers"][0]["args"]) == 2 and pod["initContainers"][0]["args"] == pod["containers"][0]["args"]
