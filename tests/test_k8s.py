"""The Kubernetes deployment in k8s/: every object valid against the Kubernetes schemas (offline,
kubernetes-validate), the RayCluster against the KubeRay CRD, and the pieces wired to each other."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
KUBERAY_CRD = ROOT.parent / "shared" / "schemas" / "kuberay" / "ray.io_rayclusters.yaml"
# the oldest Kubernetes the deployment promises to run on; kubernetes-validate ships its schemas
KUBERNETES_VERSION = "1.30"
KUSTOMIZATION = "kustomization.yaml"


def load_objects() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, document)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != KUSTOMIZATION
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


OBJECTS = load_objects()
KUBERNETES_OBJECTS = [(name, o) for name, o in OBJECTS if not o["apiVersion"].startswith("ray.io/")]


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [
        o for _, o in OBJECTS if o["kind"] == kind and name in (None, o["metadata"]["name"])
    ]
    return found


def object_id(value: Any) -> str:
    file, document = value
    return f"{file}:{document['kind']}/{document['metadata']['name']}"


@pytest.mark.parametrize("manifest", KUBERNETES_OBJECTS, ids=object_id)
def test_every_kubernetes_object_is_valid_against_the_kubernetes_schema(
    manifest: tuple[str, dict[str, Any]],
) -> None:
    _, document = manifest

    checked_with = kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)

    assert checked_with == KUBERNETES_VERSION


def test_the_deployment_has_every_object_the_issue_asks_for() -> None:
    kinds = sorted(o["kind"] for _, o in OBJECTS)

    assert kinds == sorted(
        [
            "Namespace",
            "Secret",
            "PersistentVolumeClaim",
            "Service",
            "StatefulSet",
            "RayCluster",
            "Deployment",
            "Service",
        ]
    )
    assert all(
        o["metadata"].get("namespace") == "mtfleet" for _, o in OBJECTS if o["kind"] != "Namespace"
    )


@pytest.fixture(scope="module")
def raycluster_schema() -> dict[str, Any]:
    """The CRD's v1 openAPIV3Schema, closed: a field the CRD does not name is an error."""
    if not KUBERAY_CRD.exists():
        pytest.skip(f"the KubeRay CRD is not at {KUBERAY_CRD} (../shared/schemas/kuberay)")
    crd = yaml.safe_load(KUBERAY_CRD.read_text())
    (v1,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
    return closed(v1["schema"]["openAPIV3Schema"])


def closed(schema: Any) -> Any:
    """The schema with additionalProperties false wherever it lists properties and does not keep
    unknown fields: the API server prunes unknown fields silently, which would hide a typo."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {key: closed(value) for key, value in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        result["additionalProperties"] = False
    return result


def crd_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(document)]


def test_the_raycluster_is_valid_against_the_kuberay_crd(raycluster_schema: dict[str, Any]) -> None:
    assert crd_errors(raycluster_schema, find("RayCluster")) == []


def test_the_crd_check_catches_a_misspelled_raycluster_field(
    raycluster_schema: dict[str, Any],
) -> None:
    misspelled = copy.deepcopy(find("RayCluster"))
    misspelled["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3

    (error,) = crd_errors(raycluster_schema, misspelled)
    assert error.startswith("$.spec.workerGroupSpecs[0]: Additional properties are not allowed")
    assert "'maxReplica' was unexpected" in error


def test_gpu_workers_take_one_gpu_each_and_autoscale_between_min_and_max_replicas() -> None:
    cluster = find("RayCluster")["spec"]
    (group,) = cluster["workerGroupSpecs"]
    (worker,) = group["template"]["spec"]["containers"]

    assert cluster["enableInTreeAutoscaling"] is True
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] > group["minReplicas"]
    assert "gpu" in worker["image"]
    (head,) = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert "gpu" not in head["image"]


def mounts(pod_spec: dict[str, Any]) -> dict[str, str]:
    """Claim name -> mount path, for the volumes of a pod's first container."""
    claims = {
        volume["name"]: volume["persistentVolumeClaim"]["claimName"]
        for volume in pod_spec["volumes"]
        if "persistentVolumeClaim" in volume
    }
    container = pod_spec["containers"][0]
    return {
        claims[m["name"]]: m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims
    }


def test_the_shared_volume_is_read_write_many_and_mounted_alike_in_head_workers_and_api() -> None:
    claim = find("PersistentVolumeClaim")
    cluster = find("RayCluster")["spec"]
    pods = [
        cluster["headGroupSpec"]["template"]["spec"],
        *(group["template"]["spec"] for group in cluster["workerGroupSpecs"]),
        find("Deployment", "mtfleet-api")["spec"]["template"]["spec"],
    ]

    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert [mounts(pod) for pod in pods] == [{claim["metadata"]["name"]: "/data"}] * len(pods)


def test_the_api_serves_through_its_service_with_the_store_the_cluster_and_the_token() -> None:
    api = find("Deployment", "mtfleet-api")
    service = find("Service", "mtfleet-api")
    (container,) = api["spec"]["template"]["spec"]["containers"]
    args = dict(arg.split("=", 1) for arg in container["args"] if arg.startswith("--"))
    env = {variable["name"]: variable for variable in container["env"]}
    postgres = find("Service", "mtfleet-postgres")

    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert args["--data-root"] == "/data" and args["--state-dir"].startswith("/data/")
    assert args["--address"] == f"ray://{find('RayCluster')['metadata']['name']}-head-svc:10001"
    assert f"@{postgres['metadata']['name']}:5432/" in args["--store"]
    assert env["MTFLEET_API_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "api_token"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def secret_references(node: Any) -> set[tuple[str, str]]:
    if isinstance(node, list):
        return set().union(*(secret_references(item) for item in node))
    if not isinstance(node, dict):
        return set()
    found = set().union(*(secret_references(value) for value in node.values()))
    if "secretKeyRef" in node:
        found.add((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
    return found


def test_every_secret_a_pod_reads_is_in_the_secret_and_no_password_is_in_a_url() -> None:
    secret = find("Secret")
    references = secret_references([o for _, o in OBJECTS])
    ray_auth = find("RayCluster")["spec"]["authOptions"]

    api = find("Deployment", "mtfleet-api")["spec"]["template"]["spec"]["containers"][0]
    store = next(arg for arg in api["args"] if arg.startswith("--store="))

    keys = {"api_token", "postgres_password", "auth_token"}
    assert references == {(secret["metadata"]["name"], key) for key in keys}
    assert set(secret["stringData"]) == keys
    # KubeRay hands auth_token to the Ray pods; the API, a Ray client, reads it itself
    assert ray_auth == {"mode": "token", "secretName": secret["metadata"]["name"]}
    assert ":" not in store.removeprefix("--store=postgresql://").split("@")[0]


def test_postgres_keeps_its_data_on_a_volume_of_its_own() -> None:
    postgres = find("StatefulSet", "mtfleet-postgres")

    assert (
        postgres["spec"]["serviceName"] == find("Service", "mtfleet-postgres")["metadata"]["name"]
    )
    assert [t["metadata"]["name"] for t in postgres["spec"]["volumeClaimTemplates"]] == ["pgdata"]


def test_the_kustomization_applies_every_manifest_but_the_secret() -> None:
    kustomization = yaml.safe_load((K8S / KUSTOMIZATION).read_text())

    assert sorted(kustomization["resources"]) == sorted(
        path.name for path in K8S.glob("*.yaml") if path.name not in (KUSTOMIZATION, "secret.yaml")
    )
    images = {image["name"] for image in kustomization["images"]}
    used = {c["image"].split(":")[0] for _, o in OBJECTS for c in containers(o)} - {"postgres"}
    assert images == used


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document["kind"] == "RayCluster":
        spec = document["spec"]
        templates = [spec["headGroupSpec"]["template"]] + [
            g["template"] for g in spec["workerGroupSpecs"]
        ]
    elif document["kind"] in ("Deployment", "StatefulSet"):
        templates = [document["spec"]["template"]]
    else:
        templates = []
    return [c for template in templates for c in template["spec"]["containers"]]
