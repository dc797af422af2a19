"""`pricing refresh` against stubbed Price List and Bedrock clients (moto implements neither call).

Request and response shapes are botocore's: ``pricing`` GetProducts (paginated by NextToken,
``PriceList`` of product JSON strings) and ``bedrock`` ListFoundationModels / ListInferenceProfiles;
the Stubber validates both against the service models. Product attributes follow public examples
of real Bedrock products (see tests/support/pricelist.py).
"""

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
from costguard.pricing.key import CallUsage
from costguard.pricing.refresh import refresh_catalog
from tests.support.pricelist import product

FILTERS = [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"}]
SONNET_46 = "anthropic.claude-sonnet-4-6"


def _session() -> boto3.session.Session:
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")


def pricing_client() -> Any:
    return _session().client("pricing", region_name="us-east-1")


def bedrock_client() -> Any:
    return _session().client("bedrock", region_name="us-east-1")


def stub_pages(stubber: Stubber) -> None:
    """AmazonBedrock in two pages (NextToken followed), then the two Marketplace catalogues."""
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
                       product("Nova Pro", "Input tokens", "0.0004", feature="Batch Inference"),
                       product("Nova Pro", "Input tokens flex", "0.00045", service_tier="flex"),
                       product("Nova Pro", "Output tokens flex", "0.0018", service_tier="flex"),
                       product("Acme Falcon 9", "Input tokens", "0.0004", provider="Acme"),
                       product("Acme Falcon 9", "Output tokens", "0.0016", provider="Acme")],
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
    sonnet = "USE1-Claude4.6Sonnet"
    stubber.add_response(
        "get_products",
        {"PriceList": [
            product("Claude Sonnet 4.6", "Input tokens", "0.0033", usagetype=f"{sonnet}-input-tokens"),
            product("Claude Sonnet 4.6", "Output tokens", "0.0165", usagetype=f"{sonnet}-output-tokens"),
            product("Claude Sonnet 4.6", "Input tokens", "0.003", usagetype=f"{sonnet}-input-tokens-cross-region-global"),
            product("Claude Sonnet 4.6", "Output tokens", "0.015", usagetype=f"{sonnet}-output-tokens-cross-region-global"),
            product("Claude Sonnet 4.6", None, "0.0003", usagetype=f"{sonnet}-cache-read-input-token-count-cross-region-global"),
            product("Claude Sonnet 4.6", "Input tokens", "0.0015", usagetype=f"{sonnet}-input-tokens-cross-region-global-batch"),
        ], "FormatVersion": "aws_v1"},
        {**bedrock, "ServiceCode": "AmazonBedrockService"},
    )


def stub_models(stubber: Stubber) -> None:
    stubber.add_response(
        "list_foundation_models",
        {"modelSummaries": [
            {"modelArn": "arn:aws:bedrock:us-east-1::foundation-model/acme.falcon-9-v1:0", "modelId": "acme.falcon-9-v1:0",
             "modelName": "Falcon 9", "providerName": "Acme", "inferenceTypesSupported": ["ON_DEMAND"],
             "modelLifecycle": {"status": "ACTIVE"}},
            {"modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET_46}", "modelId": SONNET_46,
             "modelName": "Claude Sonnet 4.6", "providerName": "Anthropic", "inferenceTypesSupported": ["INFERENCE_PROFILE"],
             "modelLifecycle": {"status": "ACTIVE"}},
        ]},
        {},
    )
    stubber.add_response(
        "list_inference_profiles",
        {"inferenceProfileSummaries": [
            {"inferenceProfileName": "Global Anthropic Claude Sonnet 4.6",
             "inferenceProfileArn": f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.{SONNET_46}",
             "inferenceProfileId": f"global.{SONNET_46}",
             "models": [{"modelArn": f"arn:aws:bedrock:::foundation-model/{SONNET_46}"}],
             "status": "ACTIVE", "type": "SYSTEM_DEFINED"},
        ]},
        {"typeEquals": "SYSTEM_DEFINED"},
    )


def test_refresh_joins_models_and_writes_an_override_that_load_layers_on_top(tmp_path: Path) -> None:
    client, models = pricing_client(), bedrock_client()
    target = tmp_path / "pricing.json"
    with Stubber(client) as stubber, Stubber(models) as model_stubber:
        stub_pages(stubber)
        stub_models(model_stubber)
        result = refresh_catalog("us-east-1", client=client, bedrock_client=models, output=target, today="2026-12-01")
        stubber.assert_no_pending_responses()
        model_stubber.assert_no_pending_responses()
    assert result.requests == 4 + 2 and result.products_seen == 19
    assert result.written_to == target and result.warnings == []
    assert set(result.updated) >= {"amazon.nova-micro-v1:0", "amazon.nova-pro-v1:0", SONNET_46,
                                   "anthropic.claude-3-5-sonnet-20240620-v1:0", "acme.falcon-9-v1:0"}
    assert result.new_models == ["acme.falcon-9-v1:0"]  # launched after the release: found, priced
    assert "Mystery Model (Amazon Bedrock Edition)" in result.unmatched_names
    catalog = PriceCatalog.load(target)
    # the batch price did not leak into the on-demand one; flex is its own tier
    assert catalog.quote("amazon.nova-pro-v1:0").price.input == Decimal("0.9")
    usage = CallUsage(1_000_000, 1_000_000)
    assert catalog.rate_card("amazon.nova-pro-v1:0", region="us-east-1", tier="flex").price(usage).cost_nanos == 2_250_000_000
    assert catalog.quote("us.amazon.nova-micro-v1:0").price.output == Decimal("0.14")
    # Sonnet 4.6: in-region 3.30/16.50, global 3.00/15.00 + its cache read 0.30
    assert catalog.rate_card(SONNET_46, region="us-east-1").price(usage).cost_nanos == 19_800_000_000
    global_call = catalog.rate_card("global." + SONNET_46, region="us-east-1").price(CallUsage(1_000_000, 1_000_000, 1_000_000))
    assert global_call.cost_nanos == 18_300_000_000 and global_call.flags == set()
    assert catalog.rate_card("acme.falcon-9-v1:0", region="us-east-1").price(usage).cost_nanos == 2_000_000_000
    assert catalog.entries["acme.falcon-9-v1:0"].provider == "Acme"
    assert catalog.retrieved == "2026-12-01"
    # models the Price List did not mention keep their shipped prices
    assert catalog.quote("anthropic.claude-3-haiku-20240307-v1:0").price.input == Decimal("0.25")
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_without_model_listing_rights_known_models_still_refresh(tmp_path: Path) -> None:
    client, models = pricing_client(), bedrock_client()
    with Stubber(client) as stubber, Stubber(models) as model_stubber:
        stub_pages(stubber)
        model_stubber.add_client_error("list_foundation_models", "AccessDeniedException", "not authorized")
        result = refresh_catalog("us-east-1", client=client, bedrock_client=models, output=tmp_path / "p.json")
    assert "amazon.nova-pro-v1:0" in result.updated and result.new_models == []
    assert "Acme Falcon 9" in result.unmatched_names
    assert len(result.warnings) == 1 and "AccessDenied" in result.warnings[0]


def test_a_service_code_the_price_list_does_not_offer_is_a_warning(tmp_path: Path) -> None:
    client, models = pricing_client(), bedrock_client()
    with Stubber(client) as stubber, Stubber(models) as model_stubber:
        request = {"ServiceCode": "AmazonBedrock", "Filters": FILTERS, "FormatVersion": "aws_v1"}
        stubber.add_response("get_products", {"PriceList": [product("Nova Micro", "Input tokens", "0.000035"),
                                                            product("Nova Micro", "Output tokens", "0.00014")]}, request)
        stubber.add_response("get_products", {"PriceList": []}, {**request, "ServiceCode": "AmazonBedrockFoundationModels"})
        stubber.add_client_error("get_products", "NotFoundException", "service code not found",
                                 expected_params={**request, "ServiceCode": "AmazonBedrockService"})
        stub_models(model_stubber)
        result = refresh_catalog("us-east-1", client=client, bedrock_client=models, output=tmp_path / "p.json")
    assert list(result.updated) == ["amazon.nova-micro-v1:0"]
    assert any("AmazonBedrockService" in w for w in result.warnings)


def test_a_failed_refresh_writes_nothing_and_keeps_the_previous_catalog(tmp_path: Path) -> None:
    target = tmp_path / "pricing.json"
    target.write_text(json.dumps(PriceCatalog.shipped().to_dict()))
    before = target.read_bytes()
    client = pricing_client()
    with Stubber(client) as stubber:
        stubber.add_client_error("get_products", "AccessDeniedException", "not authorized to perform pricing:GetProducts")
        with pytest.raises(PricingError, match="AccessDenied"):
            refresh_catalog("us-east-1", client=client, bedrock_client=bedrock_client(), output=target)
    assert target.read_bytes() == before


def test_a_price_list_with_nothing_usable_is_a_failure(tmp_path: Path) -> None:
    client, models = pricing_client(), bedrock_client()
    with Stubber(client) as stubber, Stubber(models) as model_stubber:
        for code in ("AmazonBedrock", "AmazonBedrockFoundationModels", "AmazonBedrockService"):
            stubber.add_response("get_products", {"PriceList": [], "FormatVersion": "aws_v1"},
                                 {"ServiceCode": code, "Filters": FILTERS, "FormatVersion": "aws_v1"})
        stub_models(model_stubber)
        with pytest.raises(PricingError, match="nothing was written"):
            refresh_catalog("us-east-1", client=client, bedrock_client=models, output=tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


class _StubSession:
    def __init__(self, pricing: Any, bedrock: Any) -> None:
        self._clients = {"pricing": pricing, "bedrock": bedrock}

    def client(self, name: str, region_name: str | None = None) -> Any:
        assert region_name == "us-east-1"
        return self._clients[name]


def test_cli_refresh_success_dry_run_and_loud_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    target = tmp_path / "pricing.json"
    client, models = pricing_client(), bedrock_client()
    monkeypatch.setattr(cli, "_aws_session", lambda profile: _StubSession(client, models))
    with Stubber(client) as stubber, Stubber(models) as model_stubber:
        stub_pages(stubber)
        stub_models(model_stubber)
        dry = runner.invoke(cli.app, ["pricing", "refresh", "--output", str(target), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "amazon.nova-pro-v1:0" in dry.stdout and "dry run: nothing written" in dry.stderr
    assert "new: acme.falcon-9-v1:0" in dry.stderr
    assert not target.exists()
    with Stubber(client) as stubber, Stubber(models) as model_stubber:
        stub_pages(stubber)
        stub_models(model_stubber)
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
    assert json.loads(target.read_text())["models"]["amazon.nova-pro-v1:0"]["rates"]["standard"]["input"] == "0.9"
    assert runner.invoke(cli.app, ["pricing", "refresh", "--format", "xml"]).exit_code == 2
