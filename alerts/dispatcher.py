"""The notification dispatcher: delivers the outbox to MQTT and to signed webhooks, at least once.

The alert engine and the lifecycle write, in the alert's own transaction, an ``outbox`` row and
one ``deliveries`` row per channel (``mqtt``, ``webhook:{subscription id}``). This process sends
them (the statements are ``store.deliveries``' and ``store.webhooks``'):

* **claiming**: each worker thread takes up to ``batch_size`` due rows (``status = 'pending'``,
  ``next_attempt <= now()``) with ``FOR UPDATE SKIP LOCKED``, sends them, records the outcome and
  commits. The row locks are held while sending, so several workers and several dispatcher
  processes never send the same row at once, and a dispatcher that dies (SIGKILL, OOM, lost
  database connection) releases its rows at once: the next claim sends them again.
* **at least once**: a row becomes ``delivered`` only after the receiver confirmed (HTTP 2xx,
  MQTT PUBACK), in a transaction after the send. Dying between the two re-sends the same body,
  with the same ``notification_id`` (the outbox id) for the receiver to deduplicate on.
* **mqtt**: the body is published at QoS 1 on ``em/v1/alerts/{region}`` (``unassigned`` when the
  alert has no region) with the dispatcher's service account (``TAGWATCH_MQTT_DISPATCHER_URL``,
  whose role may publish on ``em/v1/alerts/#`` and nothing else), under its own client id.
* **webhooks**: ``POST`` of the body, signed over a timestamp and the body (``alerts.signing``),
  2xx is success, redirects are not followed. Each attempt resolves the host, refuses internal
  addresses and non-https URLs outside development (``alerts.webhook_destination``; the
  allow-list ``TAGWATCH_WEBHOOK_ALLOW_HOSTS`` makes exceptions) and connects to the address it
  checked. A refused destination, an inactive or deleted subscription fail the delivery at once
  (no retries), and a refusal is shown on the subscription (``refused_at``, ``refused_reason``).
* **secrets**: stored encrypted (``store.webhook_secrets``, ``TAGWATCH_WEBHOOK_SECRET_KEY``);
  the dispatcher encrypts any plaintext ones at start-up and before it uses one. Without a key
  webhook deliveries fail (and are retried) rather than fall back to plaintext.
* **retries**: a failed attempt sets ``next_attempt`` to now + ``min(cap, base * 2^(n-1))`` x a
  random factor in [0.5, 1) after the n-th failed attempt; after ``max_attempts`` attempts the row
  is ``failed`` (defaults: 2 s base, 10 min cap, 30 attempts: about three hours of trying).
  Every attempt, successful or not, is a ``delivery_attempts`` row (ok, status code, error,
  duration).
* **waking up**: ``LISTEN tagwatch_deliveries`` (``store.deliveries.listen``; migration 0003
  notifies on every insert into deliveries, at commit), plus a poll every ``poll_interval_s``
  and a wake-up when the earliest retry comes due.

The body is the outbox payload (the alert as it was at that change: ``event``, ``type``,
``severity``, ``status``, subject, region, position, details such as an absconder's trail) plus
``notification_id``, serialised with sorted keys so every retry sends the same bytes. Order
between notifications is not guaranteed (retries, several workers): receivers order by
``notification_id`` and use the ``status`` they carry.

The same process sends commands to devices and starts and ends pursuit
(``alerts/command_sender.py``, one more thread on the same broker connection).

Settings come from ``TAGWATCH_DISPATCH_*`` environment variables (the ``dispatch_*`` fields of
``tagwatch.settings.Settings``, handed to the core as a ``DispatcherConfig``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import certifi
import httpx
import psycopg

from tagwatch.alerts import apprise_channel
from tagwatch.alerts.command_sender import CommandSender
from tagwatch.alerts.human_message import About, Message, Recipient, compose
from tagwatch.alerts.signing import NOTIFICATION_ID_HEADER, signed_headers
from tagwatch.alerts.webhook_destination import (
    AllowList,
    DestinationRefused,
    DestinationUnresolved,
    Resolver,
    resolve_destination,
    system_resolver,
)
from tagwatch.mqtt_client import BackgroundConnection
from tagwatch.probes import Check, Heartbeat, ProbeServer, first_problem, thread_problem
from tagwatch.settings import MqttEndpoint, Settings
from tagwatch.store import channels as channel_store
from tagwatch.store import deliveries, escalations
from tagwatch.store import webhooks as webhook_store
from tagwatch.store.webhook_secrets import (
    SecretBox,
    SecretUnreadable,
    key_problem,
    rotate_all,
    seal_plaintext,
)

log = logging.getLogger("tagwatch.dispatcher")

MQTT_CHANNEL: Final = "mqtt"
WEBHOOK_PREFIX: Final = "webhook:"
APPRISE_PREFIX: Final = "apprise:"
ALERT_TOPIC: Final = "em/v1/alerts/{region}"
NO_REGION: Final = "unassigned"
REGION_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # regions.id CHECK: no MQTT wildcards
MAX_ERROR_CHARS: Final = 500
USER_AGENT: Final = "tagwatch-dispatcher/1"
REFUSED: Final = "destination refused"


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    """The dispatcher core's knobs: plain values, so tests and benchmarks build one directly.

    A process takes them from ``Settings`` (``from_settings``: ``TAGWATCH_DISPATCH_<NAME>``);
    the defaults and meanings are documented on the ``dispatch_*`` fields there."""

    workers: int = 4  # claiming threads, each with its own database connection
    batch_size: int = 10  # rows one worker claims and sends together
    http_concurrency: int = 16  # webhook requests in flight, all workers together
    poll_interval_s: float = 1.0  # fallback when no notification arrives
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 600.0
    max_attempts: int = 30
    http_timeout_s: float = 10.0
    mqtt_timeout_s: float = 10.0  # waiting for PUBACKs
    mqtt_url: str | None = None  # default: Settings.mqtt_dispatcher_url (its service account)
    mqtt_client_id: str | None = None  # default: tagwatch-dispatch-<host>-<pid>
    ca_file: str | None = None  # a private CA to trust for webhook receivers, beside public ones

    def __post_init__(self) -> None:
        positive = ("workers", "batch_size", "http_concurrency", "max_attempts")
        for name in positive:
            if getattr(self, name) < 1:
                msg = f"{name} must be at least 1"
                raise ValueError(msg)
        for name in ("poll_interval_s", "backoff_base_s", "backoff_cap_s", "http_timeout_s"):
            if getattr(self, name) <= 0:
                msg = f"{name} must be positive"
                raise ValueError(msg)

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatcherConfig:
        """The knobs the one settings object read from ``TAGWATCH_DISPATCH_*`` (validated there,
        so ``check-config`` reports a bad value)."""
        return cls(**{f.name: getattr(settings, f"dispatch_{f.name}") for f in fields(cls)})

    def backoff_s(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Delay before the next try after ``failed_attempts`` (>= 1) failed ones."""
        exponent = min(max(failed_attempts - 1, 0), 60)
        jitter = (rng or random).uniform(0.5, 1.0)
        return min(self.backoff_cap_s, self.backoff_base_s * 2.0**exponent) * jitter


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed row with what sending it needs."""

    outbox_id: int
    channel: str
    attempts: int
    region_id: str | None
    body: bytes
    payload: Mapping[str, Any] = field(default_factory=dict)  # for human channels' messages


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one send. ``permanent`` failures are not retried."""

    ok: bool
    at: datetime
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class _Hook:
    """A subscription as a send needs it; ``secret`` None when it cannot be read (``problem``)."""

    url: str
    secret: str | None
    active: bool
    problem: str | None = None


@dataclass
class DispatchStats:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, delivered: int, retried: int, failed: int) -> None:
        with self._lock:
            self.delivered += delivered
            self.retried += retried
            self.failed += failed


def notification_body(outbox_id: int, payload: Mapping[str, Any]) -> bytes:
    """The bytes every channel sends for one outbox row, identical in every retry."""
    document = {**payload, "notification_id": outbox_id}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()


def _channel_id(channel: str) -> int | None:
    """The human channel's id in ``apprise:{id}``; None for another channel."""
    suffix = channel.removeprefix(APPRISE_PREFIX)
    return int(suffix) if channel.startswith(APPRISE_PREFIX) and suffix.isdigit() else None


def alert_topic(region_id: str | None) -> str:
    region = region_id if region_id and REGION_RE.match(region_id) else NO_REGION
    return ALERT_TOPIC.format(region=region)


def _now() -> datetime:
    return datetime.now(UTC)


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


# ---------------------------------------------------------------------------------- webhooks


MAX_ANSWER_BYTES: Final = 65536  # read this much of a receiver's answer, then hang up
MAX_ADDRESSES_TRIED: Final = 3  # of a name's checked addresses, when one cannot be reached


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """The public CAs (certifi), and a private one a tracing unit's receiver may use."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class WebhookSender:
    """Signed POSTs to checked destinations, over one thread-safe httpx client.

    Every attempt resolves the URL's host and checks each address
    (``alerts.webhook_destination``); the request then goes to a checked address (the URL
    carries the address), with the name in the ``Host`` header and as the TLS server name
    (``sni_hostname``), so the certificate is verified against the name and a DNS answer that
    changed since the check cannot redirect the connection. Connections are not kept alive:
    a pooled connection is keyed by address, and reusing one opened for another name would
    skip that name's certificate check. Environment proxies are ignored (a proxy would
    resolve the name again, out of reach of the check) and redirects are never followed.
    """

    def __init__(
        self,
        environment: str,
        allow: AllowList,
        *,
        timeout: float,
        concurrency: int,
        ca_file: str | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.environment = environment
        self.allow = allow
        self.resolver = resolver
        self.client = httpx.Client(
            transport=httpx.HTTPTransport(
                verify=_ssl_context(ca_file),
                trust_env=False,
                limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=0),
            ),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
        )

    def close(self) -> None:
        self.client.close()

    def post(self, url: str, secret: str, body: bytes, notification_id: int) -> Attempt:
        """One signed POST. 2xx is success; a refused destination is a permanent failure;
        anything else, or no answer, a failed attempt to retry."""
        at = _now()
        started = time.perf_counter()

        def took() -> float:
            return (time.perf_counter() - started) * 1000.0

        try:
            destination = resolve_destination(url, self.environment, self.allow, self.resolver)
            target = httpx.URL(url)
        except (DestinationRefused, httpx.InvalidURL) as exc:
            return Attempt(False, at, took(), error=_short(f"{REFUSED}: {exc}"), permanent=True)
        except DestinationUnresolved as exc:
            return Attempt(False, at, took(), error=_short(str(exc)))
        headers = {
            "Host": target.netloc.decode("ascii"),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            NOTIFICATION_ID_HEADER: str(notification_id),
            **signed_headers(secret, body),
        }
        extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else {}
        error = "no address tried"
        for address in destination.addresses[:MAX_ADDRESSES_TRIED]:
            pinned = target.copy_with(host=str(address))
            try:
                with self.client.stream(
                    "POST", pinned, content=body, headers=headers, extensions=extensions
                ) as response:
                    received = 0
                    for chunk in response.iter_raw():
                        received += len(chunk)
                        if received >= MAX_ANSWER_BYTES:
                            break
                    status = response.status_code
            except httpx.ConnectError as exc:  # this address does not answer: try the next
                error = _short(f"ConnectError: {address}: {exc}")
                continue
            except httpx.HTTPError as exc:
                return Attempt(False, at, took(), error=_short(f"{type(exc).__name__}: {exc}"))
            if 200 <= status < 300:
                return Attempt(True, at, took(), status_code=status)
            return Attempt(False, at, took(), status_code=status, error=f"HTTP {status}")
        return Attempt(False, at, took(), error=error)


# ---------------------------------------------------------------------------------- MQTT


class MqttPublisher:
    """One broker connection for the dispatcher, reconnecting by itself; QoS 1 and PUBACKs."""

    def __init__(self, url: str, client_id: str, timeout: float) -> None:
        self.timeout = timeout
        self.connection = BackgroundConnection(MqttEndpoint.parse(url), client_id, "the dispatcher")
        self.client = self.connection.client
        self.connected = self.connection.connected

    def publish(self, messages: Sequence[tuple[str, bytes]]) -> list[Attempt]:
        """Publish all at QoS 1 and wait for each PUBACK (all in flight together)."""
        at = _now()
        started = time.perf_counter()
        if not self.connected.wait(min(self.timeout, 2.0)):
            took = (time.perf_counter() - started) * 1000.0
            return [Attempt(False, at, took, error="broker not connected") for _ in messages]
        infos = [self.client.publish(topic, body, qos=1) for topic, body in messages]
        deadline = time.monotonic() + self.timeout
        results: list[Attempt] = []
        for info in infos:
            error: str | None = None
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                if not info.is_published():
                    error = "no PUBACK in time"
            except (RuntimeError, ValueError) as exc:
                error = _short(f"publish failed: {exc}")
            took = (time.perf_counter() - started) * 1000.0
            results.append(Attempt(error is None, at, took, error=error))
        return results

    def close(self) -> None:
        self.connection.close()


# ---------------------------------------------------------------------------------- dispatcher


class Dispatcher:
    """Worker threads claiming due deliveries, a listener waking them, one MQTT connection."""

    def __init__(
        self,
        settings: Settings,
        config: DispatcherConfig | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.settings = settings
        self.config = config or DispatcherConfig.from_settings(settings)
        self.stats = DispatchStats()
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._rng = random.Random()
        self._http = ThreadPoolExecutor(
            max_workers=self.config.http_concurrency, thread_name_prefix="dispatch-http"
        )
        self.box = SecretBox.optional(settings.webhook_secret_key)
        self.allow = AllowList.parse(settings.webhook_allow_hosts)
        self.webhooks = WebhookSender(
            settings.environment,
            self.allow,
            timeout=self.config.http_timeout_s,
            concurrency=self.config.http_concurrency,
            ca_file=self.config.ca_file,
            resolver=resolver,
        )
        client_id = self.config.mqtt_client_id or (
            f"tagwatch-dispatch-{os.uname().nodename[:20]}-{os.getpid()}"
        )
        self.mqtt = MqttPublisher(
            self.config.mqtt_url or settings.mqtt_dispatcher_url,
            client_id,
            self.config.mqtt_timeout_s,
        )
        # commands to devices and pursuit, on the same broker connection (alerts/command_sender.py)
        self.commands = CommandSender(settings, self.mqtt.publish, self.config.poll_interval_s)
        # Liveness and readiness (tagwatch/probes.py, TAGWATCH_PROBE_PORT): each delivery
        # worker and the escalator beat once a loop (a loop waits at most the poll interval)
        # and a worker once a second while its batch's sends are out (_wait_beating); each
        # worker keeps the database problem it last met, and the dispatcher is not ready when
        # every worker has one.
        stall = settings.probe_stall_s
        self.worker_beats = [Heartbeat(f"delivery {i}", stall) for i in range(self.config.workers)]
        self.escalator_beat = Heartbeat("escalator", stall)
        self._local = threading.local()
        self._threads: list[threading.Thread] = []
        self._database_problems: dict[int, str | None] = {}
        self.probes: ProbeServer | None = None

    # -- one batch

    def dispatch_once(self, conn: psycopg.Connection[Any]) -> int:
        """Claim, send and record one batch in one transaction; return how many rows."""
        with conn.transaction():
            due = deliveries.claim_due(conn, self.config.batch_size)
            if not due:
                return 0
            claimed = [
                Delivery(
                    d.outbox_id,
                    d.channel,
                    d.attempts,
                    d.region_id,
                    notification_body(d.outbox_id, d.payload),
                    {**d.payload, "notification_id": d.outbox_id},
                )
                for d in due
            ]
            outcomes = self._send(conn, claimed)
            self._record(conn, claimed, outcomes)
        return len(claimed)

    def _send(
        self, conn: psycopg.Connection[Any], claimed: Sequence[Delivery]
    ) -> dict[tuple[int, str], Attempt]:
        webhook_ids = sorted(
            {
                int(d.channel.removeprefix(WEBHOOK_PREFIX))
                for d in claimed
                if d.channel.startswith(WEBHOOK_PREFIX)
                and d.channel.removeprefix(WEBHOOK_PREFIX).isdigit()
            }
        )
        hooks = self._webhooks(conn, webhook_ids)
        outcomes: dict[tuple[int, str], Attempt] = {}
        futures: list[tuple[tuple[int, str], Future[Attempt]]] = []
        mqtt_items: list[Delivery] = []
        human = [d for d in claimed if d.channel.startswith(APPRISE_PREFIX)]
        futures += self._submit_human(conn, human, outcomes)
        for d in claimed:
            key = (d.outbox_id, d.channel)
            if d.channel == MQTT_CHANNEL:
                mqtt_items.append(d)
                continue
            if d.channel.startswith(APPRISE_PREFIX):
                continue
            suffix = d.channel.removeprefix(WEBHOOK_PREFIX)
            hook = hooks.get(int(suffix)) if suffix.isdigit() else None
            if not d.channel.startswith(WEBHOOK_PREFIX) or hook is None:
                outcomes[key] = Attempt(
                    False, _now(), 0.0, error="unknown channel or subscription", permanent=True
                )
                continue
            if not hook.active:
                outcomes[key] = Attempt(
                    False, _now(), 0.0, error="subscription inactive", permanent=True
                )
                continue
            if hook.secret is None:  # no key, or the wrong one: retried once it is fixed
                outcomes[key] = Attempt(False, _now(), 0.0, error=hook.problem)
                continue
            future = self._http.submit(
                self.webhooks.post, hook.url, hook.secret, d.body, d.outbox_id
            )
            futures.append((key, future))
        if mqtt_items:
            published = self.mqtt.publish([(alert_topic(d.region_id), d.body) for d in mqtt_items])
            for d, attempt in zip(mqtt_items, published, strict=True):
                outcomes[(d.outbox_id, d.channel)] = attempt
        self._wait_beating([future for _, future in futures])
        for key, future in futures:
            outcomes[key] = future.result()
        return outcomes

    def _wait_beating(self, futures: Sequence[Future[Attempt]]) -> None:
        """Wait for a batch's sends, beating the calling worker's heartbeat once a second: a
        slow receiver (each read may take the HTTP timeout, and sends queue for the pool's
        threads) is a worker at work, not a stuck one, for the liveness probe."""
        beat: Heartbeat | None = getattr(self._local, "beat", None)
        pending = set(futures)
        while pending:
            if beat is not None:
                beat.beat()
            _, pending = wait(pending, timeout=1.0)

    def _submit_human(
        self,
        conn: psycopg.Connection[Any],
        claimed: Sequence[Delivery],
        outcomes: dict[tuple[int, str], Attempt],
    ) -> list[tuple[tuple[int, str], Future[Attempt]]]:
        """Apprise deliveries: each channel's URL opened, the message written for its role and
        the alert's facts, and sent on the HTTP pool (alerts/apprise_channel.py)."""
        if not claimed:
            return []
        ids = sorted({cid for d in claimed if (cid := _channel_id(d.channel)) is not None})
        found = {c.id: c for c in channel_store.destinations(conn, ids)}
        alert_ids = sorted({int(d.payload["alert_id"]) for d in claimed if "alert_id" in d.payload})
        facts = channel_store.alert_facts(conn, alert_ids)
        futures: list[tuple[tuple[int, str], Future[Attempt]]] = []
        for d in claimed:
            key = (d.outbox_id, d.channel)
            cid = _channel_id(d.channel)
            channel = found.get(cid) if cid is not None else None
            if channel is None or not channel.active:
                error = "unknown channel" if channel is None else "channel inactive"
                outcomes[key] = Attempt(False, _now(), 0.0, error=error, permanent=True)
                continue
            if self.box is None:
                problem = key_problem(self.settings.webhook_secret_key)
                outcomes[key] = Attempt(False, _now(), 0.0, error=problem)
                continue
            try:
                url = self.box.open(channel.url_sealed)
            except SecretUnreadable as exc:
                outcomes[key] = Attempt(False, _now(), 0.0, error=str(exc))
                continue
            fact = facts.get(int(d.payload.get("alert_id", 0)))
            about = (
                About()
                if fact is None
                else About(
                    fact.subject_name,
                    fact.timezone,
                    fact.region_name,
                    fact.victim_subject,
                    fact.protects_victim,
                )
            )
            message = compose(
                d.payload, about, Recipient(channel.role, self.settings.console_base_url)
            )
            futures.append((key, self._http.submit(self._send_human, url, message)))
        return futures

    def _send_human(self, url: str, message: Message) -> Attempt:
        at = _now()
        sent = apprise_channel.send(url, message, self.settings.environment, self.allow)
        return Attempt(sent.ok, at, sent.duration_ms, error=sent.error, permanent=sent.permanent)

    def _webhooks(self, conn: psycopg.Connection[Any], ids: list[int]) -> dict[int, _Hook]:
        """The subscriptions with their secrets decrypted; a plaintext secret is encrypted (and
        its plaintext cleared) first, so none is ever used while it stays readable in the table."""
        if not ids:
            return {}
        if self.box is not None:
            sealed = seal_plaintext(conn, self.box, ids)
            if sealed:
                log.warning("encrypted %d webhook secret(s) found in plaintext", sealed)
        hooks: dict[int, _Hook] = {}
        for dest in webhook_store.destinations(conn, ids):
            url, token, active = dest.url, dest.secret_encrypted, dest.active
            if self.box is None:
                problem = key_problem(self.settings.webhook_secret_key)
                hooks[dest.id] = _Hook(url, None, active, problem)
                continue
            if token is None:  # only without a key could a row still be plaintext
                hooks[dest.id] = _Hook(url, None, active, "webhook secret not encrypted")
                continue
            try:
                hooks[dest.id] = _Hook(url, self.box.open(token), active)
            except SecretUnreadable as exc:
                hooks[dest.id] = _Hook(url, None, active, str(exc))
        return hooks

    def _mark_refusals(
        self,
        conn: psycopg.Connection[Any],
        claimed: Sequence[Delivery],
        outcomes: Mapping[tuple[int, str], Attempt],
    ) -> None:
        """Show the admin which subscriptions' destinations were refused, and clear that once
        one is delivered. Informational (the deliveries rows hold the outcome): rows another
        worker is updating are skipped rather than waited for."""
        refused: dict[int, Attempt] = {}
        delivered: set[int] = set()
        self._mark_channel_refusals(conn, claimed, outcomes)
        for d in claimed:
            suffix = d.channel.removeprefix(WEBHOOK_PREFIX)
            if not d.channel.startswith(WEBHOOK_PREFIX) or not suffix.isdigit():
                continue
            a = outcomes[(d.outbox_id, d.channel)]
            if a.ok:
                delivered.add(int(suffix))
            elif a.error and a.error.startswith(REFUSED):
                refused[int(suffix)] = a
        for wid in sorted(refused):
            webhook_store.mark_refused(conn, wid, refused[wid].at, refused[wid].error)
        for wid in sorted(delivered - set(refused)):
            webhook_store.clear_refused(conn, wid)

    def _mark_channel_refusals(
        self,
        conn: psycopg.Connection[Any],
        claimed: Sequence[Delivery],
        outcomes: Mapping[tuple[int, str], Attempt],
    ) -> None:
        """As ``_mark_refusals``, for human channels."""
        refused: dict[int, Attempt] = {}
        delivered: set[int] = set()
        for d in claimed:
            cid = _channel_id(d.channel)
            if cid is None:
                continue
            a = outcomes[(d.outbox_id, d.channel)]
            if a.ok:
                delivered.add(cid)
            elif a.error and a.error.startswith(REFUSED):
                refused[cid] = a
        for cid in sorted(refused):
            channel_store.mark_refused(conn, cid, refused[cid].at, refused[cid].error)
        for cid in sorted(delivered - set(refused)):
            channel_store.clear_refused(conn, cid)

    def _record(
        self,
        conn: psycopg.Connection[Any],
        claimed: Sequence[Delivery],
        outcomes: Mapping[tuple[int, str], Attempt],
    ) -> None:
        attempts_rows: list[deliveries.AttemptRecord] = []
        delivered_rows: list[tuple[int, str]] = []
        failed_rows: list[deliveries.Retry] = []
        delivered = retried = failed = 0
        for d in claimed:
            a = outcomes[(d.outbox_id, d.channel)]
            attempts_rows.append(
                deliveries.AttemptRecord(
                    d.outbox_id, d.channel, a.at, a.ok, a.status_code, a.error, a.duration_ms
                )
            )
            if a.ok:
                delivered_rows.append((d.outbox_id, d.channel))
                delivered += 1
                continue
            n = d.attempts + 1
            final = a.permanent or n >= self.config.max_attempts
            delay = 0.0 if final else self.config.backoff_s(n, self._rng)
            failed_rows.append(
                deliveries.Retry(
                    d.outbox_id, d.channel, "failed" if final else "pending", a.error, delay
                )
            )
            if final:
                failed += 1
                log.warning(
                    "delivery %s/%s failed for good after %d attempts: %s",
                    d.outbox_id,
                    d.channel,
                    n,
                    a.error,
                )
            else:
                retried += 1
                log.info(
                    "delivery %s/%s attempt %d failed (%s); next in %.1f s",
                    d.outbox_id,
                    d.channel,
                    n,
                    a.error,
                    delay,
                )
        deliveries.record_attempts(conn, attempts_rows)
        deliveries.mark_delivered(conn, delivered_rows)
        deliveries.mark_failed(conn, failed_rows)
        self._mark_refusals(conn, claimed, outcomes)
        self.stats.count(delivered, retried, failed)

    def seconds_to_next(self, conn: psycopg.Connection[Any]) -> float:
        """Until the earliest scheduled retry is due, at most the poll interval. Rows due now
        that the last claim skipped are locked by another worker, which will handle them."""
        due_in = deliveries.seconds_to_next_retry(conn)
        conn.rollback()  # leave no transaction open while waiting
        poll = self.config.poll_interval_s
        if due_in is None:
            return poll
        return max(0.01, min(poll, due_in))

    # -- threads

    def _worker(self, number: int, beat: Heartbeat) -> None:
        self._local.beat = beat
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            beat.beat()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.settings.database_url_for("dispatcher"))
                claimed = self.dispatch_once(conn)
                self._database_problems[number] = None
                if claimed >= self.config.batch_size:
                    continue  # more may be waiting
                self.wake.wait(self.seconds_to_next(conn))
                self.wake.clear()
            except psycopg.Error as exc:
                self._database_problems[number] = f"database: {type(exc).__name__}"
                log.warning("dispatcher database error: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(1.0)
            except Exception:
                log.exception("dispatcher worker error")
                self._stop.wait(1.0)
        if conn is not None:
            conn.close()

    def escalate_once(self, conn: psycopg.Connection[Any]) -> int:
        """Escalate the alerts left unacknowledged past their deadline (store.escalations), in
        one transaction; how many."""
        with conn.transaction():
            escalated = escalations.escalate_overdue(conn, self.settings.ack_deadlines())
        for alert in escalated:
            log.warning(
                "alert %s (%s, %s) not acknowledged within %.0f s: escalated",
                alert.id,
                alert.type,
                alert.severity,
                alert.deadline_s,
            )
        return len(escalated)

    def _escalator(self) -> None:
        """The acknowledgement timer: every poll interval, one claim of overdue alerts."""
        conn: psycopg.Connection[Any] | None = None
        while not self._stop.is_set():
            self.escalator_beat.beat()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.settings.database_url_for("dispatcher"))
                if self.escalate_once(conn) >= escalations.BATCH:
                    continue
            except psycopg.Error as exc:
                log.warning("dispatcher escalation: %s", exc)
                if conn is not None:
                    conn.close()
                conn = None
            except Exception:
                log.exception("dispatcher escalation error")
            self._stop.wait(self.config.poll_interval_s)
        if conn is not None:
            conn.close()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.settings.database_url_for("dispatcher"), autocommit=True
                ) as conn:
                    deliveries.listen(conn)
                    self.wake.set()  # catch up on what was committed while not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self.wake.set()
            except psycopg.Error as exc:
                log.warning("dispatcher listener: %s", exc)
                self._stop.wait(1.0)

    def prepare_secrets(self) -> None:
        """At start-up: encrypt any plaintext secret and re-encrypt those under a retired key,
        so the table holds no readable secret even for subscriptions that get no alert."""
        if self.box is None:
            log.error(
                "webhook deliveries will fail: %s", key_problem(self.settings.webhook_secret_key)
            )
            return
        try:
            with psycopg.connect(self.settings.database_url_for("dispatcher")) as conn:
                sealed = seal_plaintext(conn, self.box)
                rotated = rotate_all(conn, self.box)
        except psycopg.Error as exc:
            log.warning("could not encrypt webhook secrets at start-up: %s", exc)
            return
        if sealed or rotated:
            log.warning(
                "webhook secrets: %d plaintext encrypted, %d re-encrypted under the first key",
                sealed,
                rotated,
            )

    # -- probes

    def live_problem(self) -> str | None:
        """Why /healthz fails: a thread that ended, or a loop that stopped moving."""
        checks: list[Check] = [partial(thread_problem, t.name, t) for t in self._threads]
        checks += [beat.problem for beat in self.worker_beats]
        checks.append(self.escalator_beat.problem)
        return first_problem(checks)

    def ready_problem(self) -> str | None:
        """Why /readyz fails: not started yet, or every delivery worker's last database attempt
        failed (one worker's error while the others work is that worker's, not the database's)."""
        if not self._threads:
            return "starting"
        problems = [
            self._database_problems.get(i, "database: not tried yet")
            for i in range(len(self.worker_beats))
        ]
        if problems and all(problem is not None for problem in problems):
            return problems[0]
        return None

    def _close_probes(self) -> None:
        if self.probes is not None:
            self.probes.close()
            self.probes = None

    def start_probes(self) -> ProbeServer | None:
        if self.probes is None:
            self.probes = ProbeServer.for_settings(
                self.settings, self.live_problem, self.ready_problem
            )
        return self.probes

    def run(self, stop: threading.Event) -> DispatchStats:
        self.start_probes()
        try:
            self.prepare_secrets()
        except BaseException:
            self._close_probes()
            raise
        threads = [threading.Thread(target=self._listen, name="dispatch-listen", daemon=True)]
        threads += [
            threading.Thread(target=self._worker, args=(i, beat), name=f"dispatch-{i}", daemon=True)
            for i, beat in enumerate(self.worker_beats)
        ]
        threads.append(
            threading.Thread(target=self._escalator, name="dispatch-escalate", daemon=True)
        )
        threads.append(
            threading.Thread(
                target=self.commands.run, args=(self._stop,), name="dispatch-commands", daemon=True
            )
        )
        for thread in threads:
            thread.start()
        self._threads = threads
        log.info(
            "dispatcher started: %d workers, batches of %d",
            self.config.workers,
            self.config.batch_size,
        )
        try:
            while not stop.wait(0.5):
                pass
        finally:
            self._stop.set()
            self.wake.set()
            for thread in threads:
                thread.join(self.config.http_timeout_s + self.config.mqtt_timeout_s + 5)
            self._http.shutdown(wait=False, cancel_futures=True)
            self.webhooks.close()
            self.mqtt.close()
            self._close_probes()
        log.info(
            "dispatcher stopped: %d delivered, %d retries scheduled, %d failed",
            self.stats.delivered,
            self.stats.retried,
            self.stats.failed,
        )
        return self.stats


def run(
    settings: Settings, stop: threading.Event, config: DispatcherConfig | None = None
) -> DispatchStats:
    """Deliver until ``stop`` is set; finish the batches in hand, then return the counts."""
    return Dispatcher(settings, config).run(stop)


def main(settings: Settings | None = None) -> DispatchStats:
    """``tagwatch dispatch``: run until SIGTERM or SIGINT."""
    if settings is None:
        from tagwatch.settings import get_settings  # noqa: PLC0415

        settings = get_settings()
    stop = threading.Event()

    def _stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return run(settings, stop)


__all__ = [
    "Attempt",
    "DispatchStats",
    "Dispatcher",
    "DispatcherConfig",
    "MqttPublisher",
    "WebhookSender",
    "alert_topic",
    "main",
    "notification_body",
    "run",
]
