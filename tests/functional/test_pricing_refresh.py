"""`pricing refresh` against a stubbed Price List client (moto does not implement pricing)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from typer.testing import CliRunner

from costguard import cli
from costguard.errors import PricingError
from costguard.pricing import PriceCatalog
from costguard.pricing.refresh import refresh_catalog
from tests.support.pricelist import product

FILTERS = [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"}]


def pricing_client() -> Any:
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("pricing", region_name="us-east-1")


def stub_pages(stubber: Stubber) -> None:
    """AmazonBedrock in two pages (NextToken followed), then the Marketplace catalogue in one."""
    bedrock = {"ServiceCode": "AmazonBedrock", "Filters": FILTERS, "FormatVersion": "aws_v1"}
    stubber.add_response(
        "get_products",
        {"PriceList": [product("Nova Micro", "Input tokens", "0.000035"), product("Nova Micro", "Output tokens", "0.00014")],
         "FormatVersion": "aws_v1", "NextToken": "page-2"},
        bedrock,
    )
    stubber.add_response(
        "get_products",
        {"PriceList": [product("Nova Pro", "Input tokens", "0.0009"), product("Nova Pro", "Output tokens", "0.0036"),
                       product("Nova Pro", "Input tokens", "0.0004", feature="Batch Inference")],
         "FormatVersion": "aws_v1"},
        {**bedrock, "NextToken": "page-2"},
    )
    stubber.add_response(
        "get_products",
        {"PriceList": [
            product("Claude 3.5 Sonnet (Amazon Bedrock Edition)", "Input tokens", "0.003", name_key="servicename"),
            product("Claude 3.5 Sonnet (Amazon Bedrock Edition)", "Output tokens", "0.015", name_key="servicename"),
            product("Claude 3.5 Sonnet (Amazon Bedrock Edition)", "Cache write input tokens", "0.00375", name_key="servicename"),
            product("Mystery Model (Amazon Bedrock Edition)", "Input tokens", "0.001", name_key="servicename"),
        ], "FormatVersion": "aws_v1"},
        {**bedrock, "ServiceCode": "AmazonBedrockFoundationModels"},
    )


def test_refresh_writes_an_override_that_load_layers_on_top(tmp_path: Path) -> None:
    client = pricing_client()
    target = tmp_path / "pricing.json"
    with Stubber(client) as stubber:
        stub_pages(stubber)
        result = refresh_catalog("us-east-1", client=client, output=target, today="2026-11-22")
        stubber.assert_no_pending_responses()
    assert result.requests == 3 and result.products_seen == 9
    assert result.written_to == target
    assert set(result.updated) >= {"amazon.nova-micro-v1:0", "amazon.nova-pro-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0"}
    assert "Mystery Model (Amazon Bedrock Edition)" in result.unmatched_names
    # the batch price did not leak into the on-demand one
    catalog = PriceCatalog.load(target)
    assert catalog.quote("amazon.nova-pro-v1:0").price.input == Decimal("0.9")
    assert catalog.quote("us.amazon.nova-micro-v1:0").price.output == Decimal("0.14")
    assert catalog.retrieved == "2026-11-22"
    # models the Price List did not mention keep their shipped prices
    assert catalog.quote("anthropic.claude-3-haiku-20240307-v1:0").price.input == Decimal("0.25")
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_a_failed_refresh_writes_nothing_and_keeps_the_previous_catalog(tmp_path: Path) -> None:
    target = tmp_path / "pricing.json"
    target.write_text(json.dumps(PriceCatalog.shipped().to_dict()))
    before = target.read_bytes()
    client = pricing_client()
    with Stubber(client) as stubber:
        stubber.add_client_error("get_products", "AccessDeniedException", "not authorized to perform pricing:GetProducts")
        with pytest.raises(PricingError, match="AccessDenied"):
            refresh_catalog("us-east-1", client=client, output=target)
    assert target.read_bytes() == before


def test_a_price_list_with_nothing_usable_is_a_failure(tmp_path: Path) -> None:
    client = pricing_client()
    with Stubber(client) as stubber:
        for code in ("AmazonBedrock", "AmazonBedrockFoundationModels"):
            stubber.add_response("get_products", {"PriceList": [], "FormatVersion": "aws_v1"},
                                 {"ServiceCode": code, "Filters": FILTERS, "FormatVersion": "aws_v1"})
        with pytest.raises(PricingError, match="nothing was written"):
            refresh_catalog("us-east-1", client=client, output=tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


class _StubSession:
    def __init__(self, client: Any) -> None:
        self._client = client

    def client(self, name: str, region_name: str | None = None) -> Any:
        assert name == "pricing" and region_name == "us-east-1"
        return self._client


def test_cli_refresh_success_dry_run_and_loud_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    target = tmp_path / "pricing.json"
    client = pricing_client()
    monkeypatch.setattr(cli, "_aws_session", lambda profile: _StubSession(client))
    with Stubber(client) as stubber:
        stub_pages(stubber)
        dry = runner.invoke(cli.app, ["pricing", "refresh", "--output", str(target), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "amazon.nova-pro-v1:0" in dry.stdout and "dry run: nothing written" in dry.stderr
    assert not target.exists()
    with Stubber(client) as stubber:
        stub_pages(stubber)
        done = runner.invoke(cli.app, ["pricing", "refresh", "--output", str(target), "--format", "json"])
    assert done.exit_code == 0
    assert json.loads(done.stdout)["written_to"] == str(target) and target.exists()
    monkeypatch.setenv("COSTGUARD_PRICING", str(target))
    shown = runner.invoke(cli.app, ["pricing", "show", "amazon.nova-pro-v1:0", "--format", "json"])
    assert json.loads(shown.stdout)["models"][0]["input"] == "0.9"
    with Stubber(client) as stubber:
        stubber.add_client_error("get_products", "ThrottlingException", "Rate exceeded")
        failed = runner.invoke(cli.app, ["pricing", "refresh", "--output", str(target)])
    assert failed.exit_code == 1
    assert "PRICE REFRESH FAILED" in failed.stderr and "Nothing was written" in failed.stderr
    assert json.loads(target.read_text())["models"]["amazon.nova-pro-v1:0"]["input"] == "0.9"
    assert runner.invoke(cli.app, ["pricing", "refresh", "--format", "xml"]).exit_code == 2
