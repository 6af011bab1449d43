"""``commine bench quality`` and ``commine bench train`` on a tiny slice of BANKING77: the summary is there.

The full-size runs and their figures are in BENCHMARKS.md; these only check that each command runs
end to end and ends with its one-line JSON summary.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import DATA, PG_SERVER, require_services

from commine.scripts.cli import cli

needs_banking77 = pytest.mark.skipif(
    not (DATA / "train.csv").exists(), reason=f"BANKING77 is not at {DATA} (../shared/data/banking77)"
)


def _summary(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``commine ARGS`` and return its last line, which must be a JSON object."""
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.slow
@needs_banking77
def test_bench_quality_ends_with_its_summary() -> None:
    tiny = ["--limit", "300", "--seeds", "2", "--shots", "3", "--start-per-label", "2", "--rounds", "1"]
    summary = _summary(["bench", "quality", "--encoders", "wordllama", *tiny, "--round-size", "20"])
    assert summary["benchmark"] == "quality"
    assert {"full", "few_shot", "active", "targets", "met", "machine"} <= summary.keys()
    assert {"accuracy", "macro_f1", "map", "train_seconds"} <= summary["full"].keys()
    assert len(summary["few_shot"]["runs"]) == 2
    curves = summary["active"]["curves"]
    assert set(curves) == {"shuffle", "low-confidence", "teach", "uncertain"}
    for curve in curves.values():
        assert len(curve["accuracy"]) == 2 and curve["labelled"][1] == curve["labelled"][0] + 20
        assert "labels_to_90" in curve
    assert 0 <= summary["full"]["accuracy"] <= 100


def test_bench_quality_says_where_banking77_is_missing(tmp_path: Any) -> None:
    result = CliRunner().invoke(cli, ["bench", "quality", "--encoders", "wordllama", "--data", str(tmp_path)])
    assert result.exit_code != 0 and "BANKING77 is not at" in result.output


def _redis_listening() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", 6379)) == 0


@pytest.mark.services
@pytest.mark.slow
@needs_banking77
def test_bench_train_ends_with_its_summary() -> None:
    require_services()
    if not _redis_listening():
        pytest.skip("Redis is not listening on 127.0.0.1:6379")
    env = {"COMMINE_DATABASE_URL": f"{PG_SERVER}/commine", "COMMINE_EMBEDDED": ""}
    summary = _summary(["bench", "train", "--messages", "200", "--repeat", "1"], env=env)
    assert summary["benchmark"] == "train"
    assert summary["first"]["version"] == 1 and summary["retrain"]["version"] == 2
    assert summary["retrain"]["training_size"] == 200  # the timed annotation is in the new version
    assert summary["retrain_to_serving_s"] >= summary["retrain"]["to_registered_s"] > 0
    assert {"fasttext_logits_per_s", "predict_per_s", "embed_and_predict_per_s"} <= summary["predictions"].keys()
    assert {"targets", "met", "machine", "embed_seconds", "model_heads"} <= summary.keys()
    assert ["wordllama"] in summary["model_heads"]
