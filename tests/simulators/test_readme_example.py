"""The scenario example in the README is a real scenario: it validates, and the rules raise
exactly what it expects (so the README cannot drift from the format)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tagwatch.simulators.offline_scoring import replay
from tagwatch.simulators.scenario import build_timeline, parse_scenario
from tagwatch.simulators.scoring import score_run

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_scenario_example_validates_and_scores() -> None:
    text = README.read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    assert blocks, "the README shows how to write a scenario"
    scenario = parse_scenario(tomllib.loads(blocks[0]), "README.md")
    run = build_timeline(scenario, "readme")
    ids = {str(i + 1): s.key for i, s in enumerate(run.plan.subjects)}
    card = score_run(run, replay(run), subject_ids=ids)
    assert card.passed, (card.missed, card.false, card.slow)
    assert len(card.matched) == 1
