"""The price catalog: loading and validating pricing/*.toml, lookup, exact costs (SPEC §3)."""

from __future__ import annotations

import datetime
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from flexroute.catalog import Catalog, ModelPrices, TierPrices, default_catalog
from flexroute.errors import CatalogError
from flexroute.usage import Tier, Usage

GOOD_ENTRY = """
[models."gpt-5"]
aliases = ["gpt-5-2025-08-07"]
source = "https://developers.openai.com/api/docs/pricing"
checked = 2026-11-20

[models."gpt-5".standard]
input = "1.25"
cached_input = "0.125"
output = "10.00"

[models."gpt-5".flex]
input = "0.625"
cached_input = "0.0625"
output = "{flex_output}"
"""


EXPECTED_MODELS = [
    ("openai", "gpt-5"),
    ("openai", "o3"),
    ("openai", "o4-mini"),
    ("openai", "gpt-6.1-terra"),
    ("gemini", "gemini-2.5-pro"),
    ("gemini", "gemini-3.8-flash"),
    ("anthropic", "claude-opus-4-5"),
]
NOT_FLEX_CAPABLE = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4.1-mini"),
    ("openai", "gpt-6.2-sol"),
    ("anthropic", "claude-sonnet-4-5"),
]
EXAMPLE_SOURCE = "https://example.com/pricing"
CHECKED = datetime.date(2026, 11, 23)


def write_catalog(tmp_path: Path, text: str, name: str = "openai.toml") -> Path:
    directory = tmp_path / "pricing"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(CatalogError) as caught:
        Catalog.load(write_catalog(tmp_path, text))
    return str(caught.value)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return default_catalog()


def lookup(catalog: Catalog, provider: str, model: str) -> ModelPrices:
    prices = catalog.lookup(provider, model)
    assert prices is not None, f"{provider} {model} is not priced"
    return prices


class TestShippedCatalog:
    def test_loads_all_three_providers(self, catalog: Catalog) -> None:
        """The packaged catalog loads and prices OpenAI, Gemini and Anthropic models."""
        providers = {prices.provider for prices in catalog.models()}
        assert providers == {"openai", "gemini", "anthropic"}
        for provider, model in EXPECTED_MODELS:
            lookup(catalog, provider, model)

    def test_every_entry_names_its_source_and_check_date(self, catalog: Catalog) -> None:
        """Each model carries an https source and the date its prices were checked."""
        for prices in catalog.models():
            assert prices.source.startswith("https://"), prices.model
            assert isinstance(prices.checked, datetime.date), prices.model
            assert prices.checked >= datetime.date(2026, 1, 1), prices.model

    def test_flex_is_cheaper_than_standard_for_every_flex_capable_model(
        self, catalog: Catalog
    ) -> None:
        """Every OpenAI and Gemini flex price, short and long context, is below standard."""
        flex_capable = [prices for prices in catalog.models() if prices.flex_capable]
        assert {prices.provider for prices in flex_capable} == {"openai", "gemini"}
        for prices in flex_capable:
            for table in (prices.tiers, prices.long_context_tiers):
                if Tier.FLEX not in table:
                    continue
                flex, standard = table[Tier.FLEX], table[Tier.STANDARD]
                assert flex.input < standard.input, prices.model
                assert flex.cached_input < standard.cached_input, prices.model
                assert flex.output < standard.output, prices.model

    def test_long_context_flex_is_priced_wherever_flex_and_long_context_are(
        self, catalog: Catalog
    ) -> None:
        """A flex-capable model with a long-context rule prices flex above the threshold too."""
        for prices in catalog.models():
            if prices.flex_capable and prices.long_context_threshold is not None:
                assert Tier.FLEX in prices.long_context_tiers, prices.model

    def test_some_models_are_priced_but_not_flex_capable(self, catalog: Catalog) -> None:
        """gpt-4o and Claude are priced for reporting but never flex-routed."""
        for provider, model in NOT_FLEX_CAPABLE:
            prices = lookup(catalog, provider, model)
            assert not prices.flex_capable
            assert Tier.STANDARD in prices.tiers

    def test_openai_and_gemini_pro_models_carry_their_long_context_rules(
        self, catalog: Catalog
    ) -> None:
        """OpenAI 1M-context models switch above 272K input tokens, Gemini Pro above 200K."""
        assert lookup(catalog, "openai", "gpt-5.5").long_context_threshold == 272_000
        assert lookup(catalog, "openai", "gpt-6.1-terra").long_context_threshold == 272_000
        assert lookup(catalog, "gemini", "gemini-2.5-pro").long_context_threshold == 200_000
        assert lookup(catalog, "gemini", "gemini-2.5-flash").long_context_threshold is None

    def test_load_without_a_directory_reads_the_packaged_catalog(self, catalog: Catalog) -> None:
        """``Catalog.load()`` finds the same catalog ``default_catalog()`` caches."""
        assert default_catalog() is catalog
        loaded = Catalog.load()
        assert [p.model for p in loaded.models()] == [p.model for p in catalog.models()]


class TestValidation:
    def test_a_good_file_loads_with_the_provider_named_after_it(self, tmp_path: Path) -> None:
        """``openai.toml`` yields OpenAI models with their tiers, aliases and provenance."""
        catalog = Catalog.load(write_catalog(tmp_path, GOOD_ENTRY.format(flex_output="5.00")))
        prices = lookup(catalog, "openai", "gpt-5-2025-08-07")
        assert (prices.provider, prices.model) == ("openai", "gpt-5")
        assert prices.checked == datetime.date(2026, 11, 20)
        flex = TierPrices(Decimal("0.625"), Decimal("0.0625"), Decimal("5.00"))
        assert prices.tiers[Tier.FLEX] == flex

    def test_a_bad_price_names_file_model_and_field(self, tmp_path: Path) -> None:
        """A price that is not a decimal is reported with the file, model and dotted field."""
        message = load_error(tmp_path, GOOD_ENTRY.format(flex_output="abc"))
        assert message == (
            'pricing/openai.toml: model "gpt-5", field "flex.output": "abc" is not a decimal '
            'price; write prices as strings like "1.25"'
        )

    def test_float_prices_are_rejected(self, tmp_path: Path) -> None:
        """A bare TOML float is refused: prices must be strings to stay exact."""
        text = GOOD_ENTRY.format(flex_output="5.00").replace('input = "1.25"', "input = 1.25")
        message = load_error(tmp_path, text)
        assert 'model "gpt-5", field "standard.input"' in message
        assert "TOML float" in message

    def test_integer_prices_are_rejected(self, tmp_path: Path) -> None:
        """A bare TOML integer is refused too, with the same advice."""
        text = GOOD_ENTRY.format(flex_output="5.00").replace('output = "10.00"', "output = 10")
        assert 'field "standard.output": 10 is not a decimal price' in load_error(tmp_path, text)

    def test_more_than_six_decimal_places_are_rejected(self, tmp_path: Path) -> None:
        """A price finer than 1e-6 USD per 1M tokens would make costs inexact."""
        message = load_error(tmp_path, GOOD_ENTRY.format(flex_output="5.0000001"))
        assert 'field "flex.output": "5.0000001" has more than 6 decimal places' in message

    def test_trailing_zeros_do_not_count_as_decimal_places(self, tmp_path: Path) -> None:
        """``"5.00000000"`` is five dollars, so it is accepted."""
        catalog = Catalog.load(write_catalog(tmp_path, GOOD_ENTRY.format(flex_output="5.0000000")))
        assert lookup(catalog, "openai", "gpt-5").tiers[Tier.FLEX].output == 5

    @pytest.mark.parametrize("bad", ["-1.00", "1e3", " 1.25", "1,25", ""])
    def test_malformed_and_negative_prices_are_rejected(self, tmp_path: Path, bad: str) -> None:
        """Only plain non-negative decimals like ``"1.25"`` are prices."""
        message = load_error(tmp_path, GOOD_ENTRY.format(flex_output=bad))
        assert 'model "gpt-5", field "flex.output"' in message

    def test_a_missing_price_is_named(self, tmp_path: Path) -> None:
        """A tier without its output price says which field is required."""
        text = GOOD_ENTRY.format(flex_output="5.00").replace('output = "5.00"', "")
        assert 'model "gpt-5", field "flex.output": is required' in load_error(tmp_path, text)

    def test_unknown_fields_and_tiers_are_rejected(self, tmp_path: Path) -> None:
        """A misspelt field or a tier flexroute does not know is an error, not ignored."""
        text = GOOD_ENTRY.format(flex_output="5.00") + '\n[models."gpt-5".scale]\ninput = "1"\n'
        assert 'model "gpt-5", field "scale": is not a known field' in load_error(tmp_path, text)

    def test_source_must_be_an_https_url(self, tmp_path: Path) -> None:
        """Provenance is a link to the provider's page."""
        text = GOOD_ENTRY.format(flex_output="5.00").replace("https://", "ftp://")
        assert 'field "source": "ftp://' in load_error(tmp_path, text)

    def test_long_context_must_not_price_an_unpriced_tier(self, tmp_path: Path) -> None:
        """A long-context priority price needs a priority price below the threshold too."""
        text = GOOD_ENTRY.format(flex_output="5.00") + textwrap.dedent("""
            [models."gpt-5".long_context]
            threshold_input_tokens = 272000
            [models."gpt-5".long_context.standard]
            input = "2.50"
            output = "15.00"
            [models."gpt-5".long_context.priority]
            input = "5.00"
            output = "30.00"
        """)
        message = load_error(tmp_path, text)
        assert "long_context.priority is priced but priority is not" in message

    def test_invalid_toml_names_the_file(self, tmp_path: Path) -> None:
        """A syntax error is a CatalogError naming the file."""
        assert load_error(tmp_path, "[models.\n").startswith("pricing/openai.toml: not valid TOML")

    def test_an_alias_may_not_name_two_models(self, tmp_path: Path) -> None:
        """Two models claiming the same name would make lookup ambiguous."""
        text = GOOD_ENTRY.format(flex_output="5.00") + textwrap.dedent("""
            [models."gpt-5-chat"]
            aliases = ["gpt-5"]
            source = "https://developers.openai.com/api/docs/pricing"
            checked = 2026-11-20
            [models."gpt-5-chat".standard]
            input = "1.25"
            output = "10.00"
        """)
        assert '"gpt-5" names both model' in load_error(tmp_path, text)

    def test_a_directory_without_price_files_is_an_error(self, tmp_path: Path) -> None:
        """An empty or missing catalog directory cannot silently price nothing."""
        with pytest.raises(CatalogError, match=r"no \*\.toml files"):
            Catalog.load(tmp_path)
        with pytest.raises(CatalogError, match="does not exist"):
            Catalog.load(tmp_path / "missing")


class TestLookup:
    @pytest.mark.parametrize(
        ("provider", "name", "model"),
        [
            ("openai", "gpt-5", "gpt-5"),
            ("openai", "gpt-5-2025-08-07", "gpt-5"),
            ("openai", "gpt-5.4-2026-03-05", "gpt-5.4"),
            ("openai", "GPT-5-Mini", "gpt-5-mini"),
            ("openai", "gpt-5.6", "gpt-5.6-sol"),
            ("openai", "gpt-4o-2024-11-20", "gpt-4o"),
            ("openai", "gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
            ("gemini", "models/gemini-2.5-flash", "gemini-2.5-flash"),
            ("gemini", "gemini-2.5-flash-001", "gemini-2.5-flash"),
            ("google", "gemini-2.5-pro", "gemini-2.5-pro"),
            ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ],
    )
    def test_finds_names_aliases_snapshots_and_paths(
        self, catalog: Catalog, provider: str, name: str, model: str
    ) -> None:
        """Exact names, aliases, dated snapshots and ``models/`` paths find the priced model."""
        assert lookup(catalog, provider, name).model == model

    @pytest.mark.parametrize(
        ("provider", "name"),
        [
            ("openai", "gpt-3.5-turbo"),
            ("openai", "ft:gpt-4o-mini:org::abc123"),
            ("openai", "gemini-2.5-flash"),
            ("gemini", "gemini-1.0-pro"),
            ("mistral", "mistral-large"),
        ],
    )
    def test_unknown_models_are_unpriced(self, catalog: Catalog, provider: str, name: str) -> None:
        """A model (or provider) the catalog does not list is None: served, never billed."""
        assert catalog.lookup(provider, name) is None


class TestCost:
    def test_prices_cached_and_uncached_input_and_output_at_standard(
        self, catalog: Catalog
    ) -> None:
        """gpt-5: 6,000 × $1.25 + 4,000 cached × $0.125 + 2,000 out × $10 per 1M = $0.028."""
        usage = Usage(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=2_000)
        assert lookup(catalog, "openai", "gpt-5").cost(Tier.STANDARD, usage) == Decimal("0.028")

    def test_prices_the_same_usage_at_flex(self, catalog: Catalog) -> None:
        """gpt-5 flex: 6,000 × $0.625 + 4,000 × $0.0625 + 2,000 × $5 per 1M = $0.014."""
        usage = Usage(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=2_000)
        assert lookup(catalog, "openai", "gpt-5").cost(Tier.FLEX, usage) == Decimal("0.014")

    def test_costs_are_exact_pico_usd(self, catalog: Catalog) -> None:
        """One token at $0.0375 per 1M costs exactly $0.0000000375, as a 12-place Decimal."""
        cost = lookup(catalog, "gemini", "gemini-3.8-flash").cost(
            Tier.FLEX, Usage(input_tokens=1, cached_input_tokens=1)
        )
        assert cost == Decimal("0.0000000375")
        assert cost.as_tuple().exponent == -12

    def test_cache_writes_use_their_own_prices_when_listed(self, catalog: Catalog) -> None:
        """claude-sonnet-4-6: 1,000 uncached × $3 + 2,000 5m writes × $3.75 + 1,000 1h writes
        × $6 + 3,000 reads × $0.30 + 500 out × $15 per 1M = $0.0249."""
        usage = Usage(
            input_tokens=7_000,
            cache_write_tokens=2_000,
            cache_write_1h_tokens=1_000,
            cached_input_tokens=3_000,
            output_tokens=500,
        )
        prices = lookup(catalog, "anthropic", "claude-sonnet-4-6")
        assert prices.cost(Tier.STANDARD, usage) == Decimal("0.0249")

    def test_cache_writes_price_as_input_when_not_billed_separately(self, catalog: Catalog) -> None:
        """OpenAI before GPT-5.6 bills cache writes as plain input."""
        prices = lookup(catalog, "openai", "gpt-5")
        writes = Usage(input_tokens=1_000, cache_write_tokens=600, cache_write_1h_tokens=400)
        plain = Usage(input_tokens=1_000)
        assert prices.cost(Tier.STANDARD, writes) == prices.cost(Tier.STANDARD, plain)

    def test_a_prompt_at_the_threshold_keeps_the_short_context_rates(
        self, catalog: Catalog
    ) -> None:
        """gpt-5.5 at exactly 272,000 input tokens: 272,000 × $5 + 1,000 × $30 = $1.39."""
        usage = Usage(input_tokens=272_000, output_tokens=1_000)
        assert lookup(catalog, "openai", "gpt-5.5").cost(Tier.STANDARD, usage) == Decimal("1.39")

    def test_one_token_above_the_threshold_reprices_the_whole_request(
        self, catalog: Catalog
    ) -> None:
        """gpt-5.5 at 272,001: 272,001 × $10 + 1,000 × $45 (output too) = $2.765010."""
        usage = Usage(input_tokens=272_001, output_tokens=1_000)
        prices = lookup(catalog, "openai", "gpt-5.5")
        assert prices.cost(Tier.STANDARD, usage) == Decimal("2.76501")
        assert prices.cost(Tier.FLEX, usage) == Decimal("1.382505")

    def test_gemini_pro_reprices_above_200k_and_flex_is_half_the_long_rate(
        self, catalog: Catalog
    ) -> None:
        """gemini-2.5-pro, 200,001 in + 2 out: 200,001 × $2.50 + 2 × $15 = $0.5000325; flex
        at half the long rate: 200,001 × $1.25 + 2 × $7.50 = $0.25001625."""
        prices = lookup(catalog, "gemini", "gemini-2.5-pro")
        at, above = Usage(input_tokens=200_000), Usage(input_tokens=200_001, output_tokens=2)
        assert prices.cost(Tier.STANDARD, at) == Decimal("0.25")
        assert prices.cost(Tier.STANDARD, above) == Decimal("0.5000325")
        assert prices.cost(Tier.FLEX, above) == Decimal("0.25001625")

    def test_a_tier_without_a_price_is_an_error(self, catalog: Catalog) -> None:
        """Pricing gpt-4o at flex raises: the catalog has no such price."""
        with pytest.raises(CatalogError, match='model "gpt-4o" has no flex price'):
            lookup(catalog, "openai", "gpt-4o").cost(Tier.FLEX, Usage(input_tokens=1))

    def test_a_tier_without_a_long_context_price_is_an_error(self, catalog: Catalog) -> None:
        """gpt-5.5 priority excludes long context, so a long prompt has no priority price."""
        with pytest.raises(CatalogError, match="no priority price for prompts over 272000"):
            lookup(catalog, "openai", "gpt-5.5").cost(Tier.PRIORITY, Usage(input_tokens=300_000))


class TestModelPrices:
    def test_a_catalog_can_be_built_from_prices_in_code(self) -> None:
        """Tests and tools can build a Catalog from ModelPrices without files."""
        tier = TierPrices(Decimal("1"), Decimal("0.1"), Decimal("2"))
        prices = ModelPrices(
            "openai", "m", {Tier.STANDARD: tier}, None, {}, EXAMPLE_SOURCE, CHECKED
        )
        assert Catalog([prices]).lookup("openai", "M") is prices
        assert not prices.flex_capable

    def test_a_model_needs_a_standard_price(self) -> None:
        """Without a standard price there is nothing to measure savings against."""
        tier = TierPrices(Decimal("1"), Decimal("0.1"), Decimal("2"))
        with pytest.raises(CatalogError, match="no standard price"):
            ModelPrices("openai", "m", {Tier.FLEX: tier}, None, {}, EXAMPLE_SOURCE, CHECKED)


class TestPriceTable:
    def test_lists_every_model_and_tier_with_the_long_context_rows(self, catalog: Catalog) -> None:
        """``flexroute prices`` shows each model, its tiers and its long-context prices."""
        table = catalog.price_table()
        for prices in catalog.models():
            assert prices.model in table
        assert "gpt-5.5 " in table
        assert "flex >272k" in table
        assert "standard >200k" in table
        header = "provider model tier input cached cache write output long"
        assert table.splitlines()[0].split() == header.split()
