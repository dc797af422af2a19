"""What `pricing show` lists: rows for every model and one model's rates, per region."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from costguard.cli import app
from costguard.pricing import PriceCatalog
from costguard.pricing.listing import describe_set, model_detail, model_rows


@pytest.fixture(scope="module")
def shipped() -> PriceCatalog:
    return PriceCatalog.shipped()


def test_rows_name_lifecycle_dimensions_and_regions(shipped: PriceCatalog) -> None:
    rows = {row["model_id"]: row for row in model_rows(shipped)}
    assert len(rows) == len(shipped.models)
    sonnet4 = rows["anthropic.claude-sonnet-4-20250514-v1:0"]
    assert (sonnet4["status"], sonnet4["end_of_life"]) == ("retired", "2026-10-14")
    assert "long_context" in sonnet4["dimensions"]
    nova2 = rows["amazon.nova-2-lite-v1:0"]
    assert {"global", "priority", "flex", "cache_read"} <= set(nova2["dimensions"])
    assert nova2["regions"][0] == "us-east-1" and "eu-central-1" in nova2["regions"]


def test_rows_for_a_region_say_when_its_figure_is_assumed(shipped: PriceCatalog) -> None:
    rows = {row["model_id"]: row for row in model_rows(shipped, "eu-central-1")}
    assert rows["amazon.nova-pro-v1:0"]["input"] == "1.05" and rows["amazon.nova-pro-v1:0"]["region_assumed"] is False
    assert rows["qwen.qwen3-32b-v1:0"]["input"] == "0.15" and rows["qwen.qwen3-32b-v1:0"]["region_assumed"] is True


def test_detail_shows_every_rate_set_of_the_region(shipped: PriceCatalog) -> None:
    detail = model_detail(shipped, "global.anthropic.claude-sonnet-4-5-20250929-v1:0", "eu-west-1")
    assert detail["priced"] and detail["scope"] == "global" and detail["input"] == "3"
    assert set(detail["rates"]) == {"standard", "long", "global", "global+long"}
    assert detail["rates"]["long"]["cache_write_1h"] == "13.2"
    assert detail["long_context_threshold"] == 200_000 and detail["sources"] and detail["notes"]
    unknown = model_detail(shipped, "acme.nope-v1:0")
    assert not unknown["priced"] and unknown["flags"] == ["unpriced"] and "name" not in unknown


def test_rate_sets_are_described_for_people() -> None:
    assert describe_set("standard") == "in-region / geo"
    assert describe_set("global+priority+long") == "global, priority, long context"


def test_cli_show_model_region_json() -> None:
    result = CliRunner().invoke(app, ["pricing", "show", "deepseek.v3.2", "--region", "ap-northeast-1", "--format", "json"])
    assert result.exit_code == 0, result.output
    model = json.loads(result.stdout)["models"][0]
    assert (model["input"], model["output"], model["region_assumed"]) == ("0.74", "2.22", False)
    table = CliRunner().invoke(app, ["pricing", "show", "--region", "eu-west-1"])
    assert table.exit_code == 0 and "region_assumed" in table.stdout
