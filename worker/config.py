"""Every setting, its default and its validation: read once at start-up, then passed down."""

from __future__ import annotations

import difflib
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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
# The database URL read from a file (a container secret), so that it is in no environment.
DATABASE_FILE_ENV = ENV_PREFIX + "DATABASE_FILE"
_NOT_SETTINGS = frozenset({ENV_PREFIX + "CONFIG", ENV_PREFIX + "CLOCK", DATABASE_FILE_ENV})
DEFAULT_CONFIG = Path("config/feedworker.yaml")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_HOUR = 3600.0
_DAY = 86400.0
_YEAR = 365 * _DAY
_MiB = 1024 * 1024

_TRUE = frozenset({"true", "yes", "on"})
_FALSE = frozenset({"false", "no", "off"})


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


def parse_duration(value: object) -> float:
    """`30s`, `5m`, `1h`, `7d`, or a number of seconds -> seconds (finite, not negative)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m, 1h or 7d")  # noqa: TRY004  (pydantic wants ValueError)
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond any float
            seconds = math.inf
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration such as 30s, 5m, 1h or 7d")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration such as 30s, 5m, 1h or 7d")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _show_seconds(seconds: float) -> str:
    for unit, size in (("d", _DAY), ("h", _HOUR), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _seconds_between(low: float, high: float, *, low_excluded: bool = False) -> AfterValidator:
    """Bounds of a duration, with a message in the units people write."""

    def check(seconds: float | None) -> float | None:
        if seconds is None:
            return None
        if seconds < low or (low_excluded and seconds == low):
            raise ValueError(
                f"must be more than {_show_seconds(low)}" if low_excluded else f"must be at least {_show_seconds(low)}"
            )
        if seconds > high:
            raise ValueError(f"must be at most {_show_seconds(high)}")
        return seconds

    return AfterValidator(check)


def _not_a_bool(value: object) -> object:
    # Pydantic's lax mode reads True as 1: a boolean is never a number here.
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")  # noqa: TRY004  (pydantic wants ValueError)
    return value


def _boolean(value: object) -> bool:
    # YAML's booleans, and their spellings as text (environment variables); never a number.
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError("must be true or false")


def _not_empty_path(value: object) -> object:
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


_DURATION_IN = BeforeValidator(parse_duration)
_NUMBER = BeforeValidator(_not_a_bool)
Bool = Annotated[bool, BeforeValidator(_boolean)]
FolderPath = Annotated[Path, BeforeValidator(_not_empty_path)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SourceConfig(_Section):
    path: FolderPath
    include: tuple[str, ...] = ("**/*.txt", "**/*.md")
    max_bytes: Annotated[int, _NUMBER, Field(gt=0, le=1024 * _MiB)] = 10 * _MiB
    settle_s: Annotated[float, _DURATION_IN, _seconds_between(0, _DAY)] = 0.0


class FeedsConfig(_Section):
    dir: FolderPath = Path("feeds")
    base_url: str = "http://localhost:8080/feeds/"
    title: str = "News"
    max_entries: Annotated[int, _NUMBER, Field(ge=1, le=10_000)] = 50
    opml_format: Literal["atom", "rss"] = "atom"  # the format of the topic feeds index.opml lists
    content: Literal["full", "summary"] = "full"  # summary: entries carry their excerpt and link only

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


def _every(value: object) -> float | None:
    if value is None or value == "":
        return None
    return parse_duration(value)


class ScheduleConfig(_Section):
    every: Annotated[float | None, BeforeValidator(_every), _seconds_between(1, _YEAR)] = 300.0
    cron: str | None = None
    jitter_s: Annotated[float, _DURATION_IN, _seconds_between(0, _DAY)] = 0.0

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if len(value.split()) != 5:
            raise ValueError("must have five fields: minute hour day month weekday")
        return value.strip()

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleConfig:
        if self.every is None and self.cron is None:
            raise ValueError("set either every or cron")
        return self


class EnrichConfig(_Section):
    fetch: Bool = True
    allow_private_networks: Bool = False
    ttl: Annotated[float, _DURATION_IN, _seconds_between(0, _YEAR)] = 7 * _DAY
    retry_after: Annotated[float, _DURATION_IN, _seconds_between(0, _YEAR)] = _HOUR
    max_fetches: Annotated[int, _NUMBER, Field(ge=0, le=1_000_000)] = 200
    max_seconds: Annotated[float, _DURATION_IN, _seconds_between(0, _DAY)] = 20.0
    timeout_s: Annotated[float, _DURATION_IN, _seconds_between(0, _HOUR, low_excluded=True)] = 10.0
    max_bytes: Annotated[int, _NUMBER, Field(gt=0, le=100 * _MiB)] = 1_000_000
    concurrency: Annotated[int, _NUMBER, Field(ge=1, le=256)] = 8
    per_host: Annotated[int, _NUMBER, Field(ge=1, le=64)] = 2


class WebSubConfig(_Section):
    # Hubs are the operator's own choice: loopback or private addresses are allowed, unlike
    # the related pages feedworker fetches.
    hubs: tuple[str, ...] = ()

    @field_validator("hubs")
    @classmethod
    def _hubs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for hub in value:
            if not re.match(r"^https?://[^/\s]+[^\s]*$", hub) or any(char in hub for char in "<>\"'"):
                raise ValueError(f"each hub must be an absolute http(s) URL, not {hub!r}")
        return tuple(dict.fromkeys(value))


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, _NUMBER, Field(ge=0, le=65535)] = 8080
    token: str = Field(default="", repr=False)
    grace_s: Annotated[float, _DURATION_IN, _seconds_between(0, _DAY)] = 30.0
    healthy_within: Annotated[float, _DURATION_IN, _seconds_between(0, _YEAR, low_excluded=True)] = _HOUR

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty (0.0.0.0 listens on every address)")
        if any(char.isspace() for char in value):
            raise ValueError("must be a host name or an IP address, without spaces")
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        # It travels in an HTTP header, which compares it stripped and as ASCII; the message
        # never shows the value.
        if value != value.strip() or not all(" " <= char <= "~" for char in value):
            raise ValueError("must be printable ASCII without leading or trailing spaces (value not shown)")
        return value


class LimitsConfig(_Section):
    max_topics: Annotated[int, _NUMBER, Field(ge=1, le=1_000)] = 20
    max_related: Annotated[int, _NUMBER, Field(ge=0, le=10_000)] = 50
    max_images: Annotated[int, _NUMBER, Field(ge=0, le=1_000)] = 20
    max_title_chars: Annotated[int, _NUMBER, Field(ge=10, le=10_000)] = 300
    max_excerpt_chars: Annotated[int, _NUMBER, Field(ge=10, le=1_000_000)] = 2000
    max_body_chars: Annotated[int, _NUMBER, Field(ge=100, le=100_000_000)] = 200_000


class Config(_Section):
    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    database: str = "data/feedworker.db"
    feeds: FeedsConfig = FeedsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    enrich: EnrichConfig = EnrichConfig()
    websub: WebSubConfig = WebSubConfig()
    server: ServerConfig = ServerConfig()
    limits: LimitsConfig = LimitsConfig()
    # SQLite keeps its busy timeout as an int of milliseconds (at most 24.8 days).
    busy_timeout_s: Annotated[float, _DURATION_IN, _seconds_between(0, _DAY, low_excluded=True)] = 30.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # `serve` watches the source folders and runs an incremental cycle for what changed.
    watch: Bool = True
    path: Path | None = Field(default=None, exclude=True)

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

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
            return Path(self.database[len(prefix) :])
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

    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(_redact(f"{_where(key, from_env, path)}: {key}: {message}", raw))

    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_redact(_joined(_describe(exc), from_env, path), raw)) from None
    problem = _database_problem(config.database)
    if problem:
        raise fail("database", problem)
    config = _resolve_paths(config, path.resolve().parent).model_copy(update={"path": path.resolve()})
    problem = _feeds_dir_problem(config)
    if problem:
        raise fail("feeds.dir", problem)
    return config


def _where(key: str, from_env: Mapping[str, str], path: Path) -> str:
    """The environment variable that set this key (or a section or list holding it), else the file."""
    parts = re.split(r"[.\[]", key)
    for end in range(len(parts), 0, -1):
        name = from_env.get(".".join(parts[:end]))
        if name:
            return f"environment variable {name}"
    return str(path)


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], from_env: dict[str, str]) -> dict[str, Any]:
    raw = {key: (dict(value) if isinstance(value, dict) else value) for key, value in raw.items()}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        parts = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts) or len(parts) > 2:
            raise ConfigError(f"environment variable {name}: expected FEEDWORKER_<SECTION>__<KEY>")
        value = _env_value(parts, environ[name])
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
    if DATABASE_FILE_ENV in environ:
        if ENV_PREFIX + "DATABASE" in environ:
            raise ConfigError(f"set FEEDWORKER_DATABASE or {DATABASE_FILE_ENV}, not both")
        raw["database"] = _database_from_file(environ[DATABASE_FILE_ENV])
        from_env["database"] = DATABASE_FILE_ENV
    return raw


def _database_from_file(path: str) -> str:
    """The database URL (or SQLite path) a secret file holds: its text without the line end.
    Messages name the file, never what is in it."""
    where = f"environment variable {DATABASE_FILE_ENV}"
    try:
        with open(path, "rb") as handle:
            data = handle.read(8193)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > 8192:
        raise ConfigError(f"{where}: {path} is larger than 8 KiB: not a database URL")
    try:
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text") from None
    if not text or "\n" in text:
        raise ConfigError(f"{where}: {path} must hold the database URL on one line")
    return text


def _env_value(parts: list[str], text: str) -> Any:
    """The variable's text as it is, except for a list or a section, which is read as YAML.

    Text fields (the token, the host, paths, URLs) must not lose a `#...` or their quotes to
    YAML; numbers, durations and booleans are parsed from the text by the field itself, so
    `true` is no port and `1` no boolean.
    """
    if parts == ["sources"]:
        return _sources_value(text)
    if not _structured(_field_type(parts)):
        return text
    try:
        return yaml.load(text, Loader=yaml.CSafeLoader) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _sources_value(text: str) -> Any:
    """FEEDWORKER_SOURCES: a folder, or folders separated by commas, taken as written
    (`/data/inbox`, `/data/a,/data/b`); or YAML: a list of sources (`[{path: /data/inbox}]`),
    of folders (`[/data/a, /data/b]`), or one source (`{path: /data/inbox}`)."""
    stripped = text.strip()
    if not (stripped.startswith(("[", "{", "- ")) or "\n" in stripped):
        return [{"path": part.strip()} for part in text.split(",") if part.strip()]
    try:
        value = yaml.load(text, Loader=yaml.CSafeLoader)
    except yaml.YAMLError:
        return text
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        value = [{"path": item} if isinstance(item, str) else item for item in value]
    return value


def _field_type(parts: list[str]) -> Any:
    model: Any = Config
    annotation: Any = None
    for part in parts:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = model = field.annotation
    return annotation


def _structured(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_structured(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if origin in (tuple, list, dict, set, frozenset):
        return True
    return isinstance(annotation, type) and issubclass(annotation, (BaseModel, tuple, list, dict))


def _resolve_paths(config: Config, base: Path) -> Config:
    def resolve(value: Path) -> Path:
        return Path(os.path.normpath(value if value.is_absolute() else base / value))

    sources = tuple(src.model_copy(update={"path": resolve(src.path)}) for src in config.sources)
    feeds = config.feeds.model_copy(update={"dir": resolve(config.feeds.dir)})
    database = config.database
    if "://" not in database:
        database = str(resolve(Path(database)))
    elif database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        relative = database[len("sqlite:///") :]
        if relative and relative != ":memory:":
            database = "sqlite:///" + str(resolve(Path(relative)))
    return config.model_copy(update={"sources": sources, "feeds": feeds, "database": database})


# --------------------------------------------------------------------------- checks after validation


def _database_problem(database: str) -> str | None:
    """Why this database URL cannot be opened (its driver is missing, ...), or None.

    SQLite paths and URLs need nothing but the standard library, and are not looked at
    here: this keeps SQLAlchemy out of a run that has nothing to do.
    """
    if "://" not in database:
        return None
    scheme = database.split("://", 1)[0].lower()
    if scheme in ("sqlite", "sqlite+pysqlite"):
        return None
    shown = mask_url(database)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(database)
    except (ArgumentError, ValueError):
        return f"{shown}: not a database URL (dialect://user:password@host/name)"
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        return f"{shown}: unknown database kind {url.drivername!r}"
    except Exception as exc:  # noqa: BLE001  (a dialect's own import error, whatever it is)
        return f"{shown}: {url.drivername} cannot be used: {type(exc).__name__}"
    try:
        dialect.import_dbapi()
    except Exception as exc:  # noqa: BLE001  (ImportError, or a driver failing as it loads)
        driver = getattr(dialect, "driver", None) or url.get_driver_name()
        reason = "is not installed" if isinstance(exc, ImportError) else f"cannot be loaded ({type(exc).__name__})"
        return (
            f"{shown}: driver {driver} for {url.get_backend_name()} {reason}; install it, or name an installed "
            f"driver in the URL ({url.get_backend_name()}+<driver>://)"
        )
    return None


def mask_url(url: str) -> str:
    """The URL with its password (and password-like query values) replaced by ***."""
    masked = re.sub(r"^([\w+.-]+://[^:/@?#]*):.*@", r"\1:***@", url, flags=re.DOTALL)
    return re.sub(r"(?i)([?&][^=&]*(?:pass|pwd|secret|token)[^=&]*=)[^&]*", r"\1***", masked)


def _real(path: Path) -> Path:
    """The absolute path with the symlinks of its existing part resolved."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _feeds_dir_problem(config: Config) -> str | None:
    """Everything in feeds.dir is served over HTTP: it must hold nothing but the feeds."""
    feeds = _real(config.feeds.dir)
    served = "everything in feeds.dir is served over HTTP: give the feeds a folder of their own"
    if feeds == Path(feeds.anchor):
        return f"{feeds} is the root folder; {served}"
    database = config.database_path
    if database is not None and _within(_real(database), feeds):
        return f"{feeds} contains the database {database}; {served}"
    if config.path is not None and _within(_real(config.path), feeds):
        return f"{feeds} contains the config file {config.path}; {served}"
    for index, source in enumerate(config.sources):
        folder = _real(source.path)
        if _within(folder, feeds):
            return f"{feeds} contains the source folder sources[{index}].path {source.path}; {served}"
        if _within(feeds, folder):
            return (
                f"{feeds} is inside the source folder sources[{index}].path {source.path}; feedworker never "
                "writes into a source folder"
            )
    return None


# --------------------------------------------------------------------------- messages


def _describe(exc: ValidationError) -> list[tuple[str, str]]:
    """Every problem as (key, message in plain words): unknown keys first, then the others
    in the order of the file."""
    errors = exc.errors()
    locs = [tuple(error["loc"]) for error in errors]
    problems: list[tuple[str, str]] = []
    for error, loc in zip(errors, locs, strict=True):
        # A list whose items failed is also "too short" once they are dropped: say the items' problems.
        if error["type"] == "too_short" and any(other[: len(loc)] == loc and other != loc for other in locs):
            continue
        key = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", ".".join(str(part) for part in loc)) or "(top level)"
        problem = (key, _plain(error, loc))
        if problem not in problems:
            problems.append(problem)
    return sorted(problems, key=lambda problem: not problem[1].startswith("unknown key"))


_LIST_TYPES = frozenset({"tuple_type", "list_type", "set_type", "frozen_set_type", "iterable_type"})
_SECTION_TYPES = frozenset({"model_type", "model_attributes_type", "dict_type", "dataclass_type"})
_PLAIN = {
    "missing": "required key is missing",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_parsing_size": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "string_unicode": "must be text",
    "string_too_short": "must not be empty",
    "path_type": "must be a path",
    "frozen_instance": "cannot be changed",
}


def _plain(error: Any, loc: tuple[Any, ...]) -> str:
    """The problem in the words of this file's keys, never the validation library's."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        meant = _meant(loc)
        return f"unknown key (did you mean {meant}?)" if meant else "unknown key"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error") or error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in _PLAIN:
        return _PLAIN[kind]
    if kind in _LIST_TYPES:
        return (
            "must be a list of folders: a path, or a list such as [{path: inbox}]"
            if loc == ("sources",)
            else "must be a list"
        )
    if kind in _SECTION_TYPES:
        return (
            "must be a section of keys, such as {path: inbox}"
            if loc[:1] == ("sources",)
            else "must be a section of keys"
        )
    if kind == "too_short":
        if loc == ("sources",):
            return "must list at least one folder"
        return f"must have at least {ctx.get('min_length', 1)} entries"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries"
    bounds = {
        "greater_than": ("gt", "more than"),
        "greater_than_equal": ("ge", "at least"),
        "less_than": ("lt", "less than"),
        "less_than_equal": ("le", "at most"),
    }
    if kind in bounds:
        name, words = bounds[kind]
        return f"must be {words} {ctx.get(name)}"
    if kind == "literal_error":
        return "must be one of " + ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
    return "is not a valid value"


def _fold(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def _meant(loc: tuple[Any, ...]) -> str | None:
    """The key an unknown one is probably a misspelling of (`source` -> sources), at its place
    or, spelled the same, in another section (`token` -> server.token)."""
    key = loc[-1] if loc else None
    if not isinstance(key, str) or len(key) > 100:
        return None
    model = _model_at(loc[:-1])
    if model is not None:
        names = {_fold(name): name for name in model.model_fields if not (model is Config and name == "path")}
        close = difflib.get_close_matches(_fold(key), names, n=1, cutoff=0.75)
        if close:
            return names[close[0]]
    elsewhere = []
    for section, name in _all_keys():
        if _fold(name) == _fold(key) and section != _model_at(loc[:-1]):
            elsewhere.append(f"{_SECTION_NAMES[section]}.{name}")
    return " or ".join(elsewhere) if elsewhere else None


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = Config
    for part in loc:
        if isinstance(part, int):  # an item of a list of sections
            items = [arg for arg in typing.get_args(current) if arg is not Ellipsis]
            current = items[0] if items else None
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = field.annotation
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


_SECTION_NAMES: dict[type[BaseModel], str] = {
    SourceConfig: "sources[]",
    FeedsConfig: "feeds",
    ScheduleConfig: "schedule",
    EnrichConfig: "enrich",
    ServerConfig: "server",
    LimitsConfig: "limits",
}


def _all_keys() -> list[tuple[type[BaseModel], str]]:
    return [(section, name) for section in _SECTION_NAMES for name in section.model_fields]


def _joined(problems: list[tuple[str, str]], from_env: Mapping[str, str], path: Path) -> str:
    """One line: `<file>: key: problem; key: problem; environment variable X: key: problem`."""
    parts = []
    previous = None
    for key, message in problems:
        where = _where(key, from_env, path)
        parts.append(f"{key}: {message}" if where == previous else f"{where}: {key}: {message}")
        previous = where
    return "; ".join(parts)


def _redact(message: str, raw: Mapping[str, Any]) -> str:
    """A last guard: the token and the database password never appear in a message."""
    secrets: list[str] = []
    server = raw.get("server")
    if isinstance(server, Mapping) and isinstance(server.get("token"), str):
        secrets.append(server["token"])
    database = raw.get("database")
    if isinstance(database, str):
        match = re.match(r"^[\w+.-]+://[^:/@?#]*:(.*)@", database, flags=re.DOTALL)
        if match:
            secrets.append(match.group(1))
    for secret in secrets:
        if len(secret) >= 4:
            message = message.replace(secret, "***")
    return _one_line_text(message)


def _one_line_text(text: str) -> str:
    return " ".join(text.split()) if "\n" in text or "\r" in text else text


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
