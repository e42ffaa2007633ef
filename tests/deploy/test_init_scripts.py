"""The image's entrypoint and the compose site's one-shot `pki`, run here as they run there."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from tests.deploy.manifests import DEPLOY


def test_the_entrypoint_turns_secret_files_into_variables(tmp_path):
    secret = tmp_path / "secret_key"
    secret.write_text("s3cret value\n")
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "TAGWATCH_SECRET_KEY_FILE": str(secret),
    }
    shown = subprocess.run(
        [
            "sh",
            str(DEPLOY / "docker-entrypoint.sh"),
            "python",
            "-c",
            "import os; print(os.environ['TAGWATCH_SECRET_KEY'] + '|' +"
            " str('TAGWATCH_SECRET_KEY_FILE' in os.environ))",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown == "s3cret value|False\n"  # the trailing newline goes, the _FILE name too
    missing = {**env, "TAGWATCH_SECRET_KEY_FILE": str(tmp_path / "absent")}
    failed = subprocess.run(
        ["sh", str(DEPLOY / "docker-entrypoint.sh"), "python", "-c", "pass"],
        env=missing,
        check=False,
        capture_output=True,
    )
    assert failed.returncode != 0  # a missing secret stops the container, never runs it open


def test_the_pki_one_shot_issues_every_certificate_and_keeps_the_ca_key_apart(
    tmp_path, monkeypatch
):
    spec = importlib.util.spec_from_file_location("init_pki", DEPLOY / "compose" / "init_pki.py")
    assert spec and spec.loader
    init_pki = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(init_pki)
    shared, vault = tmp_path / "pki", tmp_path / "pki-ca"
    vault.mkdir()
    monkeypatch.setattr(init_pki, "SHARED", shared)
    monkeypatch.setattr(init_pki, "CA_VAULT", vault)
    me = os.getuid()
    monkeypatch.setattr(init_pki, "EMQX_UID", me)
    monkeypatch.setattr(init_pki, "POSTGRES_UID", me)
    monkeypatch.setattr(init_pki, "TAGWATCH_UID", me)
    monkeypatch.setenv("BROKER_NAMES", "mqtt.example.org")
    init_pki.main()
    names = {p.name for p in shared.iterdir()}
    assert "ca.key" not in names and (vault / "ca.key").exists()
    for name in ["server", "db", *init_pki.SERVICES]:
        assert {f"{name}.crt", f"{name}.key"} <= names
        assert (shared / f"{name}.key").stat().st_mode & 0o077 == 0
    broker = x509.load_pem_x509_certificate((shared / "server.crt").read_bytes())
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"mqtt.example.org", "emqx"} <= set(sans.get_values_for_type(x509.DNSName))
    db = x509.load_pem_x509_certificate((shared / "db.crt").read_bytes())
    db_sans = db.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert db_sans.get_values_for_type(x509.DNSName) == ["timescaledb"]  # the URLs' host
    first = (shared / "db.crt").read_bytes()
    init_pki.main()  # again: nothing reissued, the CA back in its vault
    assert (shared / "db.crt").read_bytes() == first and not (shared / "ca.key").exists()
