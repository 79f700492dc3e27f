"""Configuration values that used to validate and then break runs or leak data (issue 10):
feeds.dir overlapping what must not be served, database drivers and passwords, unbounded
numbers and durations, environment overrides read as YAML."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.config import ConfigError, load_config, mask_url, parse_duration

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cret-Value"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "feedworker.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "in").mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def refused(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ or {})
    message = str(info.value)
    assert "\n" not in message
    return message


def feedworker(*args: str, cwd: Path, env: dict[str, str] | None = None, module: bool = False):
    """The console script (or `python -m worker`) as a real subprocess, without FEEDWORKER_* of ours."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FEEDWORKER_")}
    environment.update(env or {})
    script = Path(sys.executable).parent / "feedworker"
    command = [sys.executable, "-m", "worker"] if module or not script.exists() else [str(script)]
    return subprocess.run(
        [*command, *args], check=False, capture_output=True, text=True, env=environment, cwd=cwd, timeout=120
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- (6) feeds.dir


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("feeds: {dir: data}\n", "contains the database"),
        ("feeds: {dir: .}\n", "contains the database"),
        ("feeds: {dir: /}\n", "is the root folder"),
        ("database: /elsewhere/fw.db\nfeeds: {dir: .}\n", "contains the config file"),
        ("database: /elsewhere/fw.db\nfeeds: {dir: ..}\n", "contains the config file"),
        ("database: sqlite:///data/fw.db\nfeeds: {dir: data}\n", "contains the database"),
        ("database: sqlite:///data/fw.db\nfeeds: {dir: data/fw.db}\n", "contains the database"),
        ("database: /tmp/fw-test-elsewhere/fw.db\nfeeds: {dir: /tmp/fw-test-elsewhere}\n", "contains the database"),
        ("feeds: {dir: in}\n", "contains the source folder"),
        ("sources: [{path: in/sub}]\nfeeds: {dir: in}\n", "contains the source folder"),
        ("feeds: {dir: in/feeds}\n", "inside the source folder"),
    ],
)
def test_a_feeds_dir_that_would_serve_what_it_must_not_is_refused(tmp_path: Path, text: str, why: str):
    if not text.startswith("sources:"):
        text = "sources: [{path: in}]\n" + text
    message = refused(tmp_path, text)
    assert "feeds.dir: " in message and why in message


def test_feeds_dir_from_the_environment_is_checked_too(tmp_path: Path):
    message = refused(tmp_path, "sources: [{path: in}]\n", {"FEEDWORKER_FEEDS__DIR": "data"})
    assert message.startswith("environment variable FEEDWORKER_FEEDS__DIR: feeds.dir: ")
    message = refused(tmp_path, "sources: [{path: in}]\nfeeds: {dir: out}\n", {"FEEDWORKER_FEEDS__DIR": ""})
    assert "feeds.dir: must not be empty" in message


def test_a_feeds_dir_reaching_the_database_through_a_symlink_is_refused(tmp_path: Path):
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "public").symlink_to(tmp_path / "conf" / "data", target_is_directory=True)
    message = refused(tmp_path, "sources: [{path: in}]\nfeeds: {dir: public}\n")
    assert "feeds.dir: " in message and "contains the database" in message


def test_a_source_folder_reached_through_a_symlink_is_refused(tmp_path: Path):
    (tmp_path / "conf" / "in").mkdir(parents=True)
    (tmp_path / "conf" / "link").symlink_to(tmp_path / "conf" / "in", target_is_directory=True)
    assert "inside the source folder" in refused(tmp_path, "sources: [{path: link}]\nfeeds: {dir: in/out}\n")


@pytest.mark.parametrize(
    "text",
    [
        "sources: [{path: in}]\nfeeds: {dir: feeds}\n",  # beside the config file
        "sources: [{path: in}]\ndatabase: data/feedworker.db\nfeeds: {dir: data/feeds}\n",  # beside the database
        "sources: [{path: in}]\ndatabase: sqlite:///data/fw.db\nfeeds: {dir: data/feeds}\n",
        "sources: [{path: ../inbox}]\ndatabase: ../data/fw.db\nfeeds: {dir: ../out/feeds}\n",
        "sources: [{path: in}]\ndatabase: 'sqlite:///:memory:'\nfeeds: {dir: feeds}\n",
    ],
)
def test_a_feeds_folder_of_its_own_is_fine(tmp_path: Path, text: str):
    config = load_config(write(tmp_path, text), {})
    assert config.feeds.dir.name == "feeds"


def test_run_with_feeds_dir_on_the_database_folder_exits_1_with_one_line(tmp_path: Path):
    config = write(tmp_path, "sources: [{path: in}]\nenrich: {fetch: false}\nfeeds: {dir: data}\n")
    result = feedworker("run", "--config", str(config), cwd=tmp_path)
    assert_one_line_failure(result, "feeds.dir", "contains the database")
    assert not (tmp_path / "conf" / "data").exists()


# --------------------------------------------------------------------------- (11b) database driver, passwords


def _driver_installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("command", ["run", "status", "serve"])
@pytest.mark.parametrize("module", [False, True])
def test_a_database_url_without_its_driver_is_one_line_without_the_password(tmp_path: Path, command: str, module: bool):
    config = write(tmp_path, "sources: [{path: in}]\nenrich: {fetch: false}\n")
    url = f"postgresql+psycopg2://fw:{SECRET}@127.0.0.1:1/test"
    result = feedworker(command, "--config", str(config), cwd=tmp_path, env={"FEEDWORKER_DATABASE": url}, module=module)
    line = assert_one_line_failure(result, "database")
    assert SECRET not in result.stderr + result.stdout
    if not _driver_installed("psycopg2"):
        assert "FEEDWORKER_DATABASE" in line and "driver psycopg2" in line and "not installed" in line
        assert "postgresql+psycopg2://fw:***@127.0.0.1:1/test" in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://fw:{secret}@127.0.0.1/test", "driver mysqldb for mysql is not installed"),
        ("nosuchdb://fw:{secret}@host/x", "unknown database kind 'nosuchdb'"),
        ("postgresql+nosuchdriver://fw:{secret}@host/x", "unknown database kind"),
    ],
)
def test_database_url_problems_are_one_line_and_never_show_the_password(tmp_path: Path, url: str, expected: str):
    url = url.format(secret=SECRET)
    if expected.startswith("driver ") and _driver_installed("MySQLdb"):
        pytest.skip("the MySQL driver is installed")
    message = refused(tmp_path, f"sources: [{{path: in}}]\ndatabase: '{url}'\n")
    assert message.startswith(str(tmp_path / "conf" / "feedworker.yaml") + ": database: ")
    assert expected in message and SECRET not in message and ":***@" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://fw:pw@host/db", "postgresql://fw:***@host/db"),
        ("postgresql://fw:p@ss:w/rd@host:5432/db", "postgresql://fw:***@host:5432/db"),
        ("postgresql://:pw@host/db", "postgresql://:***@host/db"),
        ("postgresql://fw@host:5432/db", "postgresql://fw@host:5432/db"),
        (
            "postgresql://host/db?user=fw&password=pw&sslmode=require",
            "postgresql://host/db?user=fw&password=***&sslmode=require",
        ),
        ("sqlite:///data/x.db", "sqlite:///data/x.db"),
    ],
)
def test_mask_url_hides_passwords(url: str, shown: str):
    assert mask_url(url) == shown


def test_a_config_error_never_shows_the_token(tmp_path: Path):
    for value in (f" {SECRET}", f"{SECRET}\n", f"{SECRET}\x7f", f"{SECRET}é"):
        message = refused(tmp_path, "sources: [{path: in}]\n", {"FEEDWORKER_SERVER__TOKEN": value})
        assert "server.token" in message and SECRET not in message
    message = refused(tmp_path, f"sources: [{{path: in}}]\nserver: {{token: '{SECRET}', port: lots}}\n")
    assert "server.port" in message and SECRET not in message


def test_a_bad_token_in_the_environment_exits_1_without_showing_it(tmp_path: Path):
    config = write(tmp_path, "sources: [{path: in}]\nenrich: {fetch: false}\n")
    result = feedworker("run", "--config", str(config), cwd=tmp_path, env={"FEEDWORKER_SERVER__TOKEN": f"{SECRET} "})
    assert_one_line_failure(result, "server.token")
    assert SECRET not in result.stderr + result.stdout


# --------------------------------------------------------------------------- (12) finite, bounded numbers


BAD_VALUES = [
    ("enrich", "ttl", ".inf"),
    ("enrich", "ttl", ".nan"),
    ("enrich", "ttl", "9999999999d"),
    ("enrich", "ttl", "366d"),
    ("enrich", "ttl", "1" + "0" * 400),
    ("enrich", "retry_after", ".inf"),
    ("enrich", "retry_after", "9999999999d"),
    ("enrich", "max_seconds", ".inf"),
    ("enrich", "max_seconds", "2d"),
    ("enrich", "timeout_s", ".nan"),
    ("enrich", "timeout_s", "2h"),
    ("enrich", "max_fetches", "10000000"),
    ("enrich", "max_bytes", "1000000000000"),
    ("enrich", "concurrency", "100000"),
    ("enrich", "per_host", "1000"),
    ("server", "healthy_within", ".nan"),
    ("server", "healthy_within", ".inf"),
    ("server", "healthy_within", "0"),
    ("server", "healthy_within", "400d"),
    ("server", "grace_s", ".inf"),
    ("server", "grace_s", "30d"),
    ("schedule", "every", ".inf"),
    ("schedule", "every", ".nan"),
    ("schedule", "every", "9999999999d"),
    ("schedule", "jitter_s", ".nan"),
    ("schedule", "jitter_s", ".inf"),
    ("schedule", "jitter_s", "2d"),
    ("limits", "max_topics", "100000000"),
    ("limits", "max_related", "100000000"),
    ("limits", "max_images", "100000000"),
    ("limits", "max_title_chars", "100000000"),
    ("limits", "max_excerpt_chars", "100000000000"),
    ("limits", "max_body_chars", "100000000000"),
    ("", "busy_timeout_s", ".inf"),
    ("", "busy_timeout_s", ".nan"),
    ("", "busy_timeout_s", "30d"),
    ("sources", "settle_s", ".nan"),
    ("sources", "settle_s", ".inf"),
    ("sources", "settle_s", "2d"),
    ("sources", "max_bytes", "100000000000000"),
]


def _config_with(section: str, key: str, value: str) -> str:
    if section == "sources":
        return f"sources: [{{path: in, {key}: {value}}}]\n"
    if not section:
        return f"sources: [{{path: in}}]\n{key}: {value}\n"
    return f"sources: [{{path: in}}]\n{section}: {{{key}: {value}}}\n"


@pytest.mark.parametrize(("section", "key", "value"), BAD_VALUES)
def test_non_finite_and_unbounded_numbers_are_refused_in_the_file(tmp_path: Path, section: str, key: str, value: str):
    message = refused(tmp_path, _config_with(section, key, value))
    name = "sources[0]" if section == "sources" else section
    assert f": {name + '.' if name else ''}{key}: " in message


@pytest.mark.parametrize(("section", "key", "value"), [bad for bad in BAD_VALUES if bad[0] != "sources"])
def test_non_finite_and_unbounded_numbers_are_refused_from_the_environment(
    tmp_path: Path, section: str, key: str, value: str
):
    name = f"FEEDWORKER_{section.upper()}__{key.upper()}" if section else f"FEEDWORKER_{key.upper()}"
    message = refused(tmp_path, "sources: [{path: in}]\n", {name: value})
    assert message.startswith(f"environment variable {name}: ")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FEEDWORKER_BUSY_TIMEOUT_S", "nan"),
        ("FEEDWORKER_BUSY_TIMEOUT_S", "inf"),
        ("FEEDWORKER_SCHEDULE__JITTER_S", "NaN"),
        ("FEEDWORKER_SERVER__HEALTHY_WITHIN", "Infinity"),
        ("FEEDWORKER_ENRICH__TTL", "1e400"),
    ],
)
def test_nan_and_infinity_spelled_as_text_are_refused(tmp_path: Path, name: str, value: str):
    assert refused(tmp_path, "sources: [{path: in}]\n", {name: value}).startswith(f"environment variable {name}: ")


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), "1" + "0" * 400 + "d"])
def test_parse_duration_is_finite(value: object):
    with pytest.raises(ValueError, match="finite|negative"):
        parse_duration(value)


def test_the_bounds_say_them_in_the_units_people_write(tmp_path: Path):
    assert "enrich.ttl: must be at most 365d" in refused(tmp_path, _config_with("enrich", "ttl", "9999999999d"))
    assert "server.healthy_within: must be more than 0s" in refused(
        tmp_path, _config_with("server", "healthy_within", "0")
    )
    assert "enrich.timeout_s: must be at most 1h" in refused(tmp_path, _config_with("enrich", "timeout_s", "2h"))


def test_every_default_and_the_shipped_configs_are_within_the_bounds(tmp_path: Path):
    config = load_config(write(tmp_path, "sources: [{path: in}]\n"), {})
    assert config.enrich.ttl == 7 * 86400 and config.server.healthy_within == 3600
    edge = load_config(
        write(
            tmp_path,
            (
                "sources: [{path: in, settle_s: 1d, max_bytes: 1073741824}]\nbusy_timeout_s: 1d\n"
                "schedule: {every: 365d, jitter_s: 1d}\nserver: {healthy_within: 365d, grace_s: 1d, port: 65535}\n"
                "enrich: {ttl: 365d, retry_after: 0, max_seconds: 0, timeout_s: 1h, max_fetches: 0, concurrency: 256, per_host: 64}\n"
            ),
        ),
        {},
    )
    assert edge.enrich.ttl == 365 * 86400 and edge.schedule.every == 365 * 86400
    for shipped in ("config/feedworker.yaml", "config/docker.yaml"):
        load_config(ROOT / shipped, {})


def test_a_schedule_without_every_or_cron_is_refused(tmp_path: Path):
    assert "schedule: set either every or cron" in refused(tmp_path, "sources: [{path: in}]\nschedule: {every: null}\n")
    assert "schedule: set either every or cron" in refused(
        tmp_path, "sources: [{path: in}]\n", {"FEEDWORKER_SCHEDULE__EVERY": ""}
    )
    config = load_config(write(tmp_path, "sources: [{path: in}]\nschedule: {every: null, cron: '*/5 * * * *'}\n"), {})
    assert config.schedule.cron == "*/5 * * * *"


@pytest.mark.parametrize("module", [False, True])
def test_run_with_an_infinite_ttl_exits_1_with_one_line(tmp_path: Path, module: bool):
    config = write(tmp_path, "sources: [{path: in}]\nenrich: {fetch: false, ttl: .inf}\n")
    result = feedworker("run", "--config", str(config), cwd=tmp_path, module=module)
    assert_one_line_failure(result, "enrich.ttl", "finite")


# --------------------------------------------------------------------------- booleans are never numbers


@pytest.mark.parametrize(
    "text",
    [
        "server: {port: true}\n",
        "feeds: {max_entries: yes}\n",
        "enrich: {concurrency: on}\n",
        "limits: {max_topics: true}\n",
        "busy_timeout_s: true\n",
        "enrich: {fetch: 1}\n",
        "enrich: {allow_private_networks: 0}\n",
        "enrich: {fetch: maybe}\n",
    ],
)
def test_a_boolean_is_never_a_number_in_the_file(tmp_path: Path, text: str):
    key = text.split(":")[0] if text.startswith("busy") else ".".join(part.strip(" {") for part in text.split(":")[:2])
    assert f": {key}: " in refused(tmp_path, "sources: [{path: in}]\n" + text)


def test_a_boolean_is_never_a_number_in_a_source(tmp_path: Path):
    assert "sources[0].max_bytes: " in refused(tmp_path, "sources: [{path: in, max_bytes: true}]\n")
    assert "sources[0].settle_s: " in refused(tmp_path, "sources: [{path: in, settle_s: true}]\n")


# --------------------------------------------------------------------------- (13) environment overrides


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("FEEDWORKER_SERVER__TOKEN", "abc #def", lambda c: c.server.token),
        ("FEEDWORKER_SERVER__TOKEN", "'quoted'", lambda c: c.server.token),
        ("FEEDWORKER_SERVER__TOKEN", '"double"', lambda c: c.server.token),
        ("FEEDWORKER_SERVER__TOKEN", "12345", lambda c: c.server.token),
        ("FEEDWORKER_SERVER__TOKEN", "null", lambda c: c.server.token),
        ("FEEDWORKER_SERVER__TOKEN", "[a, b]", lambda c: c.server.token),
        ("FEEDWORKER_SERVER__TOKEN", "&anchor x", lambda c: c.server.token),
        ("FEEDWORKER_FEEDS__TITLE", "News #1", lambda c: c.feeds.title),
        ("FEEDWORKER_FEEDS__TITLE", "yes", lambda c: c.feeds.title),
        ("FEEDWORKER_SERVER__HOST", "::1", lambda c: c.server.host),
        ("FEEDWORKER_SCHEDULE__CRON", "*/5 * * * *", lambda c: c.schedule.cron),
    ],
)
def test_text_settings_take_the_variable_as_it_is(tmp_path: Path, name: str, value: str, read):
    assert read(load_config(write(tmp_path, "sources: [{path: in}]\n"), {name: value})) == value


def test_path_and_url_settings_take_the_variable_as_it_is(tmp_path: Path):
    config = load_config(
        write(tmp_path, "sources: [{path: in}]\n"),
        {
            "FEEDWORKER_DATABASE": "data/fw #1.db",
            "FEEDWORKER_FEEDS__DIR": "out #2",
            "FEEDWORKER_FEEDS__BASE_URL": "https://example.test/feeds/#top",
        },
    )
    assert config.database_path == tmp_path / "conf" / "data" / "fw #1.db"
    assert config.feeds.dir == tmp_path / "conf" / "out #2"
    assert config.feeds.base_url == "https://example.test/feeds/#top/"


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("FEEDWORKER_SERVER__PORT", "true", "server.port"),
        ("FEEDWORKER_SERVER__PORT", "8080 # the default", "server.port"),
        ("FEEDWORKER_FEEDS__MAX_ENTRIES", "yes", "feeds.max_entries"),
        ("FEEDWORKER_ENRICH__FETCH", "1", "enrich.fetch"),
        ("FEEDWORKER_ENRICH__FETCH", "0", "enrich.fetch"),
        ("FEEDWORKER_ENRICH__FETCH", "false # off", "enrich.fetch"),
        ("FEEDWORKER_SERVER__HOST", "", "server.host"),
        ("FEEDWORKER_SERVER__HOST", "  ", "server.host"),
        ("FEEDWORKER_SERVER__HOST", "127.0.0.1 # local", "server.host"),
        ("FEEDWORKER_SOURCES", "[{path: in, max_bytes: true}]", "sources[0].max_bytes"),
    ],
)
def test_numbers_and_booleans_from_the_environment_parse_strictly(tmp_path: Path, name: str, value: str, key: str):
    message = refused(tmp_path, "sources: [{path: in}]\n", {name: value})
    assert message.startswith(f"environment variable {name}: {key}: ")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("True", True), ("YES", True), ("on", True), ("false", False), ("No", False), (" off ", False)],
)
def test_boolean_spellings_from_the_environment(tmp_path: Path, value: str, expected: bool):
    config = load_config(write(tmp_path, "sources: [{path: in}]\n"), {"FEEDWORKER_ENRICH__FETCH": value})
    assert config.enrich.fetch is expected


def test_numbers_and_durations_from_the_environment(tmp_path: Path):
    config = load_config(
        write(tmp_path, "sources: [{path: in}]\n"),
        {
            "FEEDWORKER_SERVER__PORT": "9090",
            "FEEDWORKER_SERVER__GRACE_S": "45",
            "FEEDWORKER_ENRICH__TTL": "2d",
            "FEEDWORKER_BUSY_TIMEOUT_S": "5s",
            "FEEDWORKER_SERVER": "{host: 0.0.0.0}",
        },
    )
    assert (config.server.port, config.server.grace_s, config.enrich.ttl) == (9090, 45, 2 * 86400)
    assert config.busy_timeout_s == 5 and config.server.host == "0.0.0.0"


def test_an_empty_host_in_the_file_is_an_error(tmp_path: Path):
    assert "server.host: must not be empty" in refused(tmp_path, "sources: [{path: in}]\nserver: {host: ''}\n")


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("FEEDWORKER_SERVER__PORT", "true", "server.port"),
        ("FEEDWORKER_SERVER__HOST", "", "server.host"),
    ],
)
def test_run_with_a_bad_environment_override_exits_1_with_one_line(tmp_path: Path, name: str, value: str, key: str):
    config = write(tmp_path, "sources: [{path: in}]\nenrich: {fetch: false}\n")
    result = feedworker("run", "--config", str(config), cwd=tmp_path, env={name: value})
    assert_one_line_failure(result, f"environment variable {name}: {key}: ")
