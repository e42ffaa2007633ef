"""deploy/compose.yaml: valid against the Compose Specification's schema (vendored under
tests/fixtures/compose_spec), every TAGWATCH_* variable a setting, secrets only as files, the
database and the broker's service listener unpublished, N ingest workers on one shared group,
and Prometheus and Grafana wired to what the API exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

from tagwatch.settings import Settings
from tagwatch.store import emqx_auth
from tests.deploy.manifests import COMPOSE, DEPLOY, compose

SCHEMA = Path(__file__).parents[1] / "fixtures" / "compose_spec" / "compose-spec.json"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|COOKIE|(^|_)KEY($|_FILE$)")
TAGWATCH_SERVICES = {"migrate", "db-roles", "ingest", "dispatcher", "api"}
FOREIGN_ENV = {"PGPASSWORD", "BROKER_NAMES", "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"}


def test_the_file_follows_the_compose_specification():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_every_variable_is_a_setting_and_secrets_are_files():
    fields = set(Settings.model_fields)
    spec = compose()
    declared = spec["secrets"]
    for secret in declared.values():
        assert set(secret) == {"file"} and secret["file"].startswith("./secrets/")
    for name, service in spec["services"].items():
        env: dict[str, str] = service.get("environment", {})
        mounted = set(service.get("secrets", []))
        assert mounted <= set(declared), name
        for key, value in env.items():
            variable = key.removesuffix("__FILE").removesuffix("_FILE")
            if key != variable:  # NAME_FILE (entrypoint) or Grafana's NAME__FILE: a mounted secret
                assert value.startswith("/run/secrets/"), (name, key)
                assert value.removeprefix("/run/secrets/") in mounted, (name, key)
            else:
                assert not SECRET_NAME.search(key), f"{name}: {key} is a literal"
                assert not re.search(r"://[^/@]*:[^/@]*@", str(value)), f"{name}: {key}"
            if name.startswith("emqx"):
                assert not variable.startswith("TAGWATCH_") or variable in emqx_auth.ENV_VARS
            elif variable.startswith("TAGWATCH_"):
                assert variable.removeprefix("TAGWATCH_").lower() in fields, (name, key)
            elif not variable.startswith(("GF_", "EMQX_")):
                assert variable in FOREIGN_ENV, (name, key)
        if name.startswith("emqx"):
            # EMQX reads no secret files: its own secrets come from an env file outside git
            assert service["env_file"] == ["secrets/emqx.env"]
    emqx = spec["services"]["emqx1"]["environment"]
    assert "TAGWATCH_EMQX_PG_SERVER" in emqx and "TAGWATCH_EMQX_PG_PASSWORD" not in emqx
    assert (DEPLOY / "secrets.sh").read_text().count("TAGWATCH_EMQX_PG_PASSWORD") == 1


def test_each_tagwatch_process_passes_check_config():
    """What a process refuses to start on (sound_settings) apart from files only the running
    site has: the URLs' shapes, TLS with client certificates, every process's own role."""
    spec = compose()
    for name in TAGWATCH_SERVICES:
        env = spec["services"][name]["environment"]
        values = {
            k.removeprefix("TAGWATCH_").lower(): v
            for k, v in env.items()
            if k.startswith("TAGWATCH_") and not k.endswith("_FILE")
        }
        settings = Settings(**values, secret_key="x" * 40)
        problems = [
            p
            for p in settings.problems()
            if "is not a readable file" not in p
            and "TAGWATCH_WEBHOOK_SECRET_KEY" not in p  # a secret file at run time
        ]
        assert problems == [], (name, problems)


def test_the_database_and_the_service_listener_are_not_published():
    spec = compose()
    assert spec["networks"]["backend"]["internal"] is True
    assert spec["services"]["timescaledb"]["networks"] == ["backend"]
    published: dict[str, list[int]] = {}
    for name, service in spec["services"].items():
        for port in service.get("ports", []):
            published.setdefault(name, []).append(int(str(port).split(":")[-1]))
    assert published == {"emqx1": [8883], "emqx2": [8883], "api": [8000], "grafana": [3000]}
    conf = (DEPLOY / "emqx" / "emqx.conf").read_text()
    assert 'bind = "0.0.0.0:8884"' in conf and "fail_if_no_peer_cert = true" in conf
    assert 'include "auth.conf"' in conf


def test_ingest_workers_share_one_group_with_their_own_client_ids():
    spec = compose()
    ingest = spec["services"]["ingest"]
    assert int(ingest["deploy"]["replicas"]) >= 2
    assert ingest["environment"]["TAGWATCH_INGEST_SHARED_GROUP"]
    assert 'TAGWATCH_INGEST_CLIENT_ID="tagwatch-ingest-$(hostname)"' in ingest["entrypoint"][-1]
    raw = COMPOSE.read_text()
    assert "$$(hostname)" in raw  # escaped: the container's shell expands it, not Compose
    for node in ("emqx1", "emqx2"):
        assert "emqx" in spec["services"][node]["networks"]["backend"]["aliases"]


def test_prometheus_scrapes_the_api_and_grafana_reads_prometheus():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["tagwatch-api"]
    assert api["metrics_path"] == "/metrics"
    assert api["static_configs"][0]["targets"] == [f"api:{Settings().api_port}"]
    assert api["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert "metrics_token" in compose()["services"]["prometheus"]["secrets"]
    source = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"][0]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "tagwatch.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "tagwatch.yaml").read_text()
    )["providers"][0]
    mounts = compose()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_every_long_running_tagwatch_service_has_a_healthcheck_it_serves():
    """The API's on its port; ingest's and the dispatcher's on their probe port
    (tagwatch/probes.py), the one their TAGWATCH_PROBE_PORT names."""
    spec = compose()["services"]
    for name in ("ingest", "dispatcher", "api"):
        service = spec[name]
        env = service["environment"]
        port = env["TAGWATCH_API_PORT"] if name == "api" else env["TAGWATCH_PROBE_PORT"]
        (command,) = [part for part in service["healthcheck"]["test"] if "urlopen" in part]
        assert f"http://127.0.0.1:{port}/readyz" in command, (name, command)
