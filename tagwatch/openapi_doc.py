"""The committed OpenAPI document (`docs/openapi.json`): written by `tagwatch openapi --write`,
checked by a test, so that a change to the API's contract is always a visible diff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def current() -> dict[str, Any]:
    """The document the app serves, independent of any database (the app is not started)."""
    from tagwatch.api.app import create_app  # noqa: PLC0415
    from tagwatch.settings import Settings  # noqa: PLC0415

    settings = Settings(
        database_url="postgresql://unused@localhost/unused",
        secret_key="openapi-document-only-" + "x" * 32,
        environment="test",
    )
    return create_app(settings).openapi()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(path: Path = DOC) -> Path:
    path.write_text(render(current()))
    return path


def drift(path: Path = DOC) -> str | None:
    """None when the committed document matches the app; else what differs, briefly."""
    if not path.exists():
        return f"{path} is missing: run `tagwatch openapi --write`"
    committed = json.loads(path.read_text())
    now = current()
    if committed == now:
        return None
    old_paths, new_paths = set(committed.get("paths", {})), set(now.get("paths", {}))
    changed = sorted(p for p in old_paths & new_paths if committed["paths"][p] != now["paths"][p])
    return (
        "docs/openapi.json is out of date (run `tagwatch openapi --write` and commit it):"
        f" added {sorted(new_paths - old_paths)}, removed {sorted(old_paths - new_paths)},"
        f" changed {changed[:10]}"
        + ("" if committed.get("components") == now.get("components") else ", schemas changed")
    )
