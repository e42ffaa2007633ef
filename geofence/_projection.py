"""Metres on the ground without a pyproj call on the hot path.

Every polygon zone lives in its own local frame: an azimuthal-equidistant projection centred on the
zone, computed in closed form through Earth-centred (ECEF) coordinates so that a whole batch of
fixes is projected with a handful of NumPy operations:

1. geodetic -> ECEF on the WGS84 ellipsoid (exact);
2. ECEF difference -> east/north/up at the frame centre (an exact rotation);
3. the 3-D chord length ``c`` becomes the distance along the normal section through the centre,
   ``s = 2 R asin(c / 2R)`` with ``R`` the Gaussian mean radius of curvature at the centre, and the
   point is placed at distance ``s`` in the direction ``atan2(east, north)``.

Step 3 is the azimuthal-equidistant rule: distances and directions from the centre are true. The
distance from the centre is within a few millimetres of the geodesic up to 100 km (the curvature
radius varies by about 0.7 % with azimuth, and it only enters the ``c**3 / 24 R**2`` term). Between
two arbitrary points of the frame the projection stretches lengths across the radial direction by
``(rho / R)**2 / 6`` at ``rho`` metres from the centre, which is the bound docs/geofence.md quotes
and tests/geofence/test_projection.py measures against ``pyproj.Geod``: at most 0.30 m for a 10 km
distance anywhere within 85 km of the centre, at any latitude up to the poles and across the
antimeridian (ECEF has no seam).

Circles need no frame at all: the distance from a fix to a circle's centre is the chord rule above,
exact to millimetres, so circle tests are geodesic.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)

# Columns of a frame parameter row, see frame_params().
FRAME_X, FRAME_Y, FRAME_Z, FRAME_SIN_LON, FRAME_COS_LON, FRAME_SIN_LAT, FRAME_COS_LAT = range(7)
FRAME_HALF_INV_R = 7
FRAME_WIDTH = 8


def ecef(
    lon_deg: npt.ArrayLike, lat_deg: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Earth-centred coordinates of points on the ellipsoid (height 0): fixes carry no usable
    altitude, and zones are drawn on the ground."""
    lam = np.radians(np.asarray(lon_deg, dtype=np.float64))
    phi = np.radians(np.asarray(lat_deg, dtype=np.float64))
    sin_phi = np.sin(phi)
    cos_phi = np.cos(phi)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_phi * sin_phi)
    horizontal = n * cos_phi
    return horizontal * np.cos(lam), horizontal * np.sin(lam), n * (1.0 - WGS84_E2) * sin_phi


def mean_radius(lat_deg: npt.ArrayLike) -> FloatArray:
    """Gaussian mean radius of curvature sqrt(M N) at a latitude."""
    sin_phi = np.sin(np.radians(np.asarray(lat_deg, dtype=np.float64)))
    w2 = 1.0 - WGS84_E2 * sin_phi * sin_phi
    return np.asarray(WGS84_A * np.sqrt(1.0 - WGS84_E2) / w2, dtype=np.float64)


def frame_params(lon0_deg: npt.ArrayLike, lat0_deg: npt.ArrayLike) -> FloatArray:
    """One row of FRAME_WIDTH numbers per frame centre, everything the projection needs."""
    lon0 = np.atleast_1d(np.asarray(lon0_deg, dtype=np.float64))
    lat0 = np.atleast_1d(np.asarray(lat0_deg, dtype=np.float64))
    x, y, z = ecef(lon0, lat0)
    lam = np.radians(lon0)
    phi = np.radians(lat0)
    out = np.empty((lon0.size, FRAME_WIDTH), dtype=np.float64)
    out[:, FRAME_X] = x
    out[:, FRAME_Y] = y
    out[:, FRAME_Z] = z
    out[:, FRAME_SIN_LON] = np.sin(lam)
    out[:, FRAME_COS_LON] = np.cos(lam)
    out[:, FRAME_SIN_LAT] = np.sin(phi)
    out[:, FRAME_COS_LAT] = np.cos(phi)
    out[:, FRAME_HALF_INV_R] = 0.5 / mean_radius(lat0)
    return out


def arc_from_chord(chord: FloatArray, half_inv_r: FloatArray | float) -> FloatArray:
    """Length along the surface for a straight chord: 2R asin(c / 2R)."""
    ratio = np.minimum(chord * half_inv_r, 1.0)
    return np.asarray(np.arcsin(ratio) / half_inv_r, dtype=np.float64)


def chord_distance(
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    x0: FloatArray,
    y0: FloatArray,
    z0: FloatArray,
    half_inv_r: FloatArray | float,
) -> FloatArray:
    """Distance on the ground between two ECEF points; the radius is taken at the second."""
    dx = x - x0
    dy = y - y0
    dz = z - z0
    chord = np.sqrt(dx * dx + dy * dy + dz * dz)
    return arc_from_chord(chord, half_inv_r)


def to_frame(
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    params: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Project ECEF points into frames, element-wise: ``params`` has one frame row per point (or a
    single row for all of them)."""
    p = np.atleast_2d(params)
    dx = x - p[:, FRAME_X]
    dy = y - p[:, FRAME_Y]
    dz = z - p[:, FRAME_Z]
    sin_lon = p[:, FRAME_SIN_LON]
    cos_lon = p[:, FRAME_COS_LON]
    east = cos_lon * dy - sin_lon * dx
    radial = cos_lon * dx + sin_lon * dy
    north = p[:, FRAME_COS_LAT] * dz - p[:, FRAME_SIN_LAT] * radial
    chord2 = dx * dx + dy * dy + dz * dz
    horizontal2 = east * east + north * north
    arc = arc_from_chord(np.sqrt(chord2), p[:, FRAME_HALF_INV_R])
    scale = np.divide(arc, np.sqrt(horizontal2), out=np.ones_like(arc), where=horizontal2 > 0.0)
    return east * scale, north * scale


def lonlat_to_frame(
    lon_deg: npt.ArrayLike, lat_deg: npt.ArrayLike, params: FloatArray
) -> tuple[FloatArray, FloatArray]:
    x, y, z = ecef(lon_deg, lat_deg)
    return to_frame(x, y, z, params)


def frame_to_lonlat(
    fx: npt.ArrayLike, fy: npt.ArrayLike, params: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Inverse of to_frame, by Newton steps on the forward map; used when building reach boxes
    and in tests, never per fix."""
    ex = np.asarray(fx, dtype=np.float64)
    ey = np.asarray(fy, dtype=np.float64)
    p = np.atleast_2d(params)
    lat0 = np.degrees(np.arctan2(p[:, FRAME_SIN_LAT], p[:, FRAME_COS_LAT]))
    lon0 = np.degrees(np.arctan2(p[:, FRAME_SIN_LON], p[:, FRAME_COS_LON]))
    radius = mean_radius(lat0)
    cos_lat0 = np.maximum(np.cos(np.radians(lat0)), 1e-9)
    lat = lat0 + np.degrees(ey / radius)
    lon = lon0 + np.degrees(ex / (radius * cos_lat0))
    for _ in range(8):
        gx, gy = lonlat_to_frame(lon, lat, p)
        step = 1e-6
        gx_lon, gy_lon = lonlat_to_frame(lon + step, lat, p)
        gx_lat, gy_lat = lonlat_to_frame(lon, lat + step, p)
        a = (gx_lon - gx) / step
        b = (gx_lat - gx) / step
        c = (gy_lon - gy) / step
        d = (gy_lat - gy) / step
        det = a * d - b * c
        rx = ex - gx
        ry = ey - gy
        lon = lon + (d * rx - b * ry) / det
        lat = lat + (a * ry - c * rx) / det
    return (lon + 180.0) % 360.0 - 180.0, lat
