"""The Helm chart: lint, Kubernetes schema validation, and what each value does to the objects."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from tests.packaging.conftest import CHART, ROOT, by_kind, env_of, load_script, one, report

K8S_VERSION = "1.37.0"  # the local control plane runs 1.37.x (tests/cluster)
VALUE_SETS = {
    "defaults": [],
    "namespaced-watch": ["--set", "operator.watch.mode=namespaces", "--set", "operator.watch.namespaces={team-a,team-b}"],
    "monitoring-and-network-policy": [
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true",
        "--set", "networkPolicy.enabled=true", "--set", "networkPolicy.apiServerCIDRs={10.0.0.1/32}",
    ],
    "private-registry": [
        "--set", "global.imageRegistry=registry.internal:5000", "--set", "global.imagePullSecrets={regcred}",
        "--set", "worker.image.digest=sha256:" + "a" * 64, "--set", "operator.image.tag=0.1.0-cpu",
    ],
}  # fmt: skip

# prometheus-operator kinds have no schema in kubernetes-validate: check the fields the chart uses.
_ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
        "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
        "relabelings": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"sourceLabels": {"type": "array"}, "targetLabel": {"type": "string"}},
            },
        },
    },
}
_MONITOR_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "required": ["selector"],
    "properties": {
        "selector": {
            "type": "object",
            "properties": {"matchLabels": {"type": "object"}},
            "additionalProperties": False,
        },
        "namespaceSelector": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "any": {"type": "boolean"},
                "matchNames": {"type": "array", "items": {"type": "string"}},
            },
        },
        "endpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1},
        "podMetricsEndpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1},
    },
}


def validate_objects(objs: list[dict[str, Any]]) -> list[str]:
    """Problems found by the Kubernetes OpenAPI schemas (strict: unknown fields are errors)."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    import jsonschema

    problems = []
    for obj in objs:
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            if obj.get("apiVersion") == "monitoring.coreos.com/v1":
                jsonschema.validate(obj["spec"], _MONITOR_SPEC)
            else:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{name}: no schema for {obj.get('apiVersion')} in Kubernetes {K8S_VERSION}")
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as err:
            where = "/".join(str(p) for p in getattr(err, "path", []))
            problems.append(f"{name}: {getattr(err, 'message', err)} (at {where or 'top'})")
    return problems


def test_chart_passes_helm_lint_for_every_value_set(helm):
    for label, args in VALUE_SETS.items():
        result = subprocess.run([helm, "lint", "--strict", str(CHART), *args], capture_output=True, text=True)
        assert result.returncode == 0, f"helm lint ({label}):\n{result.stdout}{result.stderr}"
    report(f"helm lint --strict: ok for {len(VALUE_SETS)} value sets ({', '.join(VALUE_SETS)})")


@pytest.mark.parametrize("label", list(VALUE_SETS))
def test_rendered_objects_validate_against_kubernetes_schemas(render, label):
    objs = render(*VALUE_SETS[label])
    problems = validate_objects(objs)
    assert not problems, "\n".join(problems)
    kinds = sorted({o["kind"] for o in objs})
    report(f"schema-valid for Kubernetes {K8S_VERSION} ({label}): {len(objs)} objects: {', '.join(kinds)}")


def test_schema_validation_catches_a_broken_object():
    broken = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "one"},
    }
    assert validate_objects([broken])


def test_operator_deployment_is_one_replica_recreated_and_restricted(render):
    deployment = one(render(), "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["command"] == ["python", "-m", "curation_operator"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_operator_environment_names_only_settings_the_operator_reads(render):
    from curation_operator.settings import OperatorSettings

    container = one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    known = {f"THRESHER_{name.upper()}" for name in OperatorSettings.model_fields}
    thresher_env = {k for k in env_of(container) if k.startswith("THRESHER_")}
    assert thresher_env <= known, f"unknown operator settings: {sorted(thresher_env - known)}"
    # and the values parse
    settings = OperatorSettings(
        **{k.removeprefix("THRESHER_").lower(): v for k, v in env_of(container).items() if k in known}
    )
    assert settings.worker_service_account == "thresher-worker"
    assert settings.metrics_port == 8000 and settings.worker_metrics_port == 9400
    assert settings.namespaces == []


def test_default_images_use_the_chart_app_version(render):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    container = one(render(), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    expected = f"ghcr.io/thresher-dev/thresher:{chart['appVersion']}"
    assert container["image"] == expected
    assert env_of(container)["THRESHER_WORKER_IMAGE"] == expected


def test_private_registry_rewrites_every_image_and_adds_pull_secrets(render):
    objs = render(*VALUE_SETS["private-registry"])
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.internal:5000/thresher-dev/thresher:0.1.0-cpu"
    assert (
        env_of(container)["THRESHER_WORKER_IMAGE"]
        == "registry.internal:5000/thresher-dev/thresher@sha256:" + "a" * 64
    )
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    worker_sa = [sa for sa in by_kind(objs, "ServiceAccount") if sa["metadata"]["name"] == "thresher-worker"]
    assert worker_sa and all(sa["imagePullSecrets"] == [{"name": "regcred"}] for sa in worker_sa)


def test_cluster_watch_uses_a_cluster_role_with_least_privilege(render):
    objs = render()
    assert not by_kind(objs, "Role")
    role = one(objs, "ClusterRole")
    binding = one(objs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "thresher-operator", "namespace": "thresher-system"}
    ]
    verbs = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert "*" not in {v for vs in verbs.values() for v in vs}
    assert not any("*" in (g, r) for g, r in verbs)
    assert ("", "secrets") not in verbs
    # step Jobs are deleted once their counts are recorded; their pods are the garbage collector's
    assert verbs[("batch", "jobs")] == {"get", "list", "watch", "create", "patch", "delete"}
    assert verbs[("", "pods")] == {"list", "watch"}


def test_namespaced_watch_uses_roles_in_each_watched_namespace_and_no_cluster_role(render):
    objs = render(*VALUE_SETS["namespaced-watch"])
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in by_kind(objs, "Role")) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(objs, "RoleBinding")) == ["team-a", "team-b"]
    container = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["THRESHER_NAMESPACES"] == "team-a,team-b"
    worker_sa_namespaces = sorted(
        sa["metadata"]["namespace"]
        for sa in by_kind(objs, "ServiceAccount")
        if sa["metadata"]["name"] == "thresher-worker"
    )
    assert worker_sa_namespaces == ["team-a", "team-b", "thresher-system"]


def test_monitors_select_the_operator_service_and_the_step_pods(render):
    from curation_operator import builders

    objs = render(*VALUE_SETS["monitoring-and-network-policy"])
    service = one(objs, "Service")
    service_monitor = one(objs, "ServiceMonitor")
    selector = service_monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service_monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    pod_monitor = one(objs, "PodMonitor")
    # the labels the operator puts on step pods (builders.step_labels)
    step_pod_labels = {
        **builders.common_labels(builders.CurationJobRef(namespace="ns", name="job", uid="u")),
        builders.LABEL_COMPONENT: "step",
    }
    assert pod_monitor["spec"]["selector"]["matchLabels"].items() <= step_pod_labels.items()
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_network_policies_deny_worker_egress_and_admit_the_api_server_for_the_operator(render):
    objs = render(*VALUE_SETS["monitoring-and-network-policy"])
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(objs, "NetworkPolicy")}
    workers = policies["thresher-workers"]
    assert workers["policyTypes"] == ["Ingress", "Egress"] and workers["egress"] == []
    operator = policies["thresher-operator"]
    assert {"ipBlock": {"cidr": "10.0.0.1/32"}} in operator["egress"][0]["to"]


def test_an_allowed_object_store_opens_worker_egress_to_it_and_dns_only(render):
    objs = render(*VALUE_SETS["monitoring-and-network-policy"], "--set", "networkPolicy.objectStore.ports={8333}",
                  "--set", "networkPolicy.objectStore.cidrs={10.20.0.0/16}")
    workers = {p["metadata"]["name"]: p["spec"] for p in by_kind(objs, "NetworkPolicy")}["thresher-workers"]
    store, dns = workers["egress"]
    assert store == {"ports": [{"port": 8333, "protocol": "TCP"}], "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns


def test_values_schema_refuses_two_operator_replicas_and_unknown_keys(helm):
    for bad in ("operator.replicas=2", "operator.watch.mode=everywhere", "operatr.replicas=1"):
        result = subprocess.run(
            [helm, "template", "x", str(CHART), "--set", bad], capture_output=True, text=True, timeout=60
        )
        assert result.returncode != 0, f"--set {bad} was accepted"
        assert "schema" in result.stderr.lower() or "values don't meet" in result.stderr.lower()


def test_values_schema_describes_every_default_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    import jsonschema

    jsonschema.validate(values, schema)

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if isinstance(value, dict) and "properties" in node:
            for key, sub in value.items():
                assert key in node["properties"], f"{path}{key} is not in values.schema.json"
                walk(sub, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")


def test_crd_in_the_chart_is_the_generated_crd_kept_on_uninstall(render):
    objs = render()
    crd = one(objs, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    source = yaml.safe_load((ROOT / "manifests" / "crd" / "thresher.dev_curationjobs.yaml").read_text())
    rendered = load_script("render_manifests").normalize(crd)
    assert rendered == source
    assert not by_kind(render("--set", "crds.install=false"), "CustomResourceDefinition")


def test_chart_copies_of_crds_and_dashboard_match_their_sources():
    problems = load_script("sync-chart").stale_copies()
    assert not problems, "\n".join(problems) + "\nrun: python scripts/sync-chart.py"
    report("chart copies of manifests/crd and dashboards/thresher.json: in sync")


def test_notes_render_with_the_commands_to_apply_and_watch_the_sample(helm):
    result = subprocess.run(
        [helm, "install", "thresher", str(CHART), "--dry-run=client", "--namespace", "thresher-system"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n thresher-system get curationjobs -w" in notes
    for path in ("manifests/samples/pvc.yaml", "manifests/samples/quickstart.yaml"):
        assert path in notes and (ROOT / path).exists(), path
