"""Every setting, its default and its validation: read once at start-up, then passed down."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "Config",
    "ConfigError",
    "EnrichConfig",
    "FeedsConfig",
    "LimitsConfig",
    "ScheduleConfig",
    "ServerConfig",
    "SourceConfig",
    "default_config_path",
    "load_config",
    "parse_duration",
]

ENV_PREFIX = "FEEDWORKER_"
_NOT_SETTINGS = frozenset({ENV_PREFIX + "CONFIG", ENV_PREFIX + "CLOCK"})
DEFAULT_CONFIG = Path("config/feedworker.yaml")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


def parse_duration(value: object) -> float:
    """`30s`, `5m`, `1h`, `7d`, or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h or 7d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 30s, 5m, 1h or 7d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Section):
    path: Path
    include: tuple[str, ...] = ("**/*.txt", "**/*.md")
    max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    settle_s: float = Field(default=0.0, ge=0)


class FeedsConfig(_Section):
    dir: Path = Path("feeds")
    base_url: str = "http://localhost:8080/feeds/"
    title: str = "News"
    max_entries: int = Field(default=50, ge=1, le=10_000)

    @field_validator("base_url")
    @classmethod
    def _absolute_base(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an absolute http(s) URL")
        return value if value.endswith("/") else value + "/"

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()


class ScheduleConfig(_Section):
    every: float | None = 300.0
    cron: str | None = None
    jitter_s: float = Field(default=0.0, ge=0)

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, value: object) -> float | None:
        if value is None or value == "":
            return None
        seconds = parse_duration(value)
        if seconds < 1:
            raise ValueError("must be at least 1s")
        return seconds

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if len(value.split()) != 5:
            raise ValueError("must have five fields: minute hour day month weekday")
        return value.strip()


class EnrichConfig(_Section):
    fetch: bool = True
    allow_private_networks: bool = False
    ttl: float = 7 * 86400.0
    retry_after: float = 3600.0
    max_fetches: int = Field(default=200, ge=0)
    max_seconds: float = Field(default=20.0, ge=0)
    timeout_s: float = Field(default=10.0, gt=0)
    max_bytes: int = Field(default=1_000_000, gt=0)
    concurrency: int = Field(default=8, ge=1)
    per_host: int = Field(default=2, ge=1)

    @field_validator("ttl", "retry_after", "max_seconds", "timeout_s", mode="before")
    @classmethod
    def _durations(cls, value: object) -> float:
        return parse_duration(value)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token: str = Field(default="", repr=False)
    grace_s: float = Field(default=30.0, ge=0)
    healthy_within: float = 3600.0

    @field_validator("grace_s", "healthy_within", mode="before")
    @classmethod
    def _durations(cls, value: object) -> float:
        return parse_duration(value)


class LimitsConfig(_Section):
    max_topics: int = Field(default=20, ge=1)
    max_related: int = Field(default=50, ge=0)
    max_images: int = Field(default=20, ge=0)
    max_title_chars: int = Field(default=300, ge=10)
    max_excerpt_chars: int = Field(default=2000, ge=10)
    max_body_chars: int = Field(default=200_000, ge=100)


class Config(_Section):
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    database: str = "data/feedworker.db"
    feeds: FeedsConfig = FeedsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    enrich: EnrichConfig = EnrichConfig()
    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    busy_timeout_s: float = Field(default=30.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _database(self) -> Config:
        if not self.database.strip():
            raise ValueError("database: must not be empty")
        return self

    @property
    def database_url(self) -> str:
        """An SQLAlchemy URL; a bare path means an SQLite file."""
        if "://" in self.database:
            return self.database
        return f"sqlite:///{self.database}"

    @property
    def database_path(self) -> Path | None:
        """The SQLite file, when the database is one."""
        if "://" not in self.database:
            return Path(self.database)
        prefix = "sqlite:///"
        if self.database.startswith(prefix) and self.database != prefix + ":memory:":
            return Path(self.database[len(prefix):])
        return None


def default_config_path() -> Path:
    return Path(os.environ.get(ENV_PREFIX + "CONFIG") or DEFAULT_CONFIG)


def load_config(path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file, apply `FEEDWORKER_<SECTION>__<KEY>` overrides, validate, resolve paths."""
    path = Path(path) if path is not None else default_config_path()
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        raw = yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {_one_line(exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    from_env: dict[str, str] = {}
    raw = _apply_env(raw, environ, from_env)
    raw.pop("path", None)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        key, message = _describe(exc)
        where = f"environment variable {from_env[key]}" if key in from_env else str(path)
        raise ConfigError(f"{where}: {key}: {message}") from None
    return _resolve_paths(config, path.resolve().parent).model_copy(update={"path": path.resolve()})


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], from_env: dict[str, str]) -> dict[str, Any]:
    raw = {key: (dict(value) if isinstance(value, dict) else value) for key, value in raw.items()}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if not all(parts) or len(parts) > 2:
            raise ConfigError(f"environment variable {name}: expected FEEDWORKER_<SECTION>__<KEY>")
        value = _env_value(name, environ[name])
        from_env[".".join(parts)] = name
        if len(parts) == 1:
            raw[parts[0]] = value
            continue
        section, key = parts
        current = raw.get(section)
        if current is None:
            current = raw[section] = {}
        if not isinstance(current, dict):
            raise ConfigError(f"environment variable {name}: {section} is not a section")
        current[key] = value
    return raw


def _env_value(name: str, text: str) -> Any:
    # YAML scalars, so that `FEEDWORKER_ENRICH__FETCH=false` is a bool and a list can be given
    # as `[...]`; a value YAML cannot read is taken as the plain string.
    try:
        return yaml.load(text, Loader=yaml.CSafeLoader) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _resolve_paths(config: Config, base: Path) -> Config:
    def resolve(value: Path) -> Path:
        return Path(os.path.normpath(value if value.is_absolute() else base / value))

    sources = tuple(src.model_copy(update={"path": resolve(src.path)}) for src in config.sources)
    feeds = config.feeds.model_copy(update={"dir": resolve(config.feeds.dir)})
    database = config.database
    if "://" not in database:
        database = str(resolve(Path(database)))
    elif database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        relative = database[len("sqlite:///"):]
        if relative and relative != ":memory:":
            database = "sqlite:///" + str(resolve(Path(relative)))
    return config.model_copy(update={"sources": sources, "feeds": feeds, "database": database})


def _describe(exc: ValidationError) -> tuple[str, str]:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    key = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    message = message.removeprefix("Value error, ")
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return key, f"{message}{more}"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
