"""One-shot (deploy/compose.yaml `pki`): the site's private CA and the certificates issued from
it, in the `pki` volume, each key readable only by the user of the container that needs it.

Run as root once per site; later runs issue only what is missing (tagwatch.pki), so devices keep
the CA they pinned. The CA's key is moved out of the shared volume into `pki-ca`, which only this
service mounts. Broker names: BROKER_NAMES (comma-separated, the public name devices
dial first), plus the names the platform's containers use inside the site.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tagwatch.pki import Pki

SHARED = Path("/pki")  # mounted read-only by EMQX, TimescaleDB and the tagwatch services
CA_VAULT = Path("/pki-ca")  # only this one-shot mounts it
SERVICES = ["tagwatch-ingest", "tagwatch-dispatcher", "tagwatch-api"]
# the images' users: emqx/emqx runs as 1000, timescale/timescaledb (Alpine) postgres as 70,
# the tagwatch image (deploy/Dockerfile) as 10001
EMQX_UID, POSTGRES_UID, TAGWATCH_UID = 1000, 70, 10001


def main() -> None:
    pki = Pki(SHARED)
    vaulted = CA_VAULT / "ca.key"
    if vaulted.exists():
        shutil.copy2(vaulted, pki.ca_key)
    public = [n.strip() for n in os.environ.get("BROKER_NAMES", "").split(",")]
    broker_names = [n for n in public if n] + ["emqx", "emqx1.tagwatch", "emqx2.tagwatch"]
    pki.ensure(broker_names, SERVICES)
    pki.ensure_server("db", ["timescaledb"])
    shutil.move(pki.ca_key, vaulted)
    vaulted.chmod(0o600)
    SHARED.chmod(0o755)
    for cert in SHARED.glob("*.crt"):
        cert.chmod(0o644)
    owners = {"server": EMQX_UID, "db": POSTGRES_UID, **dict.fromkeys(SERVICES, TAGWATCH_UID)}
    for name, uid in owners.items():
        key = pki.identity(name).key
        os.chown(key, uid, uid)
        key.chmod(0o600)
    print(f"pki ready in {SHARED}: {', '.join(sorted(p.name for p in SHARED.iterdir()))}")


if __name__ == "__main__":
    main()
