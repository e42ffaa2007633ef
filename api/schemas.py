"""Request and response bodies: `XCreate` in, `XPublic` out, validated at the edge."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from tagwatch.ingest.broker_accounts import reserved_device_id

DEVICE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
HOME_BEACON_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"  # as migration 0019 checks it
OWNTRACKS_TOPIC = re.compile(r"^owntracks/[^/+#\s]{1,64}/[^/+#\s]{1,64}$")
REGION_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class RegionCreate(BaseModel):
    id: str = Field(pattern=REGION_PATTERN)
    name: str = Field(min_length=1, max_length=200)


class RegionPublic(RegionCreate):
    pass


class SubjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    region_id: str = Field(pattern=REGION_PATTERN)
    timezone: str = "UTC"
    case_ref: str | None = Field(default=None, max_length=100)
    groups: list[str] = Field(default_factory=list, max_length=50)
    victim: bool = Field(
        default=False,
        description="a victim (protected person): readable by supervisors and admins only; "
        "also set by assigning a device as victim or by a zone protecting the subject",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = f"unknown IANA time zone {value!r}"
            raise ValueError(msg) from exc
        if value not in available_timezones() and value != "UTC":
            msg = f"unknown IANA time zone {value!r}"
            raise ValueError(msg)
        return value


class SubjectUpdate(BaseModel):
    """Fields a supervisor may change; a region change is recorded in the subject's history."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    region_id: str | None = Field(default=None, pattern=REGION_PATTERN)
    timezone: str | None = None
    groups: list[str] | None = Field(default=None, max_length=50)
    victim: bool | None = Field(
        default=None,
        description="false clears a mistaken mark, unless a victim device or a protecting zone "
        "links the subject as a victim (then it stays true)",
    )
    home_beacon: str | None = Field(
        default=None,
        pattern=HOME_BEACON_PATTERN,
        description="approve this beacon (the unit's serial or advertised id) as the subject's "
        "home beacon: only beacon_home_enter events naming it (detail.beacon) count as presence "
        "at home; null clears the approval. Recorded with who approved it and when, audited.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            msg = f"unknown IANA time zone {value!r}"
            raise ValueError(msg) from exc
        return value


class RegionStay(BaseModel):
    region_id: str
    from_: datetime | None = Field(serialization_alias="from")
    to: datetime | None
    changed_by: str | None


class HomeBeaconPublic(BaseModel):
    """The approved home beacon: who vouched for the pairing and when is part of the evidence."""

    id: str
    approved_by: str
    approved_at: datetime


class SubjectPublic(BaseModel):
    id: int
    name: str
    case_ref: str | None
    region_id: str
    timezone: str
    groups: list[str]
    created_at: datetime
    victim: bool = Field(default=False, description="a victim: see SubjectCreate.victim")
    home_beacon: HomeBeaconPublic | None = Field(
        default=None, description="the approved home beacon, if any (SubjectUpdate.home_beacon)"
    )


DeviceKind = Literal["tag", "phone", "victim_phone"]


class DeviceCreate(BaseModel):
    id: str = Field(pattern=DEVICE_ID_PATTERN, description="device_id; the tag's MQTT username")
    kind: DeviceKind = "tag"
    owntracks_topic: str | None = Field(
        default=None, description="phones only: the OwnTracks topic owntracks/{user}/{device}"
    )
    expected_interval_s: int = Field(default=60, ge=1, le=86400)
    osmand: bool = Field(
        default=False,
        description="phones only: the phone runs Traccar Client (OsmAnd protocol over HTTP); it"
        " has no OwnTracks topic and no broker account, and gets a URL token instead",
    )

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        reason = reserved_device_id(value)
        if reason:
            raise ValueError(reason)
        return value

    @model_validator(mode="after")
    def _topic_fits_kind(self) -> DeviceCreate:
        if self.kind == "tag" and self.owntracks_topic is not None:
            msg = "a tag publishes on em/v1/{device_id}/...; owntracks_topic is for phones"
            raise ValueError(msg)
        if self.osmand:
            if self.kind == "tag" or self.owntracks_topic is not None:
                msg = "osmand is for phones running Traccar Client, which have no OwnTracks topic"
                raise ValueError(msg)
            return self
        if self.kind != "tag":
            if self.owntracks_topic is None:
                msg = "a phone needs the OwnTracks topic it publishes on"
                raise ValueError(msg)
            if not OWNTRACKS_TOPIC.match(self.owntracks_topic):
                msg = "owntracks_topic must look like owntracks/{user}/{device}"
                raise ValueError(msg)
        return self


class DevicePublic(BaseModel):
    id: str
    kind: DeviceKind
    owntracks_topic: str | None
    expected_interval_s: int
    created_at: datetime
    osmand: bool = False


class DeviceCredentials(DevicePublic):
    mqtt_username: str | None = Field(description="null for an OsmAnd phone (no broker account)")
    mqtt_password: str | None = Field(
        description="shown once, at creation; store it in the device. Also the password of an"
        " OwnTracks phone in HTTP mode. Null for an OsmAnd phone"
    )
    mqtt_client_id: str | None = Field(
        description="the only client id the broker accepts for this account (= the device id)"
    )
    owntracks_http_url: str | None = Field(
        default=None,
        description="OwnTracks phones: the URL of HTTP mode (HTTP Basic: the device id and"
        " mqtt_password)",
    )
    osmand_url: str | None = Field(
        default=None,
        description="OsmAnd phones: the Traccar Client server URL, with the device's token in its"
        " path (shown once); the client's device identifier is the device id",
    )
    broker_url: str = Field(description="where the device connects: mqtts://host:port (TLS)")
    ca_pem: str | None = Field(
        default=None, description="the private CA certificate (PEM) the device must pin"
    )
    publish_topics: list[str]
    encryption_key: str | None = Field(
        default=None,
        description="phones: the OwnTracks payload encryption key (app setting `encryptionKey`),"
        " shown once; null for tags, or when the platform has no TAGWATCH_WEBHOOK_SECRET_KEY"
        " to keep it sealed",
    )


class AssignmentCreate(BaseModel):
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    role: Literal["offender", "victim"] = "offender"
    from_: AwareDatetime = Field(alias="from")
    to: AwareDatetime | None = None

    model_config = {"populate_by_name": True}

    @model_validator(mode="after")
    def _ordered(self) -> AssignmentCreate:
        if self.to is not None and self.to <= self.from_:
            msg = "'to' must be after 'from'"
            raise ValueError(msg)
        return self


class AssignmentEnd(BaseModel):
    """Ending an assignment: the device leaves the subject at ``to`` (now when left out)."""

    to: AwareDatetime | None = None


class AssignmentPublic(BaseModel):
    id: int
    subject_id: int
    device_id: str
    role: str
    from_: datetime = Field(serialization_alias="from")
    to: datetime | None


class Position(BaseModel):
    subject_id: int
    device_id: str
    ts: datetime
    lat: float
    lon: float
    acc: float | None
    spd: float | None
    hdg: float | None
    batt: float | None
    src: str
    seq: int | None
    received_at: datetime = Field(description="when ingest stored the fix")
    late: bool = Field(
        default=False,
        description="received more than 300 s after its own time (a tag's buffered upload)",
    )


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
