"""Human channels through Apprise: which URLs may be a destination, and one send.

Apprise (https://github.com/caronc/apprise) speaks more than a hundred services (e-mail over
SMTP, SMS gateways, Telegram, Matrix, Signal, ...) behind one URL syntax; tracing units work from
phones, and writing and keeping SMTP, SMS and messenger clients ourselves would be worse.

What is checked, and what cannot be:

* The URL must be one Apprise understands. Schemes that notify this machine itself (desktop
  notifications, the local syslog, a USB light) are refused: nobody reads them.
* Where the scheme names the host Apprise will connect to (plugins whose URL template has a
  ``host``: e-mail's SMTP server - its ``smtp=`` parameter when given -, Matrix, Mattermost,
  ntfy, Gotify, JSON/XML/form posts, MQTT, ...), that host gets the webhooks' care
  (alerts/webhook_destination.py): a loopback, private, link-local or metadata address, or
  ``localhost``, is refused when saved (422) and, resolved again, on every send, unless
  ``TAGWATCH_WEBHOOK_ALLOW_HOSTS`` allows it. A refusal is a permanent failure, shown on the
  channel. Outside development a scheme that has a TLS variant must use it (``mailtos://``,
  ``matrixs://``, ...) unless the host is allow-listed.
* Services at a fixed public address (Telegram, Discord, Slack, Twilio, Pushover, ...) have no
  host in the URL (what sits there is a token); there is nothing to check, and they cannot be
  pointed inside.
* Unlike webhooks, the connection is Apprise's own: it resolves the name again when it
  connects, so a DNS answer that changes between the check and the connection (rebinding)
  is not caught, and HTTP-based plugins follow redirects as ``requests`` does. The check
  keeps honest mistakes and plain internal targets out; it does not make an Apprise channel
  as tight as a webhook, which is why only admins create them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import apprise
from apprise import AppriseAsset, NotifyFormat, PersistentStoreMode

from tagwatch.alerts.human_message import Message
from tagwatch.alerts.webhook_destination import (
    AllowList,
    DestinationRefused,
    DestinationUnresolved,
    Resolver,
    resolve_destination,
    system_resolver,
    url_problem,
)

DEVELOPMENT: Final = "development"
# Plugins that notify this machine, not a person.
LOCAL_SCHEMES: Final = frozenset(
    {"dbus", "kde", "qt", "glib", "gio", "gnome", "macosx", "windows", "syslog", "blink1"}
)
MAX_ERROR_CHARS: Final = 500


class ChannelRefused(ValueError):
    """The URL may not be a channel (unknown, local, or an internal host)."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """An Apprise URL as the platform judges it."""

    scheme: str
    shown: str  # Apprise's privacy form: passwords and tokens masked
    host: str | None  # the host Apprise connects to, when the URL names one
    port: int | None
    secure: bool  # TLS, or a scheme without a plain variant


def _asset() -> AppriseAsset:
    # no persistent store on disk: the dispatcher writes nothing beside its database
    return AppriseAsset(storage_mode=PersistentStoreMode.MEMORY)


def parse(url: str) -> Parsed:
    """What the URL is; ``ChannelRefused`` when Apprise does not understand it or it is local."""
    plugin: Any = apprise.Apprise.instantiate(url, asset=_asset(), suppress_exceptions=True)
    if plugin is None:
        msg = "not an Apprise URL this server understands (https://github.com/caronc/apprise/wiki)"
        raise ChannelRefused(msg)
    scheme = url.split("://", 1)[0].lower()
    if scheme in LOCAL_SCHEMES:
        msg = f"{scheme}:// notifies this server itself, not a person"
        raise ChannelRefused(msg)
    host: str | None = None
    if "host" in getattr(plugin, "template_tokens", {}):
        host = getattr(plugin, "smtp_host", None) or getattr(plugin, "host", None) or None
    port = getattr(plugin, "port", None)
    plain_variant = bool(getattr(plugin, "secure_protocol", None)) and not getattr(
        plugin, "secure", True
    )
    return Parsed(scheme, str(plugin.url(privacy=True)), host, port, not plain_variant)


def _probe_url(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"https://{shown}:{port}/" if port else f"https://{shown}/"


def channel_problem(url: str, environment: str, allow: AllowList) -> str | None:
    """What is wrong with ``url`` as a channel, as far as it shows without DNS; None when it may
    be saved (every send checks the host again, resolved)."""
    try:
        parsed = parse(url)
    except ChannelRefused as exc:
        return str(exc)
    if parsed.host is None:
        return None
    problem = url_problem(_probe_url(parsed.host, parsed.port), environment, allow)
    if problem is not None:
        return problem.replace("webhook host", "channel host")
    if not parsed.secure and environment != DEVELOPMENT and not allow.names_host(parsed.host):
        return (
            f"{parsed.scheme}:// sends in clear: use its TLS variant outside development"
            f" (this is {environment}), unless TAGWATCH_WEBHOOK_ALLOW_HOSTS names the host"
        )
    return None


@dataclass(frozen=True, slots=True)
class Sent:
    ok: bool
    duration_ms: float
    error: str | None = None
    permanent: bool = False


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def send(
    url: str,
    message: Message,
    environment: str,
    allow: AllowList,
    resolver: Resolver = system_resolver,
) -> Sent:
    """One notification through Apprise, after checking the URL and its host's addresses."""
    started = time.perf_counter()

    def took() -> float:
        return (time.perf_counter() - started) * 1000.0

    problem = channel_problem(url, environment, allow)
    if problem is not None:
        return Sent(False, took(), _short(f"destination refused: {problem}"), permanent=True)
    parsed = parse(url)
    if parsed.host is not None:
        try:
            resolve_destination(_probe_url(parsed.host, parsed.port), environment, allow, resolver)
        except DestinationRefused as exc:
            return Sent(False, took(), _short(f"destination refused: {exc}"), permanent=True)
        except DestinationUnresolved as exc:
            return Sent(False, took(), _short(str(exc)))
    notifier = apprise.Apprise(asset=_asset())
    if not notifier.add(url):
        return Sent(False, took(), "Apprise refused the URL", permanent=True)
    with apprise.LogCapture(level=logging.WARNING) as logs:  # type: ignore[no-untyped-call]
        ok = notifier.notify(body=message.body, title=message.title, body_format=NotifyFormat.TEXT)
        captured = logs.getvalue() if hasattr(logs, "getvalue") else ""
    if ok:
        return Sent(True, took())
    return Sent(False, took(), _short(captured or "Apprise reported a failure"))


__all__ = ["ChannelRefused", "Parsed", "Sent", "channel_problem", "parse", "send"]
