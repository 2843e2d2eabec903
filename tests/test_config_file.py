"""Settings from a TOML file and the environment; every mistake is one line naming the
setting, the value and the fix (issue 12, item 6)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flexroute.config_file import describe, env_name, load_settings, unknown_environment
from flexroute.errors import ConfigError

ROOT = Path(__file__).parent.parent


def flexroute_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("FLEXROUTE_")}
    return subprocess.run(
        [sys.executable, "-m", "flexroute.cli", *args],
        capture_output=True, text=True, timeout=60, env=base | (env or {}), check=False,
    )  # fmt: skip


class TestConfigFile:
    def test_the_file_sets_and_the_environment_wins(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """File over defaults, environment over file."""
        path = tmp_path / "flexroute.toml"
        path.write_text('fee_rate = "0.10"\nopenai_base_url = "http://127.0.0.1:9/v1"\n')
        monkeypatch.setenv("FLEXROUTE_FEE_RATE", "0.15")
        settings = load_settings(path)
        assert str(settings.fee_rate) == "0.15"
        assert settings.openai_base_url == "http://127.0.0.1:9/v1"

    def test_a_misspelled_key_names_the_fix(self, tmp_path: Path) -> None:
        """An unknown key is refused with the closest real name."""
        path = tmp_path / "flexroute.toml"
        path.write_text("[flexroute]\nfee_rat = 0.1\n")
        with pytest.raises(
            ConfigError, match=r"unknown setting 'fee_rat' \(did you mean 'fee_rate'"
        ):
            load_settings(path)

    def test_a_bad_value_is_one_line_without_the_secret(self, tmp_path: Path) -> None:
        """A bad value names its variable and the rule; a secret's value is never echoed."""
        path = tmp_path / "flexroute.toml"
        path.write_text('fee_rate = "2"\n')
        with pytest.raises(ConfigError) as raised:
            load_settings(path)
        assert str(raised.value).startswith("setting FLEXROUTE_FEE_RATE (or fee_rate in ")
        assert "between 0 and 1" in str(raised.value)

    def test_unknown_environment_variables_are_found(self) -> None:
        """FLEXROUTE_FEE_RTAE does nothing silently no more."""
        found = unknown_environment({"FLEXROUTE_FEE_RTAE": "1", "FLEXROUTE_FEE_RATE": "0.2"})
        assert found == ["FLEXROUTE_FEE_RTAE (did you mean FLEXROUTE_FEE_RATE?)"]

    def test_describe_masks_secrets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Provider keys and passwords never appear in the effective settings."""
        monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-canary")
        monkeypatch.setenv("FLEXROUTE_DATABASE_URL", "postgresql://u:pw-canary@db:5432/x")
        monkeypatch.setenv("FLEXROUTE_REDIS_URL", "redis://:redis-canary@cache:6379/0")
        rows = dict(describe(load_settings()))
        assert rows["OPENAI_API_KEY"] == "*** (set)"
        assert "pw-canary" not in rows["FLEXROUTE_DATABASE_URL"]
        assert "redis-canary" not in rows["FLEXROUTE_REDIS_URL"]


class TestCommands:
    def test_config_check_prints_and_exits_non_zero_on_a_problem(self, tmp_path: Path) -> None:
        """`flexroute config check` prints the effective settings; a typo fails it."""
        path = tmp_path / "flexroute.toml"
        path.write_text('default_start_within = "30s"\n')
        good = flexroute_cli("--config", str(path), "config", "check")
        assert good.returncode == 0, good.stderr
        assert "FLEXROUTE_DEFAULT_START_WITHIN" in good.stdout
        typo = flexroute_cli("config", "check", env={"FLEXROUTE_FEE_RTAE": "1"})
        assert typo.returncode == 1
        assert "FLEXROUTE_FEE_RTAE" in typo.stderr

    def test_a_bad_setting_is_one_line_not_a_traceback(self) -> None:
        """serve with a bad base URL says what is wrong in one line."""
        done = flexroute_cli("serve", env={"FLEXROUTE_OPENAI_BASE_URL": "ftp://x"})
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines() == [
            "flexroute: setting FLEXROUTE_OPENAI_BASE_URL = 'ftp://x': base URL must start "
            "with http:// or https://, got 'ftp://x'"
        ]

    def test_version(self) -> None:
        """`flexroute --version` prints the package version."""
        done = flexroute_cli("--version")
        assert done.stdout.startswith("flexroute ")


SAMPLE = ROOT / "docs" / "flexroute.example.toml"


class TestSample:
    """docs/flexroute.example.toml, the README's production sample (issue 12, item 8)."""

    def test_it_sets_every_setting_but_the_secrets(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every non-secret setting is in the file and loads through the real loader."""
        import os
        import tomllib

        from pydantic import SecretStr

        from flexroute.config import Settings

        for name in [n for n in os.environ if n.startswith("FLEXROUTE_")]:
            monkeypatch.delenv(name)
        written = tomllib.loads(SAMPLE.read_text())["flexroute"]
        secrets = {
            name
            for name, field in Settings.model_fields.items()
            if field.annotation in (SecretStr, SecretStr | None)
        }
        assert secrets >= {"openai_api_key", "secret_key", "admin_key", "stripe_api_key"}
        assert set(written) == set(Settings.model_fields) - secrets
        settings = load_settings(SAMPLE)
        assert settings.workers == 2
        assert settings.redis_url == "redis://redis.internal:6379/0"
        assert settings.rate_limits == {"free": 10, "elevated": 60, "paid": 300}
        assert settings.default_start_within == 30.0
        for secret in secrets:  # named in the file's header, so a reader knows where they go
            assert env_name(secret) in SAMPLE.read_text()

    def test_config_check_accepts_it(self) -> None:
        """`flexroute config check --config docs/flexroute.example.toml` exits 0."""
        done = flexroute_cli("config", "check", "--config", str(SAMPLE))
        assert done.returncode == 0, done.stderr
        assert "redis://redis.internal:6379/0" in done.stdout


class TestHelp:
    def test_every_option_has_help_with_its_default(self) -> None:
        """Each argument of every command says what it is, and its default where it has one."""
        import argparse

        from flexroute.cli import _parser

        def walk(parser: argparse.ArgumentParser, path: str) -> None:
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    for name, sub in action.choices.items():
                        walk(sub, f"{path} {name}")
                elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
                    where = f"{path} {action.dest}"
                    assert action.help, where
                    if action.default not in (None, False):
                        assert str(action.default) in action.help, where
                    if action.dest in ("config", "config_file"):
                        assert "FLEXROUTE_CONFIG" in action.help, where

        walk(_parser(), "flexroute")
