-- Geography (issue 16): a region's boundary, offices with a service area, tracing units, and
-- subscriptions that target a tracing unit; an alert remembers where it was routed and why.
--
-- Geometries are GeoJSON (lon, lat) as drawn, checked by the geofence core before they are
-- written (geofence/places.py, zones.check_area); the database holds no PostGIS and computes
-- nothing from them: routing runs in Python, in the alert's transaction (store/places.py).

ALTER TABLE regions ADD COLUMN boundary jsonb
    CHECK (boundary IS NULL OR boundary->>'type' IN ('Polygon', 'MultiPolygon'));

CREATE TABLE offices (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    region_id         text NOT NULL REFERENCES regions (id),
    lon               double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    lat               double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    service_area      jsonb CHECK (service_area IS NULL
                                   OR service_area->>'type' IN ('Polygon', 'MultiPolygon')),
    service_radius_m  double precision CHECK (service_radius_m > 0),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT offices_one_service_area CHECK ((service_area IS NULL) <> (service_radius_m IS NULL)),
    UNIQUE (id, region_id)
);
CREATE INDEX offices_region ON offices (region_id);

-- A tracing unit works from one office, in that office's region (the composite key keeps them
-- together: moving an office to another region is refused while units are attached).
CREATE TABLE tracing_units (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    office_id   bigint NOT NULL,
    region_id   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (office_id, region_id) REFERENCES offices (id, region_id)
);
CREATE INDEX tracing_units_office ON tracing_units (office_id);

-- A subscription may target a tracing unit: it then also receives the critical alerts routed to
-- that unit, whatever the subject's region. Deleting a unit is refused while an active
-- subscription targets it (the API says so); an inactive one lets go of it.
ALTER TABLE webhook_subscriptions
    ADD COLUMN tracing_unit_id bigint REFERENCES tracing_units (id) ON DELETE SET NULL;
CREATE INDEX webhook_subscriptions_unit ON webhook_subscriptions (tracing_unit_id)
    WHERE tracing_unit_id IS NOT NULL;

-- Where a critical alert was routed (office, distance, reason, the units notified), decided once
-- in the alert's transaction and kept as evidence; later events of the alert go the same way.
ALTER TABLE alerts ADD COLUMN routing jsonb;
