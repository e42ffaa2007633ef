"""Wheel build hook: the console's Leaflet goes into the wheel, and only into the wheel.

A static ``force-include`` of ``node_modules/leaflet/dist`` also applies to editable installs,
and ``scripts/setup.sh`` installs the Python package before ``npm ci`` (on a fresh clone there is
no ``node_modules`` yet), so the editable install failed. An editable install serves Leaflet from
``node_modules`` directly; a real wheel must carry it, and building one without ``npm ci`` first
is an error rather than a console without a map.
"""

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

LEAFLET_SOURCE = Path("node_modules") / "leaflet" / "dist"
LEAFLET_TARGET = "tagwatch/api/console/vendor/leaflet"


class LeafletHook(BuildHookInterface):  # type: ignore[type-arg]
    """Adds Leaflet's dist folder to a standard wheel; leaves editable builds alone."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        source = Path(self.root) / LEAFLET_SOURCE
        if not source.is_dir():
            raise RuntimeError(
                f"{source} is missing: run `npm ci` before building a wheel "
                "(the console's map ships inside the package)"
            )
        build_data["force_include"][str(source)] = LEAFLET_TARGET
