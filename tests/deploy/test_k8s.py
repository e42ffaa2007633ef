"""deploy/k8s: the base and the national overlay, rendered as kustomize would, validate against
Kubernetes' own schemas (kubernetes-validate, strict: unknown fields are errors); probes point at
routes the API has; every TAGWATCH_* variable is a setting; secrets are only referenced; the
NetworkPolicies keep the database and the broker's services listener internal."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tagwatch.probes import PATHS as PROBE_PATHS
from tagwatch.settings import Settings
from tagwatch.store import emqx_auth
from tests.deploy.manifests import DEPLOY, K8S, Obj, containers, pod_spec, render

KUBERNETES = "1.30.0"  # the oldest release still supported upstream when this was written
VARIANTS = {"base": K8S / "base", "national": K8S / "overlays" / "national"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|COOKIE|(^|_)KEY$")
# Variables that are not tagwatch settings, each read by what runs in the container.
FOREIGN_ENV = {
    "PGPASSWORD",  # libpq: the process's own role's password (its URL carries none)
    "POD_NAME",  # the downward API, for client ids and EMQX node names
    "NUMBA_CACHE_DIR",  # numba's cache, on a writable volume
    "POSTGRES_USER",  # the TimescaleDB image
    "POSTGRES_DB",
    "POSTGRES_PASSWORD",
    "PGDATA",
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request) -> list[Obj]:
    return render(VARIANTS[request.param])


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_every_object_validates_strictly(rendered):
    for obj in rendered:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_the_emqx_config_is_deploy_emqx():
    for name in ("emqx.conf", "auth.conf", "tagwatch-services.acl"):
        copy = K8S / "base" / "emqx" / name
        assert copy.read_text() == (DEPLOY / "emqx" / name).read_text(), f"cp deploy/emqx/{name}"


@functools.cache
def api_routes() -> frozenset[str]:
    from tagwatch.api.app import create_app

    return frozenset(create_app(Settings(environment="test")).openapi()["paths"])


def test_probes_point_at_routes_the_process_serves(rendered):
    routes = api_routes()
    api = named(rendered, "Deployment", "api")
    (container,) = containers(api)
    assert container["args"] == ["api"]
    probes = {k: v for k, v in container.items() if k.endswith("Probe")}
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in probes.values():
        assert probe["httpGet"]["path"] in routes
        assert ports[probe["httpGet"]["port"]] == Settings().api_port
    # Ingest and the dispatcher answer on their probe port (tagwatch/probes.py), the one their
    # TAGWATCH_PROBE_PORT names, on every address of the pod; every other tagwatch container
    # (the one-shot migration) has no probe over HTTP it does not serve.
    probed = set()
    for obj in rendered:
        for c in containers(obj):
            if not c["image"].split(":")[0].endswith("tagwatch") or c["args"] == ["api"]:
                continue
            probes = {k: v for k, v in c.items() if k.endswith("Probe")}
            if c["args"] not in (["ingest"], ["dispatch"]):
                assert not probes, (obj["metadata"]["name"], c)
                continue
            probed.add(c["args"][0])
            env = {e["name"]: e.get("value") for e in c["env"]}
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert env["TAGWATCH_PROBE_HOST"] == "0.0.0.0"  # noqa: S104 - the kubelet probes the pod IP
            assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert set(probes) == {"livenessProbe", "readinessProbe", "startupProbe"}
            # the start (the catalogue) is judged by readiness within the startup probe's time
            assert probes["startupProbe"]["httpGet"]["path"] == "/readyz"
            for probe in probes.values():
                assert probe["httpGet"]["path"] in PROBE_PATHS
                assert ports[probe["httpGet"]["port"]] == int(env["TAGWATCH_PROBE_PORT"])
    assert probed == {"ingest", "dispatch"}


def _env_names(obj: Obj) -> list[tuple[str, Obj, Obj]]:
    return [(e["name"], e, c) for c in containers(obj) for e in c.get("env", [])]


def test_every_variable_is_a_setting_or_named_for_what_reads_it(rendered):
    fields = set(Settings.model_fields)
    config = named(rendered, "ConfigMap", "tagwatch-config")
    names = [(k, None, None) for k in config["data"]]
    for obj in rendered:
        names += _env_names(obj)
    for name, _entry, container in names:
        if container is not None and container["name"] == "emqx":
            if name.startswith("TAGWATCH_"):  # auth.conf's substitutions
                assert name in emqx_auth.ENV_VARS, name
            else:
                assert name.startswith("EMQX_") or name in FOREIGN_ENV, name
        elif name.startswith("TAGWATCH_"):
            assert name.removeprefix("TAGWATCH_").lower() in fields, f"{name} is no setting"
        else:
            assert name in FOREIGN_ENV, name
    emqx = named(rendered, "StatefulSet", "emqx")
    assert {n for n, _, _ in _env_names(emqx) if n.startswith("TAGWATCH_")} == set(
        emqx_auth.ENV_VARS
    )
    # the settings the config map sets are sound, as each process checks when it starts
    Settings(
        **{
            k.removeprefix("TAGWATCH_").lower(): v
            for k, v in config["data"].items()
            if k.startswith("TAGWATCH_")
        }
    )


def test_secrets_are_referenced_never_written(rendered):
    assert not [o for o in rendered if o["kind"] == "Secret"], "create Secrets outside git"
    config = named(rendered, "ConfigMap", "tagwatch-config")
    for key, value in config["data"].items():
        assert not SECRET_NAME.search(key), key
        assert not re.search(r"://[^/@]*:[^/@]*@", value), f"{key} carries a password"
    for obj in rendered:
        for name, entry, _c in _env_names(obj):
            if SECRET_NAME.search(name):
                assert "secretKeyRef" in entry.get("valueFrom", {}), f"{name}: not a reference"
                assert "value" not in entry


def test_ingest_scales_on_the_shared_subscription(rendered):
    ingest = named(rendered, "StatefulSet", "ingest")
    hpa = named(rendered, "HorizontalPodAutoscaler", "ingest")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", "ingest")
    assert hpa["spec"]["minReplicas"] <= ingest["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    config = named(rendered, "ConfigMap", "tagwatch-config")["data"]
    assert config["TAGWATCH_INGEST_SHARED_GROUP"]
    env = {e["name"]: e for e in containers(ingest)[0]["env"]}
    # one client id per worker, stable across its restarts, within the services' reserved prefix
    assert env["TAGWATCH_INGEST_CLIENT_ID"]["value"] == "tagwatch-$(POD_NAME)"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for obj in rendered:
        spec = pod_spec(obj)
        if spec is not None and obj["kind"] != "Job":
            for c in spec["containers"]:
                assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]


def _admits(policy: Obj, port: int) -> list[Obj]:
    """The ingress rules of a policy that open `port` (a rule without ports opens them all)."""
    return [
        rule
        for rule in policy["spec"].get("ingress", [])
        if not rule.get("ports") or any(p["port"] == port for p in rule["ports"])
    ]


def _selects(policy: Obj, labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def test_the_database_and_the_brokers_services_listener_stay_internal(rendered):
    policies = [o for o in rendered if o["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert (
        deny and deny[0]["spec"]["ingress"] == [] and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    )
    pods = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in rendered
        if pod_spec(o) is not None
    }
    for workload, port, client_label in [
        ("timescaledb", 5432, "tagwatch.io/database-client"),
        ("emqx", 8884, "tagwatch.io/broker-service-client"),
    ]:
        rules = [r for p in policies if _selects(p, pods[workload]) for r in _admits(p, port)]
        assert rules, f"nothing may reach {workload}:{port}"
        for rule in rules:
            sources = rule.get("from")
            assert sources, f"{workload}:{port} open to everyone"
            for source in sources:
                assert set(source) == {"podSelector"}, source  # this namespace's pods only
                assert source["podSelector"]["matchLabels"] == {client_label: "true"}
        clients = sorted(n for n, labels in pods.items() if labels.get(client_label) == "true")
        assert "timescaledb" not in clients
        assert {"api", "dispatcher", "ingest"} <= set(clients)
    for service in [o for o in rendered if o["kind"] == "Service"]:
        ports = {p["port"] for p in service["spec"]["ports"]}
        if ports & {5432, 8884, 18083}:
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]
    devices = named(rendered, "Service", "emqx-devices")
    assert [p["port"] for p in devices["spec"]["ports"]] == [8883]


def test_the_national_overlay_scales_up():
    base, national = render(VARIANTS["base"]), render(VARIANTS["national"])
    for kind, name in [("StatefulSet", "ingest"), ("Deployment", "api"), ("StatefulSet", "emqx")]:
        assert (
            named(national, kind, name)["spec"]["replicas"]
            > named(base, kind, name)["spec"]["replicas"]
        )
    assert named(national, "HorizontalPodAutoscaler", "ingest")["spec"]["maxReplicas"] > 8
    image = containers(named(national, "Deployment", "api"))[0]["image"]
    assert image != "tagwatch:latest" and not image.endswith(":latest")


def test_every_file_is_rendered():
    """A manifest under deploy/k8s that no kustomization lists would never be applied."""
    listed: set[Path] = set()
    for directory in VARIANTS.values():
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        listed |= {(directory / r).resolve() for r in spec.get("resources", [])}
        listed |= {(directory / p["path"]).resolve() for p in spec.get("patches", [])}
    for path in K8S.rglob("*.yaml"):
        if path.name != "kustomization.yaml":
            assert path.resolve() in listed, path
