"""The alert vocabulary of DESIGN.md: types, their severities, and which device events drive them.

Severities are what a monitoring centre triages by: `critical` means someone may be at risk now
(a subject inside a victim's zone, a cut strap, an absconder); `warning` needs a look this shift;
`info` is housekeeping the device will usually sort out itself.
"""

from __future__ import annotations

from typing import Final

EXCLUSION_ENTRY: Final = "exclusion_zone_entry"
EXCLUSION_WARNING: Final = "exclusion_zone_warning"
INCLUSION_EXIT: Final = "inclusion_zone_exit"
CURFEW_VIOLATION: Final = "curfew_violation"
VICTIM_PROXIMITY: Final = "victim_proximity"
VICTIM_WARNING: Final = "victim_proximity_warning"
STRAP_TAMPER: Final = "strap_tamper"
CASE_TAMPER: Final = "case_tamper"
BATTERY_LOW: Final = "battery_low"
BATTERY_CRITICAL: Final = "battery_critical"
GPS_LOST: Final = "gps_lost"
NO_COMMUNICATION: Final = "no_communication"
GPS_JAMMING: Final = "gps_jamming"
ABSCONDER: Final = "absconder"
# Victim protection (issue 15): the victim's own alarm, and a victim phone that no longer moves
# the victim zone (docs/alerts.md "Victim protection").
VICTIM_PANIC: Final = "victim_panic"
VICTIM_DEGRADED: Final = "victim_protection_degraded"
# Phones (issue 15): the app was told to stop reporting (OwnTracks monitoring quiet or manual),
# or went silent while its last report said it was online in move mode; and a phone whose
# fixes carry no accuracy, so that no zone can ever be judged for it.
PHONE_MONITORING_DEGRADED: Final = "phone_monitoring_degraded"
POSITION_ACCURACY_UNKNOWN: Final = "position_accuracy_unknown"

SEVERITY: Final[dict[str, str]] = {
    EXCLUSION_ENTRY: "critical",
    EXCLUSION_WARNING: "warning",
    INCLUSION_EXIT: "warning",
    CURFEW_VIOLATION: "warning",
    VICTIM_PROXIMITY: "critical",
    VICTIM_WARNING: "warning",
    STRAP_TAMPER: "critical",
    CASE_TAMPER: "warning",
    BATTERY_LOW: "info",
    BATTERY_CRITICAL: "warning",
    GPS_LOST: "warning",
    NO_COMMUNICATION: "warning",
    GPS_JAMMING: "warning",
    ABSCONDER: "critical",
    # a victim asking for help: someone may be at risk now
    VICTIM_PANIC: "critical",
    # protection is off, nobody is known to be at risk: a call to the victim this shift
    VICTIM_DEGRADED: "warning",
    PHONE_MONITORING_DEGRADED: "warning",
    POSITION_ACCURACY_UNKNOWN: "warning",
}
ALERT_TYPES: Final = frozenset(SEVERITY)
SEVERITY_RANK: Final[dict[str, int]] = {"info": 0, "warning": 1, "critical": 2}

# Alerts whose condition is about the body or the device's integrity: they cannot be resolved
# without a note saying what was found.
NOTE_REQUIRED: Final = frozenset({STRAP_TAMPER, CASE_TAMPER, ABSCONDER, VICTIM_PANIC})

# Alerts during which the subject's devices report every 15 s ("pursuit", NIJ 1004.00 active
# tracking) until they clear or a limit passes (store/commands.py, docs/alerts.md "Pursuit").
PURSUIT_TYPES: Final = frozenset(
    {EXCLUSION_ENTRY, VICTIM_PROXIMITY, STRAP_TAMPER, ABSCONDER, VICTIM_PANIC}
)

# Alerts whose opening is told to the victim's own devices (store/commands.py
# `notify_victim`, the texts in alerts/victim_protection.py).
VICTIM_NOTICE_TYPES: Final = frozenset({VICTIM_WARNING, VICTIM_PROXIMITY, VICTIM_PANIC})

# Alerts that escalate to absconder when left unresolved (see Thresholds.absconder_after_s).
ESCALATING: Final = frozenset({STRAP_TAMPER, NO_COMMUNICATION, INCLUSION_EXIT})

OUTCOMES: Final = frozenset(
    {"confirmed", "false_alarm", "equipment_fault", "authorised_absence", "traced", "other"}
)

# Device events that open an episode, and the events that end it.
EVENT_OPENS: Final[dict[str, str]] = {
    "strap_tamper": STRAP_TAMPER,
    "case_tamper": CASE_TAMPER,
    "battery_low": BATTERY_LOW,
    "battery_critical": BATTERY_CRITICAL,
    "jamming_detected": GPS_JAMMING,
}
EVENT_CLEARS: Final[dict[str, tuple[str, ...]]] = {
    "strap_restored": (STRAP_TAMPER,),
    "charging_started": (BATTERY_LOW, BATTERY_CRITICAL),
    "jamming_cleared": (GPS_JAMMING,),
    "gps_restored": (GPS_LOST,),
}
# Every device event type the contract allows, the one list: the decoder (ingest/decode.py)
# imports it and dead-letters any other type. This module is pure (no imports), so any layer may.
EVENT_TYPES: Final = frozenset(
    {
        "strap_tamper",
        "strap_restored",
        "case_tamper",
        "battery_low",
        "battery_critical",
        "charging_started",
        "charging_stopped",
        "gps_lost",
        "gps_restored",
        "jamming_detected",
        "jamming_cleared",
        "beacon_home_enter",
        "beacon_home_leave",
        "power_off",
        "heartbeat",
        # a victim's (or a wearer's) alarm button: a victim_panic alert when the device is a
        # victim's, stored and nothing more otherwise (docs/contract-extensions.md)
        "panic",
    }
)
