"""``commine streams`` through click's runner on the embedded store, and ``commine status``'s backlog."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from streams_helpers import World, make_world, refund

from commine.bootstrap import open_store
from commine.scripts.cli import cli
from commine.settings import Settings

DS = "acme/support"


@pytest.fixture
def env(embedded_settings: Settings) -> Iterator[dict[str, str]]:
    store = open_store(embedded_settings)
    world: World = make_world(store)
    version = world.train({"validation": {"labels": [{"name": "Billing > Refund", "presets": {"balanced": 0.5}}]}})
    world.ingest([f"m{i}" for i in range(6)])
    world.predict(version, {f"m{i}": refund(0.9 if i % 2 else 0.3) for i in range(6)})
    store.engine.dispose()
    yield {"COMMINE_EMBEDDED": "1", "COMMINE_HOME": str(embedded_settings.home), "COMMINE_TRANSFORMER": "0"}


def run(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(cli, list(args), env={**env, "COMMINE_DATABASE_URL": ""}, catch_exceptions=False)
    return result


def test_the_streams_commands_create_fetch_advance_change_and_delete(env: dict[str, str], tmp_path: Path) -> None:
    added = run(env, "streams", "add", DS, "refunds", "--threshold", "Billing > Refund=0.5")
    assert added.exit_code == 0, added.output
    assert "model version 1" in added.output
    assert "refunds" in run(env, "streams", "list", DS).output

    fetched = json.loads(run(env, "streams", "fetch", DS, "refunds", "--size", "2").output)
    assert [r["comment"]["id"] for r in fetched["results"]] == ["m1", "m3"]
    assert run(env, "streams", "advance", DS, "refunds", fetched["sequence_id"]).exit_code == 0
    after = json.loads(run(env, "streams", "fetch", DS, "refunds").output)
    assert [r["comment"]["id"] for r in after["results"]] == ["m5"]

    preview = run(env, "streams", "threshold", DS, "refunds", "Billing > Refund=0.2", "--preview")
    assert "1 would enter, 0 would leave; backlog 1 -> 2" in preview.output  # m4; m0 and m2 were passed
    assert run(env, "streams", "threshold", DS, "refunds", "Billing > Refund=0.2").exit_code == 0
    status = json.loads(run(env, "status", "--json").output)
    assert status["projects"][0]["datasets"][0]["streams"][0]["backlog"] == 2

    shown = json.loads(run(env, "streams", "show", DS, "refunds").output)
    assert shown["suggested_thresholds"] == {"Billing > Refund": {"balanced": 0.5}}
    assert shown["model"]["label_thresholds"] == [{"name": ["Billing", "Refund"], "threshold": 0.2}]

    reset = run(env, "streams", "reset", DS, "refunds", "2000-01-01T00:00:00Z")
    assert "backlog 6" in reset.output
    bad = run(env, "streams", "advance", DS, "refunds", "nonsense")
    assert bad.exit_code != 0 and "sequence_id" in bad.output
    assert run(env, "streams", "delete", DS, "refunds", "--yes").exit_code == 0
    assert "no streams yet" in run(env, "streams", "list", DS).output
