"""Attacks through webhooks, against the real API, database and dispatcher.

* SSRF: an admin (or someone who can write the table) points subscriptions at loopback, the
  cloud metadata address, IPv6 loopback, ``localhost``, a host name that resolves to loopback,
  an IPv4-mapped address and a decimal IP. The API refuses what it can judge without DNS (422
  with the reason); the dispatcher resolves on every send and refuses the rest, while a real
  socket listening on those loopback ports sees no connection at all. Redirects are not followed.
* The allow-list lets a named receiver in, and the connection goes to the address that was
  checked (the name is never resolved again), with the name kept for ``Host`` and TLS
  (SNI and certificate verification).
* Replay: a captured, validly signed request re-sent after the window is refused, so is one whose
  timestamp or body was changed, and a body-only (first-version) signature.
* Secrets at rest: neither the row nor a real ``pg_dump`` of the table holds a secret.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from tagwatch.alerts.dispatcher import Dispatcher, DispatcherConfig
from tagwatch.alerts.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tagwatch.alerts.webhook_destination import DestinationUnresolved, system_resolver
from tagwatch.api.app import create_app
from tagwatch.bench.harness import WebhookReceiver
from tagwatch.services import free_port, pg_bindir
from tagwatch.settings import Settings
from tagwatch.store.webhook_secrets import SecretBox, SecretUnreadable, generate_key
from tests.alerts.test_lifecycle import make_alert, make_subject
from tests.support import fresh_id, wait_for

pytestmark = pytest.mark.integration

FAST = DispatcherConfig(
    workers=2,
    batch_size=20,
    poll_interval_s=0.2,
    backoff_base_s=0.2,
    backoff_cap_s=1.0,
    http_timeout_s=3.0,
    mqtt_timeout_s=5.0,
)
LOOPBACK_NAME = socket.gethostname()  # /etc/hosts maps this machine's name to a loopback address


# ---------------------------------------------------------------------------------- helpers


class Trap:
    """A real TCP listener that counts every connection it is offered (and answers none)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.connections: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections.append(peer)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture
def conn(settings) -> Iterator[psycopg.Connection]:
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def run_dispatcher(settings) -> Iterator:
    """An in-process dispatcher with the given settings changes (allow-list, CA)."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(config: DispatcherConfig = FAST, resolver=system_resolver, **changes: Any):
        dispatcher = Dispatcher(
            settings.model_copy(update=changes),
            dataclasses.replace(config, mqtt_client_id=fresh_id("dispatch")),
            resolver=resolver,
        )
        stop = threading.Event()
        thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread))
        return dispatcher

    yield start
    for stop, _ in running:
        stop.set()
    for _, thread in running:
        thread.join(30)


@pytest.fixture
def hooks(settings) -> Iterator:
    """Subscriptions written straight into the table, as a script, an old release or someone
    with database access would; cleaned up like the dispatcher tests do."""
    made: list[int] = []

    def make(url: str, region: str, secret: str | None = None) -> int:
        with psycopg.connect(settings.database_url) as c:
            (wid,) = c.execute(
                "INSERT INTO webhook_subscriptions (name, url, secret, regions)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (fresh_id("hook"), url, secret or fresh_id("secret"), [region]),
            ).fetchone()
        made.append(wid)
        return int(wid)

    yield make
    with psycopg.connect(settings.database_url) as c:
        for wid in made:
            c.execute("UPDATE webhook_subscriptions SET active = false WHERE id = %s", (wid,))
            c.execute(
                "UPDATE deliveries SET status = 'failed', last_error = 'test over'"
                " WHERE channel = %s AND status = 'pending'",
                (f"webhook:{wid}",),
            )


@pytest.fixture(scope="module")
def admin(login) -> dict[str, str]:
    return login("admin", ["*"])


def deliveries_of(conn: psycopg.Connection, alert_id: int) -> dict[str, tuple]:
    rows = conn.execute(
        "SELECT d.channel, d.status, d.attempts, d.last_error FROM deliveries d"
        " JOIN outbox o ON o.id = d.outbox_id WHERE o.alert_id = %s AND d.channel <> 'mqtt'",
        (alert_id,),
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


# ---------------------------------------------------------------------------------- SSRF


def test_the_api_refuses_internal_and_plain_http_destinations_with_a_reason(api, admin):
    port = free_port()
    attacks = [
        f"http://127.0.0.1:{port}/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://localhost/",
        f"http://{LOOPBACK_NAME}:{port}/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://[::1]/",
        "https://localhost/",
        "https://[::ffff:127.0.0.1]/",
        "https://[fd00:ec2::254]/latest/meta-data",
        "https://2130706433/",
        "https://0x7f.1/",
        "https://10.0.0.5/",
        "https://100.64.0.1/",
        "https://[fe80::1]/",
    ]
    refused = {}
    for url in attacks:
        response = api.post("/api/v1/webhooks", json={"name": "ssrf", "url": url}, headers=admin)
        assert response.status_code == 422, (url, response.text)
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "url"]
        refused[url] = error["msg"]
    assert all("https" in refused[u] for u in attacks if u.startswith("http:"))
    assert (
        "metadata" in refused["https://169.254.169.254/latest/meta-data/iam/security-credentials/"]
    )
    assert "loopback (IPv4-mapped" in refused["https://[::ffff:127.0.0.1]/"]
    assert "127.0.0.1 is loopback" in refused["https://2130706433/"]
    # an existing subscription cannot be moved inside either
    good = api.post(
        "/api/v1/webhooks",
        json={"name": "tracing", "url": "https://tracing.example.org/hook"},
        headers=admin,
    )
    assert good.status_code == 201, good.text
    moved = api.patch(
        f"/api/v1/webhooks/{good.json()['id']}",
        json={"url": "https://169.254.169.254/latest/meta-data"},
        headers=admin,
    )
    assert moved.status_code == 422 and "metadata" in moved.text
    api.delete(f"/api/v1/webhooks/{good.json()['id']}", headers=admin)
    print(f"\nAPI refused {len(refused)} of {len(attacks)} internal or http destinations (422)")
    assert len(refused) == len(attacks)


def test_the_dispatcher_refuses_internal_destinations_at_send_and_never_connects(
    api, admin, conn, hooks, run_dispatcher
):
    traps = [Trap("127.0.0.1")]
    if ipv6_loopback_works():
        traps.append(Trap("::1"))
    port = traps[0].port
    sid, region = make_subject(conn)
    urls = [
        f"https://127.0.0.1:{port}/hook",
        f"http://127.0.0.1:{port}/hook",  # plain http outside development
        f"https://localhost:{port}/hook",
        f"https://{LOOPBACK_NAME}:{port}/hook",
        f"https://[::ffff:127.0.0.1]:{port}/hook",
        f"https://2130706433:{port}/hook",
        f"https://0x7f.1:{port}/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[fd00:ec2::254]/latest/meta-data",
    ]
    if len(traps) > 1:
        urls.append(f"https://[::1]:{traps[1].port}/hook")
    try:
        wids = [hooks(url, region) for url in urls]  # past the API, straight into the table
        # and one the API accepts: a name it does not resolve, that resolves to loopback now
        created = api.post(
            "/api/v1/webhooks",
            json={
                "name": "rebound",
                "url": f"https://{LOOPBACK_NAME}:{port}/in",
                "regions": [region],
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        wids.append(created.json()["id"])
        alert_id = make_alert(conn, sid, "strap_tamper")
        run_dispatcher()  # no allow-list: the test environment is production for webhooks
        channels = {f"webhook:{w}" for w in wids}

        def all_failed() -> bool:
            got = deliveries_of(conn, alert_id)
            return set(got) == channels and all(v[0] == "failed" for v in got.values())

        assert wait_for(all_failed, timeout=15), deliveries_of(conn, alert_id)
        time.sleep(1.0)  # anything late would show now
    finally:
        for trap in traps:
            trap.close()
    outcome = deliveries_of(conn, alert_id)
    # refused at the first attempt, for good: no retries, nothing left pending
    assert {v[1] for v in outcome.values()} == {1}
    assert all(v[2].startswith("destination refused") for v in outcome.values()), outcome
    reasons = {url: outcome[f"webhook:{w}"][2] for url, w in zip(urls, wids, strict=False)}
    assert "must be https" in reasons[f"http://127.0.0.1:{port}/hook"]
    assert (
        f"{LOOPBACK_NAME} resolves to 127.0.0.1, which is loopback"
        in reasons[f"https://{LOOPBACK_NAME}:{port}/hook"]
    )
    assert "metadata" in reasons["https://169.254.169.254/latest/meta-data"]
    assert "metadata" in reasons["https://[fd00:ec2::254]/latest/meta-data"]
    attempts = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE NOT ok AND error LIKE 'destination refused%%')"
        " FROM delivery_attempts WHERE channel = ANY(%s)",
        (list(channels),),
    ).fetchone()
    assert attempts[0] == attempts[1] == len(channels)
    # the admin sees it on the subscription
    shown = api.get(f"/api/v1/webhooks/{created.json()['id']}", headers=admin).json()
    assert shown["refused_at"] is not None and "loopback" in shown["refused_reason"]
    api.delete(f"/api/v1/webhooks/{created.json()['id']}", headers=admin)
    arrived = sum(len(t.connections) for t in traps)
    print(
        f"\ndispatcher refused {len(channels)} of {len(channels)} internal destinations at send"
        f" (1 attempt each, state failed); connections that reached the loopback listeners:"
        f" {arrived}"
    )
    assert arrived == 0


def test_redirects_are_answers_never_followed(conn, hooks, run_dispatcher):
    trap = Trap("127.0.0.1")

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{trap.port}/latest/meta-data")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sid, region = make_subject(conn)
        wid = hooks(f"http://127.0.0.1:{server.server_address[1]}/hook", region)
        alert_id = make_alert(conn, sid)
        run_dispatcher(dataclasses.replace(FAST, max_attempts=2), webhook_allow_hosts="127.0.0.1")
        channel = f"webhook:{wid}"
        assert wait_for(lambda: deliveries_of(conn, alert_id)[channel][0] == "failed", 15)
        time.sleep(0.5)
    finally:
        server.shutdown()
        server.server_close()
        trap.close()
    status, count, error = deliveries_of(conn, alert_id)[channel]
    print(
        f"\nredirect answered 307 {count} times;"
        f" connections that followed it: {len(trap.connections)}"
    )
    assert (status, count, error) == ("failed", 2, "HTTP 307")
    assert trap.connections == []


# ---------------------------------------------------------------------------------- allow-list


def test_an_allow_listed_loopback_receiver_gets_the_signed_alert(conn, hooks, run_dispatcher):
    sid, region = make_subject(conn)
    secret = fresh_id("secret")
    with WebhookReceiver() as by_address, WebhookReceiver() as by_name:
        hooks(by_address.url, region, secret)
        hooks(f"http://localhost:{by_name.port}/hook", region, secret)
        alert_id = make_alert(conn, sid, "absconder")
        run_dispatcher(webhook_allow_hosts="127.0.0.1, localhost")
        assert wait_for(lambda: by_address.ok() and by_name.ok(), timeout=15), deliveries_of(
            conn, alert_id
        )
    got = [by_address.ok()[0], by_name.ok()[0]]
    assert all(r.signed_by(secret) and r.json["alert_id"] == alert_id for r in got)
    # connected to the checked address, with the name kept in the Host header
    assert got[1].headers["Host"] == f"localhost:{by_name.port}"
    print(f"\nallow-listed loopback receivers got {len(got)} of 2 signed alerts")


def test_the_connection_goes_to_the_checked_address_without_a_second_lookup(
    conn, hooks, run_dispatcher
):
    """The attacker's DNS answers the dispatcher's check with an allowed address; the name
    exists nowhere else (the system resolver does not know it), so a second lookup by the HTTP
    client - the one DNS rebinding relies on - would fail the delivery instead of reaching it."""
    lookups: list[str] = []

    def attackers_dns(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"] if host == "rebind.invalid" else system_resolver(host, port)

    sid, region = make_subject(conn)
    with WebhookReceiver() as receiver:
        hooks(f"http://rebind.invalid:{receiver.port}/hook", region)
        make_alert(conn, sid)
        # the host is named, so http passes; the address is checked against the network
        run_dispatcher(resolver=attackers_dns, webhook_allow_hosts="rebind.invalid 127.0.0.1/32")
        assert wait_for(receiver.ok, timeout=15)
    with pytest.raises(DestinationUnresolved, match=r"rebind\.invalid"):
        system_resolver("rebind.invalid", 80)
    print(f"\nlookups of rebind.invalid by the dispatcher: {lookups.count('rebind.invalid')}")
    assert receiver.ok()[0].headers["Host"] == f"rebind.invalid:{receiver.port}"
    assert lookups.count("rebind.invalid") == 1


def _certificate(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for ``name`` that it signed (for 127.0.0.1's receiver)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tracing unit test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = tmp / "ca.pem", tmp / f"{name}.pem", tmp / f"{name}.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


class TlsReceiver:
    """An https receiver on 127.0.0.1 that records the TLS server name each client asked for."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.server_names: list[str | None] = []
        self.bodies: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda _sock, name, _ctx: receiver.server_names.append(name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_https_to_the_pinned_address_still_verifies_the_name(conn, hooks, run_dispatcher, tmp_path):
    ca, cert, key = _certificate(tmp_path, "localhost")
    receiver = TlsReceiver(cert, key)
    try:
        sid, region = make_subject(conn)
        right = hooks(f"https://localhost:{receiver.port}/hook", region)
        # the same address under a name the certificate does not carry: TLS must fail
        wrong = hooks(f"https://{LOOPBACK_NAME}:{receiver.port}/hook", region)
        alert_id = make_alert(conn, sid)
        run_dispatcher(
            dataclasses.replace(FAST, ca_file=str(ca), max_attempts=1),
            webhook_allow_hosts=f"localhost {LOOPBACK_NAME}",
        )

        def settled() -> bool:
            got = deliveries_of(conn, alert_id)
            return len(got) == 2 and all(v[0] != "pending" for v in got.values())

        assert wait_for(settled, timeout=15), deliveries_of(conn, alert_id)
    finally:
        receiver.close()
    outcome = deliveries_of(conn, alert_id)
    print(
        f"\nhttps via pinned 127.0.0.1: SNI sent {receiver.server_names};"
        f" localhost {outcome[f'webhook:{right}'][0]},"
        f" {LOOPBACK_NAME} (not in the certificate) {outcome[f'webhook:{wrong}'][0]}"
    )
    assert outcome[f"webhook:{right}"][0] == "delivered"
    assert outcome[f"webhook:{wrong}"][0] == "failed"
    assert "certificate" in outcome[f"webhook:{wrong}"][2].lower()
    assert "localhost" in receiver.server_names and LOOPBACK_NAME in receiver.server_names
    assert len(receiver.bodies) == 1


# ---------------------------------------------------------------------------------- replay


def test_a_captured_request_cannot_be_replayed_or_tampered_with(conn, hooks, run_dispatcher):
    sid, region = make_subject(conn)
    secret = fresh_id("secret")
    window_s = 2.0  # the receiver's window here; the default is 300 s
    with WebhookReceiver() as receiver:
        hooks(receiver.url, region, secret)
        make_alert(conn, sid, "absconder")
        run_dispatcher(webhook_allow_hosts="127.0.0.1")
        assert wait_for(receiver.ok, timeout=15)
        captured = receiver.ok()[0]

        def accepted(request: Any) -> bool:  # what the receiver decides at arrival
            return verify_signature(
                secret,
                request.body,
                request.headers.get(SIGNATURE_HEADER),
                request.headers.get(TIMESTAMP_HEADER),
                window_s=window_s,
                now=request.at,
            )

        def resend(body: bytes, **headers: str) -> Any:
            sent = {k: v for k, v in captured.headers.items() if k.lower() != "content-length"}
            sent.update({k.replace("_", "-"): v for k, v in headers.items()})
            before = receiver.count()
            httpx.post(receiver.url, content=body, headers=sent, timeout=5)
            assert wait_for(lambda: receiver.count() > before, 5)
            return receiver.received[-1]

        time.sleep(window_s + 1.5)
        replayed = resend(captured.body)
        fresh = str(int(time.time()))
        retimed = resend(captured.body, **{TIMESTAMP_HEADER: fresh})
        tampered = captured.body.replace(b'"absconder"', b'"battery_low"')
        reworded = resend(tampered, **{TIMESTAMP_HEADER: fresh})
        body_only = "sha256=" + hmac.new(secret.encode(), captured.body, hashlib.sha256).hexdigest()
        downgraded = resend(captured.body, **{TIMESTAMP_HEADER: fresh, SIGNATURE_HEADER: body_only})
    verdicts = {
        "original at arrival": accepted(captured),
        f"replay after {replayed.at - captured.at:.1f} s": accepted(replayed),
        "fresh timestamp, old signature": accepted(retimed),
        "changed body": accepted(reworded),
        "body-only signature": accepted(downgraded),
    }
    print(f"\nreceiver with a {window_s:g} s window accepted: {verdicts}")
    assert list(verdicts.values()) == [True, False, False, False, False]
    # the default window: the same request is refused 301 s after it was signed
    stamp = int(captured.headers[TIMESTAMP_HEADER])
    args = (secret, captured.body, captured.headers[SIGNATURE_HEADER], str(stamp))
    assert verify_signature(*args, now=stamp + 299)
    assert not verify_signature(*args, now=stamp + 301)
    assert not verify_signature(*args, now=stamp - 301)  # signed "in the future"


# ---------------------------------------------------------------------------------- at rest


def _dump_table(database_url: str) -> str:
    pg_dump = pg_bindir() / "pg_dump"
    found = str(pg_dump) if pg_dump.exists() else shutil.which("pg_dump")
    assert found, "pg_dump not installed"
    return subprocess.run(
        [found, "--data-only", "--table=webhook_subscriptions", "--dbname", database_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        raw.hex(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
    ]


def test_the_database_holds_no_plaintext_secret(api, admin, settings, conn, run_dispatcher):
    given = "given-" + fresh_id("secret") * 2
    created = api.post(
        "/api/v1/webhooks",
        # inactive: an active subscription to every region would get every later test's alerts
        json={
            "name": "at rest",
            "url": "https://tracing.example.org/hook",
            "secret": given,
            "active": False,
        },
        headers=admin,
    )
    assert created.status_code == 201, created.text
    wid = created.json()["id"]
    rotated = api.post(f"/api/v1/webhooks/{wid}/secret", headers=admin).json()["secret"]
    # a row from before the encryption (or a script): plaintext until the dispatcher starts
    legacy = "legacy-" + fresh_id("secret") * 2
    (old,) = conn.execute(
        "INSERT INTO webhook_subscriptions (name, url, secret, active)"
        " VALUES ('old release', 'https://old.example.org/', %s, false) RETURNING id",
        (legacy,),
    ).fetchone()
    assert legacy in _dump_table(settings.database_url)
    dispatcher = run_dispatcher()
    assert wait_for(
        lambda: conn.execute(
            "SELECT secret IS NULL FROM webhook_subscriptions WHERE id = %s", (old,)
        ).fetchone()[0],
        timeout=10,
    )
    rows = conn.execute(
        "SELECT row_to_json(w)::text FROM webhook_subscriptions w WHERE id = ANY(%s)",
        ([wid, old],),
    ).fetchall()
    dump = _dump_table(settings.database_url)
    found = [
        form
        for secret in (given, rotated, legacy)
        for form in _forms(secret)
        for text in [dump, *(r[0] for r in rows)]
        if form in text
    ]
    print(f"\nsecret forms found in the rows and in pg_dump of the table: {len(found)}")
    assert found == []
    # what is there opens only with the key from the environment
    (token,) = conn.execute(
        "SELECT secret_encrypted FROM webhook_subscriptions WHERE id = %s", (old,)
    ).fetchone()
    assert dispatcher.box is not None and dispatcher.box.open(token) == legacy
    with pytest.raises(SecretUnreadable):
        SecretBox(generate_key()).open(token)


def test_without_the_key_nothing_is_stored_and_production_refuses_to_start(settings, admin):
    keyless = settings.model_copy(update={"webhook_secret_key": None})
    with TestClient(create_app(keyless)) as client:
        response = client.post(
            "/api/v1/webhooks",
            json={"name": "no key", "url": "https://tracing.example.org/hook"},
            headers=admin,
        )
    assert response.status_code == 503
    assert "TAGWATCH_WEBHOOK_SECRET_KEY" in response.json()["detail"]
    production = Settings(environment="production", secret_key="k" * 40)
    assert any("TAGWATCH_WEBHOOK_SECRET_KEY" in p for p in production.problems())
    assert not any(
        "WEBHOOK" in p
        for p in Settings(secret_key="k" * 40, webhook_secret_key=generate_key()).problems()
    )
    bad_allow = Settings(
        secret_key="k" * 40, webhook_allow_hosts="tracing.example.org, 10.0.0.0/33"
    )
    assert any("TAGWATCH_WEBHOOK_ALLOW_HOSTS" in p for p in bad_allow.problems())
