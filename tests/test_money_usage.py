"""Money that matches the invoice (issue 10, items 15 and 16): OpenAI cache writes by lifetime
and Gemini usage by modality, read from the wire, priced by the catalog, refused when unpriced."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import types

from flexroute.catalog import (
    UNPRICED_CACHE_WRITE,
    UNPRICED_MODALITY,
    Catalog,
    ModelPrices,
    UnpricedUsageError,
    default_catalog,
)
from flexroute.dialects._openai import chat_usage, responses_usage
from flexroute.dialects.gemini import gemini_usage
from flexroute.errors import CatalogError
from flexroute.fees import compute_charge
from flexroute.settle import price
from flexroute.usage import Tier, Usage
from tests.conftest import Proxy

RATE = Decimal("0.20")


def prices(provider: str, model: str) -> ModelPrices:
    found = default_catalog().lookup(provider, model)
    assert found is not None, model
    return found


def per_million(*terms: tuple[int, str]) -> Decimal:
    return sum((tokens * Decimal(rate) for tokens, rate in terms), Decimal(0)) / 1_000_000


class TestOpenAICacheWriteUsage:
    def test_chat_usage_reads_cache_writes_as_thirty_minute_writes(self) -> None:
        """Chat completions reports ``prompt_tokens_details.cache_write_tokens`` (30 minutes)."""
        usage = chat_usage(
            {
                "prompt_tokens": 1000,
                "completion_tokens": 10,
                "prompt_tokens_details": {"cached_tokens": 200, "cache_write_tokens": 300},
            }
        )
        assert usage == Usage(
            input_tokens=1000, output_tokens=10, cached_input_tokens=200, cache_write_tokens=300
        )

    def test_responses_usage_splits_writes_by_lifetime(self) -> None:
        """``cache_write_tokens_details`` splits writes into 30-minute and 12-hour parts."""
        usage = responses_usage(
            {
                "input_tokens": 1000,
                "output_tokens": 5,
                "input_tokens_details": {
                    "cached_tokens": 100,
                    "cache_write_tokens": 500,
                    "cache_write_tokens_details": {"ttl_30m_tokens": 200, "ttl_12h_tokens": 300},
                },
            }
        )
        assert usage is not None
        assert (usage.cache_write_tokens, usage.cache_write_12h_tokens) == (200, 300)
        assert usage.uncached_input_tokens == 400

    def test_writes_beyond_the_split_take_the_default_lifetime(self) -> None:
        """A total larger than its split counts the rest as 30-minute writes, never as nothing."""
        usage = responses_usage(
            {
                "input_tokens": 1000,
                "output_tokens": 0,
                "input_tokens_details": {
                    "cached_tokens": 0,
                    "cache_write_tokens": 500,
                    "cache_write_tokens_details": {"ttl_30m_tokens": 0, "ttl_12h_tokens": 100},
                },
            }
        )
        assert usage is not None
        assert (usage.cache_write_tokens, usage.cache_write_12h_tokens) == (400, 100)


class TestCacheWritePrices:
    def test_gpt_5_6_prices_thirty_minute_writes_at_their_own_rate(self) -> None:
        """gpt-5.6-sol: 600 uncached × $4 + 400 writes × $5 + 100 out × $20 per 1M."""
        usage = Usage(input_tokens=1000, cache_write_tokens=400, output_tokens=100)
        cost = prices("openai", "gpt-5.6-sol").cost(Tier.STANDARD, usage)
        assert cost == per_million((600, "4"), (400, "5"), (100, "20"))

    def test_priority_cache_writes_are_priced_for_gpt_5_6(self) -> None:
        """Fast/priority writes cost 1.25× the priority input: $10 per 1M on gpt-5.6-sol."""
        usage = Usage(input_tokens=1000, cache_write_tokens=1000)
        cost = prices("openai", "gpt-5.6-sol").cost(Tier.PRIORITY, usage)
        assert cost == per_million((1000, "10"))

    def test_twelve_hour_writes_use_the_twelve_hour_price(self) -> None:
        """gpt-6.1-terra: 200 × $1 + 300 30m × $1.25 + 500 12h × $2.50 per 1M."""
        usage = Usage(input_tokens=1000, cache_write_tokens=300, cache_write_12h_tokens=500)
        cost = prices("openai", "gpt-6.1-terra").cost(Tier.STANDARD, usage)
        assert cost == per_million((200, "1"), (300, "1.25"), (500, "2.50"))

    def test_a_write_lifetime_without_a_price_is_refused_not_guessed(self) -> None:
        """gpt-6.1-sol publishes no 12-hour price: the call is unpriced, reason named."""
        usage = Usage(input_tokens=1000, cache_write_12h_tokens=500)
        priced = price(
            prices("openai", "gpt-6.1-sol"), usage, Tier.FLEX, flex_route=True, fee_rate=RATE
        )
        assert (priced.standard_cost, priced.actual_cost) == (None, None)
        assert priced.saving == priced.fee == 0
        assert priced.reason == UNPRICED_CACHE_WRITE

    def test_models_that_do_not_bill_writes_price_them_as_input(self) -> None:
        """gpt-5.5 (before GPT-5.6) bills reported writes like any prompt token."""
        p = prices("openai", "gpt-5.5")
        writes = Usage(input_tokens=1000, cache_write_tokens=600, cache_write_12h_tokens=400)
        assert p.cost(Tier.FLEX, writes) == p.cost(Tier.FLEX, Usage(input_tokens=1000))

    def test_a_model_pricing_writes_on_some_tiers_only_is_rejected(self, tmp_path: Path) -> None:
        """A tier without ``cache_write`` would bill writes as input: the loader refuses."""
        directory = tmp_path / "pricing"
        directory.mkdir()
        (directory / "openai.toml").write_text(
            textwrap.dedent("""
                [models."m"]
                source = "https://example.com/pricing"
                checked = 2026-12-01
                [models."m".standard]
                input = "1.00"
                cache_write = "1.25"
                output = "2.00"
                [models."m".priority]
                input = "2.00"
                output = "4.00"
            """),
            encoding="utf-8",
        )
        with pytest.raises(CatalogError, match="cache_write is priced in standard but not in"):
            Catalog.load(directory)


class TestGeminiModalities:
    def test_gemini_usage_reads_every_modality_list(self) -> None:
        """prompt, cache and candidates details become per-modality counts."""
        usage = gemini_usage(
            {
                "promptTokenCount": 1000,
                "candidatesTokenCount": 20,
                "cachedContentTokenCount": 100,
                "promptTokensDetails": [
                    {"modality": "TEXT", "tokenCount": 400},
                    {"modality": "AUDIO", "tokenCount": 600},
                ],
                "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 100}],
                "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 20}],
            }
        )
        assert usage is not None
        assert dict(usage.input_by_modality) == {"text": 400, "audio": 600}
        assert dict(usage.cached_by_modality) == {"audio": 100}
        assert dict(usage.output_by_modality) == {"text": 20}
        assert Usage(**usage.as_dict()) == usage

    def test_audio_is_priced_at_the_audio_rate(self) -> None:
        """gemini-2.5-flash: 400 text × $0.30 + 500 audio × $1 + 100 cached audio × $0.10
        + 20 out × $2.50 per 1M; flex at half of each."""
        usage = Usage(
            input_tokens=1000,
            output_tokens=20,
            cached_input_tokens=100,
            input_by_modality={"text": 400, "audio": 600},
            cached_by_modality={"audio": 100},
        )
        p = prices("gemini", "gemini-2.5-flash")
        expected = per_million((400, "0.30"), (500, "1.00"), (100, "0.10"), (20, "2.50"))
        assert p.cost(Tier.STANDARD, usage) == expected
        assert p.cost(Tier.FLEX, usage) * 2 == expected

    def test_a_model_with_one_price_for_all_modalities_prices_audio_as_input(self) -> None:
        """gemini-3.5-flash-lite lists one price "(text / image / video / audio)"."""
        p = prices("gemini", "gemini-3.5-flash-lite")
        audio = Usage(input_tokens=1000, input_by_modality={"audio": 1000})
        assert p.cost(Tier.STANDARD, audio) == p.cost(Tier.STANDARD, Usage(input_tokens=1000))

    @pytest.mark.parametrize(
        ("usage", "what"),
        [
            (Usage(input_tokens=10, input_by_modality={"document": 10}), "document input"),
            (Usage(output_tokens=10, output_by_modality={"image": 10}), "image output"),
        ],
    )
    def test_a_modality_without_a_price_is_refused(self, usage: Usage, what: str) -> None:
        """The catalog raises rather than price an unknown modality at the text rate."""
        with pytest.raises(UnpricedUsageError, match=what) as caught:
            prices("gemini", "gemini-2.5-flash").cost(Tier.STANDARD, usage)
        assert caught.value.reason == UNPRICED_MODALITY

    def test_settle_reports_an_unpriced_modality_with_no_fee(self) -> None:
        """The priced result carries ``model-unpriced-modality``, costs None, no fee."""
        usage = Usage(input_tokens=10, input_by_modality={"document": 10})
        priced = price(
            prices("gemini", "gemini-2.5-flash"), usage, Tier.FLEX, flex_route=True, fee_rate=RATE
        )
        assert (priced.standard_cost, priced.actual_cost) == (None, None)
        assert priced.fee == 0
        assert priced.reason == UNPRICED_MODALITY


class TestThroughTheProxy:
    def test_a_cache_write_request_is_priced_with_its_writes(self, proxy: Proxy) -> None:
        """Responses API, gpt-6.1-terra flex: 30-minute and 12-hour writes in the ledger."""
        raw = proxy.client().responses.with_raw_response.create(
            model="gpt-6.1-terra",
            input="hello",
            extra_headers={
                "x-emulator": "flex_queue=0.01;prompt_tokens=10000;cached_tokens=1000;"
                "cache_write_tokens=3000;cache_write_12h_tokens=2000"
            },
            extra_body={"start_within": "2s"},
        )
        response = raw.parse()
        assert response.usage is not None
        assert response.usage.input_tokens_details.cache_write_tokens == 5000
        record = proxy.record(raw.headers["x-flexroute-request-id"])
        usage = Usage(**record["usage"])
        assert (usage.cache_write_tokens, usage.cache_write_12h_tokens) == (3000, 2000)
        out = response.usage.output_tokens
        standard = per_million(
            (4000, "1.00"), (1000, "0.05"), (3000, "1.25"), (2000, "2.50"), (out, "5.00")
        )
        assert Decimal(record["standard_cost_usd"]) == standard
        assert Decimal(record["cost_usd"]) * 2 == standard
        charge = compute_charge(standard, standard / 2, billable=True)
        assert Decimal(record["fee_usd"]) == charge.fee > 0
        assert record["reason"] is None

    def test_a_gemini_audio_request_is_priced_at_the_audio_rate(self, proxy: Proxy) -> None:
        """gemini-2.5-flash flex with 600 of 1000 prompt tokens in audio."""
        client = genai.Client(
            api_key="test-gemini-key",
            http_options=types.HttpOptions(base_url=proxy.url, api_version="v1beta"),
        )
        headers = {
            "x-emulator": "flex_queue=0.01;prompt_tokens=1000;audio_tokens=600",
            "x-flex-start-within": "2s",
        }
        response = client.models.generate_content(
            model="gemini-2.5-flash",
            contents="transcribe",
            config=types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers)),
        )
        meta = response.usage_metadata
        assert meta is not None
        assert meta.prompt_tokens_details is not None
        assert {(d.modality, d.token_count) for d in meta.prompt_tokens_details} == {
            (types.MediaModality.TEXT, 400),
            (types.MediaModality.AUDIO, 600),
        }
        assert response.sdk_http_response is not None
        request_id = (response.sdk_http_response.headers or {})["x-flexroute-request-id"]
        record: dict[str, Any] = proxy.record(request_id)
        assert record["usage"]["input_by_modality"] == {"text": 400, "audio": 600}
        out = meta.candidates_token_count or 0
        standard = per_million((400, "0.30"), (600, "1.00"), (out, "2.50"))
        assert Decimal(record["standard_cost_usd"]) == standard
        assert Decimal(record["cost_usd"]) * 2 == standard
        assert (
            Decimal(record["fee_usd"]) == compute_charge(standard, standard / 2, billable=True).fee
        )
