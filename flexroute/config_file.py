"""Settings from the environment and a config file, with mistakes said in one line.

``load_settings()`` reads ``FLEXROUTE_CONFIG`` (or the path given): a TOML file whose keys
are the settings' names without the prefix (``fee_rate = "0.20"``, ``database_url = …``,
``openai_api_key = …``), optionally under a ``[flexroute]`` table. The environment wins over
the file, the file over the defaults. A misspelled key, a value of the wrong form or an
unreadable file raises :class:`~flexroute.errors.ConfigError` naming the setting, the value
and the fix — never a pydantic traceback.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from flexroute.config import Settings
from flexroute.errors import ConfigError

__all__ = ["describe", "env_name", "load_settings", "redact_url", "unknown_environment"]


def env_name(field: str) -> str:
    """The environment variable of a setting (provider keys keep the SDKs' own names)."""
    alias = Settings.model_fields[field].validation_alias
    return alias if isinstance(alias, str) else f"FLEXROUTE_{field.upper()}"


def load_settings(path: str | Path | None = None) -> Settings:
    """The effective settings: environment, then the config file, then the defaults."""
    path = path or os.environ.get("FLEXROUTE_CONFIG") or None
    values = _read(Path(path)) if path else {}
    try:
        if not values:
            return Settings()
        return _with_file(values)()
    except ValidationError as error:
        raise ConfigError(_explain(error, path)) from None


def _read(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read the config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"the config file {path} is not valid TOML: {error}") from None
    section = data.get("flexroute", data)
    if not isinstance(section, dict):
        raise ConfigError(f"the config file {path}: [flexroute] must be a table")
    unknown = [key for key in section if key not in Settings.model_fields]
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(key, list(Settings.model_fields), n=1)
        hint = f"did you mean {near[0]!r}?" if near else "see `flexroute config check`"
        raise ConfigError(f"the config file {path}: unknown setting {key!r} ({hint})")
    return dict(section)


def _with_file(values: dict[str, Any]) -> type[Settings]:
    class _File(PydanticBaseSettingsSource):
        def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
            return values.get(field_name), field_name, False

        def __call__(self) -> dict[str, Any]:
            return dict(values)

    class FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return init_settings, env_settings, _File(settings_cls), file_secret_settings

    return FromFile


def _explain(error: ValidationError, path: str | Path | None) -> str:
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "?"
        name = env_name(field) if field in Settings.model_fields else field
        where = f" (or {field} in {path})" if path else ""
        value = problem.get("input")
        shown = "***" if "key" in field or "secret" in field else repr(value)
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"setting {name}{where} = {shown}: {message}")
    return "; ".join(lines)


def unknown_environment(environ: dict[str, str] | None = None) -> list[str]:
    """``FLEXROUTE_*`` variables that name no setting (a typo silently does nothing)."""
    environ = dict(os.environ) if environ is None else environ
    known = {env_name(field) for field in Settings.model_fields} | {"FLEXROUTE_CONFIG"}
    out = []
    for name in sorted(environ):
        if name.startswith("FLEXROUTE_") and name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=1)
            out.append(f"{name}" + (f" (did you mean {near[0]}?)" if near else ""))
    return out


def describe(settings: Settings) -> list[tuple[str, str]]:
    """Every effective setting as (variable, value), secrets masked."""
    rows = []
    for field in Settings.model_fields:
        value = getattr(settings, field)
        if isinstance(value, SecretStr):
            shown = "*** (set)"
        elif value is None:
            shown = "(unset)"
        else:
            shown = str(value)
        if field.endswith(("_url", "_base")):  # a Redis or database URL may carry a password
            shown = redact_url(shown)
        rows.append((env_name(field), shown))
    return rows


def redact_url(url: str) -> str:
    """A URL without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
