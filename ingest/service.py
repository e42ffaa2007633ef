"""The ingest process: MQTT in, decode, one transaction per batch, then acknowledge.

paho-mqtt runs the network loop in its own thread and hands every message to a bounded queue; a
decode thread takes batches from it (size and time bounded) and decodes them while the main thread
writes the previous batch in one transaction and only then sends its PUBACKs (manual
acknowledgement). The session is persistent (fixed client id, clean start off,
session never expires), so whatever was not acknowledged, because ingest was killed, the database
was down or the connection dropped, is redelivered by the broker and stored once thanks to the
unique key. A full queue blocks the network thread: backpressure reaches the broker, which keeps
the messages for us.

Memory is bounded in bytes, not only in messages: every message's payload is counted against
`TAGWATCH_INGEST_QUEUE_BYTES` from the moment paho hands it over until its batch is committed and
acknowledged (queued, being decoded, waiting for the writer, being written), so a flood of large
payloads holds ingest at a fixed size; the network thread waits for room, nothing is dropped.
"""

from __future__ import annotations

import gc
import logging
import queue
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import tenacity
from psycopg.conninfo import conninfo_to_dict

from tagwatch.alerts.engine import AlertEngine
from tagwatch.alerts.state_cache import StateCache
from tagwatch.alerts.thresholds import DEFAULTS, ThresholdError, layered
from tagwatch.ingest import affinity, collector
from tagwatch.ingest.decode import (
    Decoded,
    Limits,
    Reason,
    engine_events,
    engine_fixes,
    engine_phones,
    sender_of,
)
from tagwatch.ingest.flood_guard import FloodGuard
from tagwatch.ingest.inbox import Inbox
from tagwatch.ingest.index_snapshot import Identity, SnapshotKeeper, snapshot_key
from tagwatch.ingest.osmand import decode_osmand_message, is_osmand_topic
from tagwatch.ingest.registry import DeviceRegistry
from tagwatch.ingest.routing import decode_message
from tagwatch.mqtt_client import new_client
from tagwatch.probes import Heartbeat, ProbeServer, first_problem, thread_problem
from tagwatch.settings import DEV_SECRET, MqttEndpoint, Settings
from tagwatch.store.engine_repository import (
    PgEngineRepository,
    catalogue_identity,
    clock_and_speed,
)
from tagwatch.store.ingest_writer import (
    BatchResult,
    DeadLetterPolicy,
    ignored_counters,
    prepare_session,
    store_batch,
    write_counters,
)

log = logging.getLogger("tagwatch.ingest")

TOPICS = (
    "em/v1/+/fix",
    "em/v1/+/event",
    "em/v1/+/status",
    "em/v1/+/ack",  # answers to commands (store.commands.record_answers)
    # a phone's base topic and every sub-topic under it (/event, /status, ...; its own /cmd is
    # counted as ignored, ingest/owntracks.py)
    "owntracks/+/+/#",
    "osmand/+/+",  # HTTP intake of Traccar Client phones, relayed by the API (ingest/osmand.py)
)
# After a (re)connect ingest publishes a marker to a topic only it subscribes to. The broker
# queues it behind everything it kept for the session while ingest was away, so when the marker
# comes back through ingest's own queues the backlog is written: only then do the clock rules
# judge silence. (Guessing it from timing failed: at a 600x scenario clock a batch from the
# backlog's tail looked live, the local queues were empty for a moment, and devices whose fixes
# were still at the broker were judged silent.)
BARRIER_PREFIX = "tagwatch/barrier/"
BARRIER_FALLBACK_S = 60.0  # no marker back by then (an old broker role): judge by quiet instead
DRAIN_QUIET_S = 0.3  # the fallback: no message for this long and nothing waiting here
BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf"))


MESSAGE_OVERHEAD_BYTES = 256  # what a queued message costs beyond its topic and payload

# Between database attempts: 0.5 s x 2^(n-1), at most 3 s, with "equal jitter" (half of it fixed,
# half random), so workers that lost the database together do not return to it in step, and none
# comes back sooner than half the step. The cap is what a failover costs on top of the promotion
# (`tagwatch chaos db-failover`): at 10 s ingest found the new primary ~5 s after Patroni had
# promoted it, while an attempt every 1.5-3 s per worker is nothing to a database.
DATABASE_BACKOFF: tenacity.wait.wait_base = tenacity.wait_exponential(
    multiplier=0.25, max=1.5
) + tenacity.wait_random_exponential(multiplier=0.25, max=1.5)


def database_retrying(
    stop: threading.Event,
    what: str,
    wait: tenacity.wait.wait_base = DATABASE_BACKOFF,
    *,
    beat: Callable[[], None] | None = None,
) -> tenacity.Retrying:
    """Retry on ``psycopg.OperationalError`` (the database away, restarting, or the connection
    dropped) until it works, or until ``stop`` is set: ingest waits a database outage out instead
    of giving up, since nothing is acknowledged before it is committed and a batch given up would
    sit unacknowledged until the broker reconnects. Other errors are bugs, raised at once.

    The waits are on ``stop``, so a stop request ends one at once; the attempt that follows is
    the last: its result is returned, or its error raised (the caller then leaves the batch,
    unacknowledged, to the broker). ``beat`` is called before each wait: waiting out an outage
    is progress for the liveness probe (tagwatch/probes.py)."""

    def wait_or_stop(seconds: float) -> None:
        if beat is not None:
            beat()
        stop.wait(seconds)

    def note(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "%s: database error (%s); retrying in %.1f s", what, error, state.upcoming_sleep
        )

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(psycopg.OperationalError),
        stop=tenacity.stop_when_event_set(stop),
        wait=wait,
        sleep=wait_or_stop,
        before_sleep=note,
        reraise=True,
    )


def write_batch(
    conn: psycopg.Connection,
    worker: str,
    decoded: Decoded,
    counters: dict[tuple[str, str], float],
    engine: AlertEngine | None,
    policy: DeadLetterPolicy,
) -> BatchResult:
    """One batch in one transaction that ingest owns: the writer stores it, then the engine
    (with the PostgreSQL repository on the same connection) evaluates what was new, then the
    counters. Everything or nothing, so a batch replayed after a crash neither loses an alert nor
    raises one twice; the caller acknowledges the messages only after this returns."""
    try:
        with conn.transaction():
            stored = store_batch(conn, decoded, policy)
            result = stored.result
            if engine is not None:
                result.alert_changes = _evaluate(
                    conn, engine, stored.new_fixes, stored.new_events, stored.new_phones, counters
                )
            write_counters(conn, worker, result, decoded.dead, ignored_counters(decoded, counters))
    except BaseException:
        if engine is not None:
            engine.state_cache.discarded()
        raise
    if engine is not None:
        engine.state_cache.committed()  # the states the batch wrote are the rows' now
    return result


def _evaluate(
    conn: psycopg.Connection,
    engine: AlertEngine,
    fixes: list[tuple[Any, ...]],
    events: list[tuple[Any, ...]],
    phones: list[tuple[Any, ...]],
    counters: dict[tuple[str, str], float],
) -> int:
    """A bug in the rules must not stop fixes being stored: the engine's work is a savepoint,
    rolled back and counted (alert_engine_errors_total) if it fails for any reason but the
    database going away."""
    try:
        with conn.transaction():
            return engine.process(
                PgEngineRepository(conn),
                engine_fixes(fixes),
                engine_events(events),
                engine_phones(phones),
            )
    except psycopg.OperationalError:
        raise
    except Exception:
        engine.state_cache.discarded()
        log.exception("alert engine failed on a batch; fixes stored without evaluation")
        counters[("alert_engine_errors_total", "")] = (
            counters.get(("alert_engine_errors_total", ""), 0.0) + 1
        )
        return 0


@dataclass(slots=True)
class Inbound:
    generation: int
    mid: int
    qos: int
    topic: str
    payload: bytes

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic) + MESSAGE_OVERHEAD_BYTES


class ByteBudget:
    """Bytes held by ingest between arrival and acknowledgement. `take` waits while the budget
    is spent (a message larger than the whole budget still passes when nothing else is held, so
    it can never wedge ingest); `give_back` after the batch is committed and acknowledged."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self._room = threading.Condition()

    def take(self, size: int, stop: threading.Event) -> None:
        with self._room:
            while self.held and self.held + size > self.limit and not stop.is_set():
                self._room.wait(0.2)
            self.held += size
            self.peak = max(self.peak, self.held)

    def give_back(self, size: int) -> None:
        with self._room:
            self.held -= size
            self._room.notify_all()


def _snapshot_keeper(settings: Settings) -> SnapshotKeeper | None:
    """The catalogue snapshot, when configured and signable: outside development the key must
    not derive from the published development secret (anyone could sign a snapshot)."""
    if settings.index_snapshot is None:
        return None
    if settings.secret_key == DEV_SECRET and settings.environment == "production":
        log.warning("catalogue snapshots off: TAGWATCH_SECRET_KEY is the development default")
        return None
    return SnapshotKeeper(
        settings.index_snapshot, snapshot_key(settings.secret_key), settings.index_snapshot_every_s
    )


def subscriptions(shared_group: str | None) -> list[str]:
    """With a shared group, several workers split the stream (MQTT 5 shared subscriptions)."""
    if shared_group:
        return [f"$share/{shared_group}/{topic}" for topic in TOPICS]
    return list(TOPICS)


class IngestService:
    def __init__(self, settings: Settings, worker: str | None = None) -> None:
        self.settings = settings
        self.worker = worker or settings.ingest_client_id
        self.limits = Limits(
            max_payload_bytes=settings.max_payload_bytes,
            max_batch_fixes=settings.max_batch_fixes,
            future_tolerance_s=settings.future_tolerance_s,
            max_lateness_s=settings.max_fix_lateness_s,
        )
        self.dead_letter_policy = DeadLetterPolicy(
            per_device_per_minute=settings.dead_letters_per_device_minute
        )
        self.flood_guard = FloodGuard(settings.ingest_quarantine_refused_per_minute)
        self.budget = ByteBudget(settings.ingest_queue_bytes)
        # One batch holds at most a quarter of the budget, so decoding, writing and receiving
        # can overlap even when every message is large.
        self.batch_bytes = max(1, settings.ingest_queue_bytes // 4)
        self.inbox: Inbox[Inbound] = Inbox(settings.ingest_queue_messages)
        # Decoded batches waiting for the writer; two is enough to keep both stages busy.
        self.ready: queue.Queue[tuple[list[Inbound], Decoded]] = queue.Queue(maxsize=2)
        self.registry = DeviceRegistry(
            settings.database_url_for("ingest"), settings.webhook_secret_key
        )
        self.stop_requested = threading.Event()
        self.failure: BaseException | None = None  # what stopped a stage, if not a stop request
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.totals = BatchResult()
        self._generation = 0
        self._generation_lock = threading.Lock()
        self._pending_latency: list[float] = []
        self._conn: psycopg.Connection | None = None
        self.engine = AlertEngine() if settings.alerts_enabled else None
        self.snapshots = _snapshot_keeper(settings) if self.engine is not None else None
        self.catalogue_ready_s: float | None = None  # start to a synced engine, for the benches
        self.catalogue_source = ""  # "snapshot" or "tables"
        self._last_tick = 0.0
        self._tick_every = 1.0
        self._speed_checked = 0.0
        self._drained = False
        self._barrier_topic = BARRIER_PREFIX + settings.ingest_client_id
        self._barrier_nonce = b""
        self._connected_at = time.monotonic()
        self._last_inbound = 0.0
        # When each message not yet written arrived, oldest first: messages leave in the order
        # they came (one decoder, FIFO queues), so the first is the oldest still waiting.
        self._arrivals: deque[float] = deque()
        self._speed = 1.0
        # Liveness and readiness (tagwatch/probes.py, TAGWATCH_PROBE_PORT).
        self.writer_beat = Heartbeat("writer", settings.probe_stall_s)
        self.decoder_beat = Heartbeat("decoder", settings.probe_stall_s)
        self._decoder: threading.Thread | None = None
        self._database_problem: str | None = "database: not connected yet"
        self.probes: ProbeServer | None = None
        self._client = self._make_client()

    # ------------------------------------------------------------ MQTT side

    def _make_client(self) -> mqtt.Client:
        endpoint = MqttEndpoint.parse(self.settings.mqtt_url)
        # MQTT 3.1.1 with clean session off: a session that never expires, and paho decodes
        # it about 1.5x faster than MQTT 5 (measured by `tagwatch bench ingest`).
        client = new_client(endpoint, self.settings.ingest_client_id, clean_session=False)
        client.manual_ack_set(True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._endpoint = endpoint
        return client

    def _on_connect(
        self, client: mqtt.Client, _u: object, flags: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused ingest: %s", reason)
            return
        with self._generation_lock:
            self._generation += 1
        self._drained = False  # what the broker kept for us comes first: no clock rules till then
        self._barrier_nonce = b""
        self._connected_at = time.monotonic()
        topics = [(topic, 1) for topic in subscriptions(self.settings.ingest_shared_group)]
        client.subscribe([*topics, (self._barrier_topic, 1)])
        self.connected.set()
        present = getattr(flags, "session_present", "?")
        log.info("connected to broker (session present: %s)", present)

    def _on_subscribe(
        self, client: mqtt.Client, _u: object, _mid: int, reasons: list[Any], _p: object
    ) -> None:
        *data, barrier = reasons
        refused = [r for r in data if getattr(r, "is_failure", False)]
        if refused:
            log.error("broker refused subscriptions: %s", refused)
            return
        self.subscribed.set()
        log.info("subscribed to %d topics", len(data))
        if getattr(barrier, "is_failure", False):
            log.warning("the broker refused %s: no drain marker", self._barrier_topic)
            return
        with self._generation_lock:
            nonce = f"{self._generation}:{random.getrandbits(64):x}".encode()
        self._barrier_nonce = nonce
        client.publish(self._barrier_topic, nonce, qos=1)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        with self._generation_lock:
            self._generation += 1  # nothing received before this may be acknowledged now
        if not self.stop_requested.is_set():
            log.warning("broker connection lost (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._last_inbound = time.monotonic()
        self._arrivals.append(self._last_inbound)
        item = Inbound(self._generation, msg.mid, msg.qos, msg.topic, bytes(msg.payload))
        self.budget.take(item.size, self.stop_requested)  # full: the network thread waits here
        self.inbox.put(item, self.stop_requested)

    def _acknowledge(self, batch: list[Inbound]) -> None:
        with self._generation_lock:
            current = self._generation
            for item in batch:
                if item.qos > 0 and item.generation == current:
                    self._client.ack(item.mid, item.qos)

    # ------------------------------------------------------------ database side

    def _connect_db(self) -> psycopg.Connection:
        """A session for the writer, waiting for the database as long as it takes (a stop request
        ends the wait and raises the last error)."""
        retrying = database_retrying(self.stop_requested, "connecting", beat=self.writer_beat.beat)
        return retrying(self._connect_once)

    def _connect_once(self) -> psycopg.Connection:
        url = self.settings.database_url_for("ingest")
        # A database that drops packets would hold a connect for the kernel's SYN retries (two
        # minutes): give up sooner and let the retry wait it out, unless the URL says otherwise.
        own_timeout = "connect_timeout" in conninfo_to_dict(url)
        try:
            conn = psycopg.connect(url) if own_timeout else psycopg.connect(url, connect_timeout=10)
            prepare_session(conn)
        except psycopg.OperationalError as exc:
            self._database_problem = f"database: {type(exc).__name__}"
            raise
        self._database_problem = None
        return conn

    def _collect(self) -> list[Inbound]:
        return self.inbox.take(
            self.settings.ingest_batch_messages,
            self.batch_bytes,
            self.settings.ingest_batch_seconds,
        )

    def _release(self, batch: list[Inbound]) -> None:
        self.budget.give_back(sum(item.size for item in batch))

    def _decode(self, batch: list[Inbound]) -> Decoded:
        """A message the decoder fails on (a bug, not bad input it knows) is a dead letter
        `decoder_error`, never an exception that stops the decode stage: the broker would hand
        the same message back after every restart. The database going away still propagates."""
        out = Decoded()
        now = time.time()
        guard = self.flood_guard
        for item in batch:
            if item.topic.startswith(BARRIER_PREFIX):
                continue  # ingest's own drain marker (`_on_subscribe`): acknowledged, not data
            sender = sender_of(item.topic)
            if guard.quarantined(sender, now):
                out.refuse(
                    item.topic,
                    item.payload,
                    Reason.QUARANTINED,
                    f"over {guard.refused_per_minute} refused inputs this minute: not decoded",
                )
                continue
            mark = out.mark()
            # Traccar Client's requests, relayed by the API, have their own decoder.
            decode = decode_osmand_message if is_osmand_topic(item.topic) else decode_message
            try:
                decode(
                    item.topic,
                    item.payload,
                    now,
                    self.registry.by_id,
                    self.registry.by_owntracks_topic,
                    self.limits,
                    out,
                )
            except psycopg.Error:
                raise
            except Exception as exc:
                log.exception("decoder failed on a message on %s; dead-lettered", item.topic)
                out.rewind(mark)
                out.refuse(item.topic, item.payload, Reason.DECODER_ERROR, repr(exc)[:500])
            guard.record(sender, len(out.dead) - mark[3], now)
        return out

    def _decode_until_done(self, batch: list[Inbound]) -> Decoded | None:
        """Decoding may look devices up in the database; wait it out if that is down. None when
        a stop request ended the wait (the batch is left to the broker)."""
        retrying = database_retrying(
            self.stop_requested, "device registry", beat=self.decoder_beat.beat
        )
        try:
            return retrying(self._decode, batch)
        except psycopg.OperationalError:
            if self.stop_requested.is_set():
                return None
            raise

    def _decode_loop(self) -> None:
        """The decode stage: runs beside the writer, so decoding overlaps the database's work.
        If it dies (an error it does not handle), the worker stops rather than go on receiving
        into an inbox nobody empties: nothing taken is acknowledged, so the broker keeps it for
        the restarted worker."""
        try:
            self._decode_stage()
        except Exception as exc:  # logged here, with its traceback; the thread then ends
            log.exception("the decode stage failed; stopping this worker")
            self.failure = exc
            self.stop_requested.set()

    def _decode_stage(self) -> None:
        while not self.stop_requested.is_set():
            self.decoder_beat.beat()
            batch = self._collect()
            if not batch:
                continue
            decoded = self._decode_until_done(batch)
            if decoded is None:
                self._release(batch)  # stopping: never acknowledged, the broker redelivers it
                return
            while True:
                if self.stop_requested.is_set():
                    self._release(batch)
                    return
                self.decoder_beat.beat()  # waiting for the writer is the writer's stall, not ours
                try:
                    self.ready.put((batch, decoded), timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _write(self, batch: list[Inbound], decoded: Decoded) -> BatchResult:
        """Write the batch, retrying the whole transaction while the database is away; raises
        ``psycopg.OperationalError`` only when a stop request ended the wait."""
        retrying = database_retrying(
            self.stop_requested, "writing a batch", beat=self.writer_beat.beat
        )
        return retrying(self._write_once, batch, decoded)

    def _write_once(self, batch: list[Inbound], decoded: Decoded) -> BatchResult:
        """One attempt: a failed one drops the connection, so the next starts on a fresh one."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect_db()
                if self.engine is not None:
                    # another server (a failover) may have handed out the same row versions
                    self.engine.state_cache.clear()
            counters: defaultdict[tuple[str, str], float] = defaultdict(float)
            counters[("messages_total", "")] = len(batch)
            for seconds in self._pending_latency:
                counters[("ingest_batch_seconds_count", "")] += 1
                counters[("ingest_batch_seconds_sum", "")] += seconds
                for bound in BATCH_SECONDS_BUCKETS:
                    if seconds <= bound:
                        counters[("ingest_batch_seconds_bucket", str(bound))] += 1
            result = write_batch(
                self._conn, self.worker, decoded, counters, self.engine, self.dead_letter_policy
            )
        except psycopg.OperationalError as exc:
            self._database_problem = f"database: {type(exc).__name__}"
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            raise
        self._database_problem = None
        self._pending_latency.clear()
        return result

    def _account(self, result: BatchResult) -> None:
        self.totals.fixes_stored += result.fixes_stored
        self.totals.fix_duplicates += result.fix_duplicates
        self.totals.events_stored += result.events_stored
        self.totals.event_duplicates += result.event_duplicates
        self.totals.dead_letters += result.dead_letters
        self.totals.dead_letters_not_stored += result.dead_letters_not_stored
        self.totals.before_assignment += result.before_assignment

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect to the database first: no message is taken before it can be stored, and
        none before the engine holds the catalogue (its first batch would wait for it anyway)."""
        if self.settings.ingest_cpu is not None:  # before the network and decode threads start
            cpu = affinity.pin_to_cpu(self.settings.ingest_cpu)
            if cpu is not None:
                log.info("ingest %s: its threads run on CPU %d", self.worker, cpu)
        self._conn = self._connect_db()
        self.writer_beat.beat()
        count = self.registry.load_all()
        log.info("ingest %s: %d devices known", self.worker, count)
        self.writer_beat.beat()
        self._prepare_engine()
        self.writer_beat.beat()
        thresholds = collector.settle(self.settings.ingest_gc_threshold)
        log.info("garbage collector: what is loaded is frozen; thresholds %s", thresholds)
        self._client.connect_async(self._endpoint.host, self._endpoint.port, keepalive=30)
        self._client.loop_start()

    def _prepare_engine(self) -> None:
        """The engine's catalogue from the snapshot when one is usable, else from the tables;
        then synced to now. A build from the tables is saved at once for the next start."""
        if self.engine is None or self._conn is None:
            return
        started = time.perf_counter()
        repo = PgEngineRepository(self._conn)
        source = "tables"
        if self.snapshots is not None:
            try:
                thresholds = layered(repo.global_thresholds())
            except ThresholdError:
                thresholds = DEFAULTS
            loaded = self.snapshots.load(Identity(*catalogue_identity(self._conn)), thresholds)
            self._conn.commit()
            if loaded.engine is not None:
                self.engine = loaded.engine
                source = "snapshot"
                log.info("catalogue snapshot loaded: %s", loaded.reason)
            else:
                log.warning("catalogue snapshot not used: %s", loaded.reason)
        # The catalogue is millions of objects that all survive: the cyclic collector's passes
        # over the growing heap while it loads are pure cost (settle collects and freezes
        # everything once the worker is ready).
        pause = gc.isenabled()
        gc.disable()
        try:
            with self._conn.transaction():
                self.engine.sync(repo)
        finally:
            if pause:
                gc.enable()
        self.engine.state_cache = StateCache(self.settings.engine_state_cache)
        self.catalogue_ready_s = time.perf_counter() - started
        self.catalogue_source = source
        log.info(
            "zone index ready in %.1f s from the %s: %d zones, %d subjects, revision %d",
            self.catalogue_ready_s,
            source,
            len(self.engine.index),
            self.engine.index.subject_count,
            self.engine.revision,
        )
        if self.snapshots is not None:
            self.snapshots.maybe_save(self.engine, now=source == "tables")

    # ------------------------------------------------------------ probes

    def live_problem(self) -> str | None:
        """Why /healthz fails: a stage that stopped moving, or a thread that ended. While the
        worker starts (the database, the devices, the catalogue: seconds from the snapshot,
        about 20 s from the tables at national size, longer for larger caseloads) it is alive:
        the startup probe asks /readyz, with its own time limit, so the stall time does not
        bound the catalogue."""
        if self._decoder is None:
            return None
        return first_problem(
            [
                self.writer_beat.problem,
                lambda: thread_problem("decoder", self._decoder),
                self.decoder_beat.problem,
                lambda: thread_problem("MQTT network loop", getattr(self._client, "_thread", None)),
            ]
        )

    def ready_problem(self) -> str | None:
        """Why /readyz fails: the database away, still loading, or not subscribed."""
        if self._database_problem is not None:
            return self._database_problem
        if self._decoder is None:  # set once start() is through, the catalogue with it
            return "loading the catalogue"
        if not self.subscribed.is_set():
            return "broker: not subscribed"
        return None

    def start_probes(self) -> ProbeServer | None:
        if self.probes is None:
            self.probes = ProbeServer.for_settings(
                self.settings, self.live_problem, self.ready_problem
            )
        return self.probes

    def run(self) -> None:
        self.start_probes()
        try:
            self.start()
            decoder = threading.Thread(target=self._decode_loop, name="ingest-decode", daemon=True)
            self.writer_beat.beat()
            self.decoder_beat.beat()
            decoder.start()
            self._decoder = decoder  # started: the probes judge the running worker from now on
        except BaseException:  # stopped while waiting for the database, or a broken start
            self._close_probes()
            raise
        try:
            while not self.stop_requested.is_set():
                self.step()
        finally:
            self.stop_requested.set()
            decoder.join(5)
            self.close()

    def step(self) -> int:
        """One decoded batch: write, commit, acknowledge. Returns the number of messages."""
        self.writer_beat.beat()
        self._maybe_tick()
        try:
            batch, decoded = self.ready.get(timeout=min(0.2, self._tick_every))
        except queue.Empty:
            self._snapshot_between_batches()
            return 0
        started = time.perf_counter()
        try:
            result = self._write(batch, decoded)
        except psycopg.OperationalError:
            self._release(batch)
            self._left(len(batch))
            return 0  # stopping while the database is down: the broker redelivers it all
        self._acknowledge(batch)
        self._release(batch)
        self._left(len(batch))
        if (
            not self._drained
            and self._barrier_nonce
            and any(
                item.topic == self._barrier_topic and item.payload == self._barrier_nonce
                for item in batch
            )
        ):
            self._drained = True
            log.info("backlog written (drain marker back after %.1f s)", self._since_connect())
        self._pending_latency.append(time.perf_counter() - started)
        self._account(result)
        self._snapshot_between_batches()
        return len(batch)

    def _snapshot_between_batches(self) -> None:
        """Collect a finished save and start one if due: between batches nothing changes the
        engine, and an idle worker (no batch for a while) still reaps and saves."""
        if self.snapshots is not None and self.engine is not None:
            self.snapshots.maybe_save(self.engine)

    def _left(self, count: int) -> None:
        for _ in range(min(count, len(self._arrivals))):
            self._arrivals.popleft()

    def _waiting_s(self) -> float:
        """How long the oldest message not yet written has waited (0 when none waits)."""
        try:
            return max(0.0, time.monotonic() - self._arrivals[0])
        except IndexError:
            return 0.0

    def _since_connect(self) -> float:
        return time.monotonic() - self._connected_at

    def _rule_now(self) -> float:
        if self._conn is None or self._conn.closed:
            return time.time()
        now, self._speed = clock_and_speed(self._conn)
        self._conn.commit()
        return now

    def _maybe_tick(self) -> None:
        """Clock rules about once a second, between batches, on the writer's connection.

        Under a compressed scenario clock (`rule_clock.speed` > 1) a second of wall time is many
        of the rules' seconds, so the rules tick more often: about every 15 scenario seconds,
        never more than 50 times a wall second. While messages wait in ingest's own queues the
        tick waits (up to ten periods): a backlog here must not look like devices going silent."""
        if self.engine is None or time.monotonic() - self._last_tick < self._tick_every:
            return
        backlog = not self.inbox.empty() or not self.ready.empty()
        if not self._drained:
            # After a (re)connect the broker first sends what it kept while ingest was away;
            # judging silence before that is in would raise no_communication for every device.
            # Drained: the marker came back (`step`), or, where the broker never returns it,
            # nothing arrived for a moment once the fallback time has passed.
            heard = max(self._last_inbound, self._connected_at)  # nothing yet is not quiet
            quiet = not backlog and time.monotonic() - heard > DRAIN_QUIET_S
            if not (quiet and self._since_connect() > BARRIER_FALLBACK_S):
                return
            log.warning("no drain marker after %.0f s: judging silence again", BARRIER_FALLBACK_S)
            self._drained = True
        # Messages still waiting here are not silence: catch up first, for ten tick periods and
        # at least two wall seconds (at a 900x scenario clock ten periods are 0.17 s, and one
        # slow batch on a busy machine made every device look 16 minutes silent).
        if backlog and time.monotonic() - self._last_tick < max(10 * self._tick_every, 2.0):
            return
        self._last_tick = time.monotonic()
        try:
            if self._conn is None or self._conn.closed:
                return
            if self._last_tick - self._speed_checked > 2.0:
                self._speed_checked = self._last_tick
                self._rule_now()  # refreshes self._speed
                self._tick_every = min(1.0, max(0.02, 15.0 / self._speed))
            for _ in range(10):  # bounded: batches must not wait long behind the clock
                if (
                    not self.engine.tick(PgEngineRepository(self._conn), self._waiting_s())
                    or self.stop_requested.is_set()
                ):
                    break
            self._database_problem = None
        except psycopg.OperationalError as exc:
            # an idle worker learns of a database outage here first (readiness)
            self._database_problem = f"database: {type(exc).__name__}"
            log.warning("clock rules skipped: database error (%s)", exc)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
        except Exception:
            log.exception("clock rules failed; retrying in a second")
            if self._conn is not None and not self._conn.closed:
                self._conn.rollback()

    def close(self) -> None:
        if self.engine is not None and self.engine.state_cache.capacity:
            cache = self.engine.state_cache
            log.info(
                "rule states kept between batches: %d hits, %d misses, %d held",
                cache.hits,
                cache.misses,
                len(cache),
            )
        if self.snapshots is not None:
            self.snapshots.reap(wait_s=30.0)  # a save under way finishes rather than half-writes
        self._client.disconnect()
        self._client.loop_stop()
        if self._conn is not None:
            self._conn.close()
        self.registry.close()
        self._close_probes()

    def _close_probes(self) -> None:
        if self.probes is not None:
            self.probes.close()
            self.probes = None
