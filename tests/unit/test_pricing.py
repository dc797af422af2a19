from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

import costguard.pricing
from costguard.errors import CostguardError, PricingError
from costguard.paths import user_data_dir
from costguard.pricing import (
    InferenceProfileResolver,
    ModelPrice,
    PriceCatalog,
    base_model_id,
    default_override_path,
)

SONNET_35 = "anthropic.claude-3-5-sonnet-20240620-v1:0"
HAIKU_3 = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Keep a developer's real refreshed catalog (or env) out of every test.
    monkeypatch.delenv("COSTGUARD_PRICING", raising=False)
    monkeypatch.setenv("COSTGUARD_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def shipped() -> PriceCatalog:
    return PriceCatalog.shipped()


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def _minimal(models: dict[str, dict[str, str]] | None = None) -> dict[str, object]:
    return {
        "source": "test",
        "retrieved": "2026-11-02",
        "region": "us-east-1",
        "currency": "USD",
        "unit": "per 1M tokens",
        "models": models if models is not None else {"x.model-v1:0": {"input": "1.00", "output": "2.00"}},
    }


# -- shipped data ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "inp", "out", "cache_read", "cache_write"),
    [
        (SONNET_35, "3.00", "15.00", "0.30", "3.75"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "3.00", "15.00", "0.30", "3.75"),
        (HAIKU_3, "0.25", "1.25", None, None),
        ("anthropic.claude-3-5-haiku-20241022-v1:0", "0.80", "4.00", "0.08", "1.00"),
        ("amazon.nova-micro-v1:0", "0.035", "0.14", None, None),
        ("amazon.nova-lite-v1:0", "0.06", "0.24", None, None),
        ("amazon.nova-pro-v1:0", "0.80", "3.20", None, None),
    ],
)
def test_design_prices_are_shipped_exactly(
    shipped: PriceCatalog, model_id: str, inp: str, out: str, cache_read: str | None, cache_write: str | None
) -> None:
    price = shipped.models[model_id]
    assert price.input == Decimal(inp) and price.output == Decimal(out)
    if cache_read is not None:
        assert price.cache_read == Decimal(cache_read)
        assert price.cache_write == Decimal(cache_write)  # type: ignore[arg-type]


def test_every_shipped_model_has_a_sane_price(shipped: PriceCatalog) -> None:
    data = Path(costguard.pricing.__file__).parent / "data" / "bedrock_prices.json"
    assert set(shipped.models) == set(json.loads(data.read_text())["models"])  # every model, none lost
    assert shipped.region == "us-east-1" and shipped.retrieved == "2026-11-01"
    assert "aws.amazon.com/bedrock/pricing" in shipped.source
    for model_id, price in shipped.models.items():
        assert price.model_id == model_id
        assert isinstance(price.input, Decimal) and price.input > 0, model_id
        assert isinstance(price.output, Decimal) and price.output >= 0, model_id
        assert price.name, model_id
        if price.cache_read is not None:
            assert price.cache_read < price.input, model_id
        # Pricing normalisation must leave every catalog key alone, or it could never match.
        assert base_model_id(model_id) == model_id


def test_models_mapping_is_read_only(shipped: PriceCatalog) -> None:
    with pytest.raises(TypeError):
        shipped.models["new"] = shipped.models[HAIKU_3]  # type: ignore[index]


# -- cost arithmetic --------------------------------------------------------------------------------


def test_cost_is_exact(shipped: PriceCatalog) -> None:
    cost, quote = shipped.cost(SONNET_35, 1_000, 500)
    assert cost == Decimal("0.0105")
    assert quote.priced and quote.base_model_id == SONNET_35
    assert shipped.cost("amazon.nova-micro-v1:0", 1, 1)[0] == Decimal("0.000000175")
    assert shipped.cost(HAIKU_3, 0, 0)[0] == 0


def test_cache_tokens_use_cache_prices(shipped: PriceCatalog) -> None:
    # 2000 * 3.00 + 100 * 15.00 + 10000 * 0.30 + 4000 * 3.75 = 6000 + 1500 + 3000 + 15000
    cost, _ = shipped.cost(SONNET_35, 2_000, 100, cache_read_tokens=10_000, cache_write_tokens=4_000)
    assert cost == Decimal("0.0255")


def test_cache_tokens_without_cache_price_cost_the_input_price() -> None:
    price = ModelPrice("x.y-v1:0", input=Decimal("0.25"), output=Decimal("1.25"))
    assert price.cost(0, 0, cache_read_tokens=1_000_000) == Decimal("0.25")
    assert price.cost(0, 0, cache_write_tokens=2_000_000) == Decimal("0.50")


# -- normalisation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (SONNET_35, SONNET_35),
        ("us." + SONNET_35, SONNET_35),
        ("eu." + SONNET_35, SONNET_35),
        ("apac." + SONNET_35, SONNET_35),
        ("global." + SONNET_35, SONNET_35),
        ("us-gov." + HAIKU_3, HAIKU_3),
        ("jp." + HAIKU_3, HAIKU_3),
        ("au.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
        ("ca.amazon.nova-lite-v1:0", "amazon.nova-lite-v1:0"),
        (f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU_3}", HAIKU_3),
        (f"arn:aws-us-gov:bedrock:us-gov-west-1::foundation-model/{HAIKU_3}", HAIKU_3),
        (f"arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.{SONNET_35}", SONNET_35),
        (f"{SONNET_35}:200k", SONNET_35),
        (f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET_35}:18k", SONNET_35),
        ("amazon.titan-text-express-v1:0:8k", "amazon.titan-text-express-v1:0"),
        ("amazon.nova-pro-v1:0:300k", "amazon.nova-pro-v1:0"),
        ("anthropic.claude-v2:18k", "anthropic.claude-v2"),
        ("cohere.embed-english-v3:0:512", "cohere.embed-english-v3:0"),
        ("mistral.mistral-7b-instruct-v0:2", "mistral.mistral-7b-instruct-v0:2"),
        ("  amazon.nova-pro-v1:0 ", "amazon.nova-pro-v1:0"),
        # not a profile prefix: nothing that looks like provider.model follows
        ("us.model", "us.model"),
        # application profiles and provisioned models need AWS to resolve: left alone
        (
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3",
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/xyz",
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/xyz",
        ),
    ],
)
def test_base_model_id(given: str, expected: str) -> None:
    assert base_model_id(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("us." + SONNET_35, SONNET_35),
        (f"arn:aws:bedrock:us-east-1:111122223333:inference-profile/global.{SONNET_35}", SONNET_35),
        (f"{SONNET_35}:200k", SONNET_35),
        ("anthropic.claude-3-haiku-20240307-v1", HAIKU_3),  # no :N
        ("anthropic.claude-3-haiku-20240307-v1:1", HAIKU_3),  # another :N
        ("anthropic.claude-3-haiku-20240307-v2:0", HAIKU_3),  # another -vN of the dated model
        ("amazon.titan-text-express-v1:0:8k", "amazon.titan-text-express-v1"),  # key has no :N
        ("cohere.embed-english-v3:0:512", "cohere.embed-english-v3"),
    ],
)
def test_quote_resolves_variants_to_catalog_models(shipped: PriceCatalog, given: str, expected: str) -> None:
    quote = shipped.quote(given)
    assert quote.priced
    assert quote.requested_id == given
    assert quote.base_model_id == expected
    assert quote.price is shipped.models[expected]


def test_undated_models_do_not_borrow_another_versions_price(shipped: PriceCatalog) -> None:
    # Titan embeddings v1 and v2 are different models at different prices.
    assert not shipped.quote("amazon.titan-embed-text-v3:0").priced


def test_unknown_model_is_priced_at_the_conservative_fallback(shipped: PriceCatalog) -> None:
    quote = shipped.quote("us.acme.brand-new-model-v1:0")
    assert not quote.priced
    assert quote.base_model_id == "acme.brand-new-model-v1:0"
    assert quote.price is shipped.fallback
    assert shipped.fallback.input == max(p.input for p in shipped.models.values())
    assert shipped.fallback.output == max(p.output for p in shipped.models.values())
    cost, _ = shipped.cost("acme.brand-new-model-v1:0", 1_000, 1_000, 1_000, 1_000)
    # Claude Opus 4's $15.00 in (also for cache reads: no discount is assumed), $75.00 out and
    # $18.75 cache write per 1M: the catalog's highest prices
    assert cost == 1_000 * (Decimal("15.00") + Decimal("75.00") + Decimal("15.00") + Decimal("18.75")) / 10**6
    assert cost >= max(p.cost(1_000, 1_000, 1_000, 1_000) for p in shipped.models.values())


def test_application_profile_arn_without_resolution_is_unpriced(shipped: PriceCatalog) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3"
    quote = shipped.quote(arn)
    assert not quote.priced and quote.price.cost(1, 1) > 0


def test_quotes_are_memoised_per_instance() -> None:
    catalog = PriceCatalog.from_dict(_minimal())
    assert catalog.quote("us.x.model-v1:0") is catalog.quote("us.x.model-v1:0")
    other = PriceCatalog.from_dict(_minimal())
    assert other.quote("us.x.model-v1:0") is not catalog.quote("us.x.model-v1:0")


def test_explicit_fallback() -> None:
    fallback = ModelPrice("costguard.fallback", Decimal("100"), Decimal("200"))
    catalog = PriceCatalog(
        {"x.y-v1:0": ModelPrice("x.y-v1:0", Decimal("1"), Decimal("2"))},
        source="s",
        retrieved="2026-01-01",
        fallback=fallback,
    )
    assert catalog.quote("nope").price is fallback
    assert PriceCatalog.from_dict(catalog.to_dict()).fallback.input == Decimal("100")


# -- round trip -------------------------------------------------------------------------------------


def test_to_dict_round_trips(shipped: PriceCatalog) -> None:
    data = shipped.to_dict()
    text = json.dumps(data)  # JSON-ready: no Decimal left in it
    again = PriceCatalog.from_dict(json.loads(text))
    assert again.models == shipped.models
    assert (again.source, again.retrieved, again.region) == (shipped.source, shipped.retrieved, shipped.region)
    assert again.to_dict() == data
    assert data["models"]["amazon.nova-micro-v1:0"]["input"] == "0.035"


def test_shipped_file_matches_to_dict(shipped: PriceCatalog) -> None:
    import costguard.pricing

    raw = json.loads(
        (Path(costguard.pricing.__file__).parent / "data" / "bedrock_prices.json").read_text(encoding="utf-8")
    )
    assert shipped.to_dict() == raw


# -- loading and overrides ------------------------------------------------------------------------


def test_user_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COSTGUARD_HOME", str(tmp_path / "cg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert user_data_dir() == tmp_path / "cg"
    monkeypatch.delenv("COSTGUARD_HOME")
    assert user_data_dir() == tmp_path / "xdg" / "costguard"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert user_data_dir() == tmp_path / "h" / ".local" / "share" / "costguard"


def test_default_override_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert default_override_path() == tmp_path / "home" / "pricing.json"
    monkeypatch.setenv("COSTGUARD_PRICING", str(tmp_path / "p.json"))
    assert default_override_path() == tmp_path / "p.json"


def test_load_without_override_is_the_shipped_catalog(shipped: PriceCatalog) -> None:
    loaded = PriceCatalog.load()
    assert loaded.models == shipped.models and loaded.source == shipped.source


def test_override_from_env_is_layered_over_shipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, shipped: PriceCatalog
) -> None:
    override = _minimal(
        {
            HAIKU_3: {"input": "0.20", "output": "1.00", "name": "Claude 3 Haiku"},
            "acme.new-model-v1:0": {"input": "0.5", "output": 1},
        }
    )
    override["source"] = "AWS Price List API"
    monkeypatch.setenv("COSTGUARD_PRICING", str(_write(tmp_path / "override.json", override)))
    catalog = PriceCatalog.load()
    assert catalog.models[HAIKU_3].input == Decimal("0.20")  # replaced
    assert catalog.quote("us.acme.new-model-v1:0").priced  # added
    assert catalog.models["acme.new-model-v1:0"].output == Decimal("1")
    assert catalog.models[SONNET_35] == shipped.models[SONNET_35]  # kept
    assert len(catalog.models) == len(shipped.models) + 1
    assert catalog.source == "AWS Price List API" and catalog.retrieved == "2026-11-02"
    assert catalog.cost(HAIKU_3, 1_000_000, 0)[0] == Decimal("0.20")


def test_override_in_user_data_dir_and_explicit_path(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _write(home / "pricing.json", _minimal({HAIKU_3: {"input": "9", "output": "9"}}))
    assert PriceCatalog.load().models[HAIKU_3].input == Decimal("9")
    explicit = _write(tmp_path / "other.json", _minimal({HAIKU_3: {"input": "7", "output": "7"}}))
    assert PriceCatalog.load(explicit).models[HAIKU_3].input == Decimal("7")
    assert PriceCatalog.load(tmp_path / "missing.json").models[HAIKU_3].input == Decimal("0.25")


def test_json_numbers_are_read_exactly(tmp_path: Path) -> None:
    text = '{"source": "s", "retrieved": "d", "models": {"a.b-v1:0": {"input": 0.035, "output": 0.14}}}'
    path = _write(tmp_path / "c.json", text)
    price = PriceCatalog.from_file(path).models["a.b-v1:0"]
    assert price.input == Decimal("0.035") and price.output == Decimal("0.14")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        (json.dumps({"retrieved": "d", "models": {"a.b-v1:0": {"input": "1", "output": "1"}}}), "source"),
        (json.dumps({"source": "s", "retrieved": "d"}), "models"),
        (json.dumps({"source": "s", "retrieved": "d", "models": {}}), "models"),
        (json.dumps(_minimal({"a.b-v1:0": {"input": "1"}})), "models['a.b-v1:0']: output: missing"),
        (json.dumps(_minimal({"a.b-v1:0": {"input": "cheap", "output": "1"}})), "models['a.b-v1:0'].input"),
        (json.dumps(_minimal({"a.b-v1:0": {"input": "-1", "output": "1"}})), "negative"),
        (json.dumps(_minimal({"a.b-v1:0": {"input": "NaN", "output": "1"}})), "models['a.b-v1:0'].input"),
        (json.dumps(_minimal({"a.b-v1:0": {"input": "1", "output": "1", "cache_read": True}})), "cache_read"),
        (json.dumps(_minimal({"a.b-v1:0": {"input": "1", "output": "1", "cache-read": "1"}})), "unknown field"),
        (json.dumps(_minimal({"a.b-v1:0": "1.00"})), "models['a.b-v1:0']"),
        (json.dumps({**_minimal(), "currency": "EUR"}), "currency"),
        (json.dumps({**_minimal(), "unit": "per 1K tokens"}), "unit"),
    ],
)
def test_malformed_catalog_names_the_file(tmp_path: Path, content: str, needle: str) -> None:
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(PricingError) as info:
        PriceCatalog.from_file(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)
    assert isinstance(info.value, CostguardError)


def test_malformed_override_raises_through_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = _write(tmp_path / "override.json", _minimal({"a.b-v1:0": {"input": "-0.5", "output": "1"}}))
    monkeypatch.setenv("COSTGUARD_PRICING", str(path))
    with pytest.raises(PricingError, match="override.json.*a.b-v1:0"):
        PriceCatalog.load()


def test_unreadable_file_is_a_pricing_error(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="missing.json"):
        PriceCatalog.from_file(tmp_path / "missing.json")


def test_python_floats_are_refused() -> None:
    with pytest.raises(PricingError, match="string"):
        PriceCatalog.from_dict(_minimal({"a.b-v1:0": {"input": 0.1, "output": "1"}}))  # type: ignore[dict-item]


# -- application inference profiles ---------------------------------------------------------------
# moto 5.2's bedrock backend implements no inference-profile operations, so a Stubber stands in
# for the control plane: it validates requests and responses against the real service model.

PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4"


@pytest.fixture
def bedrock(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("bedrock", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _profile_response(model_arns: list[str]) -> dict[str, object]:
    return {
        "inferenceProfileName": "claims-intake",
        "inferenceProfileArn": PROFILE_ARN,
        "inferenceProfileId": "a1b2c3d4",
        "status": "ACTIVE",
        "type": "APPLICATION",
        "models": [{"modelArn": arn} for arn in model_arns],
    }


def test_resolver_maps_application_profile_to_base_model(  # type: ignore[no-untyped-def]
    bedrock, shipped: PriceCatalog
) -> None:
    client, stubber = bedrock
    stubber.add_response(
        "get_inference_profile",
        _profile_response(
            [
                f"arn:aws:bedrock:us-east-1::foundation-model/{SONNET_35}",
                f"arn:aws:bedrock:us-west-2::foundation-model/{SONNET_35}",
            ]
        ),
        {"inferenceProfileIdentifier": PROFILE_ARN},
    )
    resolver = InferenceProfileResolver(client=client)
    assert resolver.resolve(PROFILE_ARN) == SONNET_35
    assert resolver.resolve(PROFILE_ARN) == SONNET_35  # cached: only one stubbed call
    assert shipped.quote(resolver.resolve(PROFILE_ARN)).priced


def test_resolver_needs_no_aws_for_other_ids() -> None:
    resolver = InferenceProfileResolver(client=object())  # any AWS call would fail loudly
    assert resolver.resolve("us." + HAIKU_3) == HAIKU_3
    assert resolver.resolve(f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU_3}") == HAIKU_3


def test_resolver_reports_aws_errors_with_arn_and_code(bedrock) -> None:  # type: ignore[no-untyped-def]
    client, stubber = bedrock
    stubber.add_client_error(
        "get_inference_profile", service_error_code="AccessDeniedException", http_status_code=403
    )
    with pytest.raises(PricingError) as info:
        InferenceProfileResolver(client=client).resolve(PROFILE_ARN)
    assert PROFILE_ARN in str(info.value) and "AccessDeniedException" in str(info.value)


def test_resolver_rejects_a_profile_without_models() -> None:
    # The service model forbids an empty list, so the Stubber cannot send one: a bare fake does.
    class EmptyProfile:
        def get_inference_profile(self, inferenceProfileIdentifier: str) -> dict[str, object]:
            return {"models": []}

    with pytest.raises(PricingError, match="names no model"):
        InferenceProfileResolver(client=EmptyProfile()).resolve(PROFILE_ARN)


def test_resolver_builds_its_client_lazily_from_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, str | None]] = []

    class FakeClient:
        def get_inference_profile(self, inferenceProfileIdentifier: str) -> dict[str, object]:
            return _profile_response([f"arn:aws:bedrock:eu-west-1::foundation-model/{HAIKU_3}"])

    class FakeSession:
        def client(self, service: str, region_name: str | None = None) -> FakeClient:
            made.append((service, region_name))
            return FakeClient()

    resolver = InferenceProfileResolver(session=FakeSession())  # type: ignore[arg-type]
    assert made == []  # nothing built until a profile needs resolving
    eu_arn = PROFILE_ARN.replace("us-east-1", "eu-west-1")
    assert resolver.resolve(eu_arn) == HAIKU_3
    assert made == [("bedrock", "eu-west-1")]
