"""``flexroute prices check`` and the catalog fixes of issue 10, item 17."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from flexroute.catalog import ModelPrices, default_catalog
from flexroute.usage import Tier

PRICING = Path(__file__).resolve().parent.parent / "pricing"


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flexroute.cli", "prices", "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def lookup(provider: str, model: str) -> ModelPrices:
    found = default_catalog().lookup(provider, model)
    assert found is not None, model
    return found


class TestPricesCheck:
    def test_the_shipped_catalog_agrees_with_genai_prices(self) -> None:
        """The real command exits 0, names every documented override and its reason."""
        result = run_check()
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 difference(s) in priced fields" in result.stdout
        assert "The catalog agrees with genai-prices" in result.stdout
        assert re.search(
            r"gpt-5\.5-pro\s+long_context\.flex\.input\s+30\s+15\s+\S+\s+override", result.stdout
        )
        assert "override openai gpt-5.4 flex.cached_input: Exactly half" in result.stdout
        assert "DIFFERS" not in result.stdout

    def test_a_changed_price_fails_the_check_and_is_printed(self, tmp_path: Path) -> None:
        """A catalog copy with gpt-5's standard input altered: exit 1, the line says so."""
        copy = tmp_path / "pricing"
        shutil.copytree(PRICING, copy)
        openai = copy / "openai.toml"
        text = openai.read_text(encoding="utf-8")
        entry = '[models."gpt-5".standard]\ninput = "1.25"'
        assert entry in text
        openai.write_text(text.replace(entry, '[models."gpt-5".standard]\ninput = "1.50"'))
        result = run_check("--catalog", str(copy))
        assert result.returncode == 1, result.stdout + result.stderr
        line = next(x for x in result.stdout.splitlines() if re.match(r"openai\s+gpt-5\s", x))
        assert line.split()[:5] == ["openai", "gpt-5", "standard.input", "1.5", "1.25"]
        assert line.rstrip().endswith("DIFFERS")
        assert "1 difference(s) in priced fields" in result.stdout

    def test_an_override_no_longer_matching_genai_prices_fails(self, tmp_path: Path) -> None:
        """An override names the figure genai-prices had; when theirs changes, it stops hiding."""
        copy = tmp_path / "pricing"
        shutil.copytree(PRICING, copy)
        openai = copy / "openai.toml"
        text = openai.read_text(encoding="utf-8")
        old = 'field = "flex.cached_input"\ntheirs = "0.13"'
        assert old in text
        openai.write_text(text.replace(old, 'field = "flex.cached_input"\ntheirs = "0.12"'))
        result = run_check("--catalog", str(copy))
        assert result.returncode == 1
        assert re.search(
            r"gpt-5\.4\s+flex\.cached_input\s+0\.125\s+0\.13\s+\S+\s+DIFFERS", result.stdout
        )


class TestCatalogFixes:
    def test_the_missing_flex_capable_models_are_priced(self) -> None:
        """gpt-5.4-pro, gpt-5.5-pro, gemini-3.1-flash-lite (GA), 3.6 and 3.7 Flash route flex."""
        for provider, model in [
            ("openai", "gpt-5.4-pro"),
            ("openai", "gpt-5.5-pro"),
            ("gemini", "gemini-3.1-flash-lite"),
            ("gemini", "gemini-3.6-flash"),
            ("gemini", "gemini-3.7-flash"),
        ]:
            assert lookup(provider, model).flex_capable, model
        preview = lookup("gemini", "gemini-3.1-flash-lite-preview")
        assert preview.model == "gemini-3.1-flash-lite"

    def test_gpt_5_6_priority_prices_cache_writes(self) -> None:
        """Every gpt-5.6 tier prices cache writes at 1.25× its input, long context too."""
        for model in ("gpt-5.6-sol", "gpt-5.6-terra", "gpt-5.6-luna"):
            p = lookup("openai", model)
            for table in (p.tiers, p.long_context_tiers):
                for tier in table.values():
                    assert tier.cache_write == tier.input * Decimal("1.25"), model

    def test_gemini_priority_is_1_8_times_standard_where_published(self) -> None:
        """Gemini 3.7 and 3.8 Flash price priority at 1.8× standard."""
        for model in ("gemini-3.7-flash", "gemini-3.8-flash"):
            p = lookup("gemini", model)
            standard, priority = p.tiers[Tier.STANDARD], p.tiers[Tier.PRIORITY]
            assert priority.input == standard.input * Decimal("1.8")
            assert priority.output == standard.output * Decimal("1.8")

    def test_entries_changed_for_this_issue_carry_the_date_they_were_checked(self) -> None:
        """The re-checked entries say so."""
        for provider, model in [("openai", "gpt-5.6-sol"), ("gemini", "gemini-3.7-flash")]:
            assert lookup(provider, model).checked.isoformat() == "2026-12-02"
