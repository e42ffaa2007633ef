"""The noise models a scenario can be played under, by name (`--noise gaussian|heavy`).

A registry rather than an import in the device model, so the device model, the timeline, the
benchmarks and the CLI all name a model the same way and a third model is one line here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tagwatch.simulators.noise import PHONE_NOISE, TAG_NOISE, GpsReceiver, NoiseProfile, Receiver
from tagwatch.simulators.noise_heavy import HEAVY_PHONE, HEAVY_TAG, HeavyTailReceiver

ReceiverFactory = Callable[[bool, NoiseProfile | None, random.Random], Receiver]
"""(is the device a tag, the device's own Gaussian profile if any, its seeded rng) → receiver."""


def _gaussian(is_tag: bool, profile: NoiseProfile | None, rng: random.Random) -> Receiver:
    return GpsReceiver(profile or (TAG_NOISE if is_tag else PHONE_NOISE), rng)


def _heavy(is_tag: bool, profile: NoiseProfile | None, rng: random.Random) -> Receiver:
    # A device's own NoiseProfile tunes the Gaussian model; the heavy model keeps its profiles.
    del profile
    return HeavyTailReceiver(HEAVY_TAG if is_tag else HEAVY_PHONE, rng)


NOISE_MODELS: dict[str, ReceiverFactory] = {"gaussian": _gaussian, "heavy": _heavy}
"""Every noise model by name; "gaussian" (noise.py) is the default everywhere."""

DEFAULT_NOISE_MODEL = "gaussian"


def make_receiver(
    model: str, is_tag: bool, profile: NoiseProfile | None, rng: random.Random
) -> Receiver:
    """A receiver of the named model; ValueError names the known ones for an unknown name."""
    try:
        factory = NOISE_MODELS[model]
    except KeyError:
        raise ValueError(
            f"unknown noise model {model!r}; known: {', '.join(NOISE_MODELS)}"
        ) from None
    return factory(is_tag, profile, rng)
