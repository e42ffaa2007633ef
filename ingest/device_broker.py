"""What a device needs to reach the broker: the devices' listener address and the CA to pin.

Shown once with a new device's password (API and `tagwatch device add`), so an installer can
configure a tag or an OwnTracks app without reading the server's settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tagwatch.settings import MqttEndpoint, Settings


@dataclass(frozen=True)
class DeviceBroker:
    host: str
    port: int
    tls: bool
    ca_file: str | None
    ca_pem: str | None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def device_broker(settings: Settings) -> DeviceBroker:
    endpoint = MqttEndpoint.parse(settings.mqtt_device_url)
    ca_pem = None
    if endpoint.ca_file and Path(endpoint.ca_file).is_file():
        ca_pem = Path(endpoint.ca_file).read_text()
    return DeviceBroker(endpoint.host, endpoint.port, endpoint.tls, endpoint.ca_file, ca_pem)
