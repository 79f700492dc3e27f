"""Configuration: defaults, overrides from the environment, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "feedworker.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path):
    config = load_config(write(tmp_path, "sources: [{path: ../inbox}]\ndatabase: db/x.db\nfeeds: {dir: out}\n"), {})
    assert config.sources[0].path == tmp_path / "inbox"
    assert config.database_path == tmp_path / "conf" / "db" / "x.db"
    assert config.feeds.dir == tmp_path / "conf" / "out"
    assert config.feeds.base_url == "http://localhost:8080/feeds/"
    assert config.schedule.every == 300 and config.enrich.ttl == 7 * 86400


def test_environment_overrides_every_key_with_yaml_scalars(tmp_path: Path):
    path = write(tmp_path, "sources: [{path: in}]\n")
    config = load_config(
        path,
        {
            "FEEDWORKER_ENRICH__FETCH": "false",
            "FEEDWORKER_SCHEDULE__EVERY": "30s",
            "FEEDWORKER_SERVER__TOKEN": "s3cret",
            "FEEDWORKER_DATABASE": "sqlite:////var/lib/fw.db",
            "FEEDWORKER_SOURCES": "[{path: /data/inbox, max_bytes: 1000}]",
            "FEEDWORKER_CONFIG": "ignored: it names the file",
            "FEEDWORKER_CLOCK": "2024-01-01T00:00:00Z",
        },
    )
    assert config.enrich.fetch is False and config.schedule.every == 30
    assert config.server.token == "s3cret" and "s3cret" not in repr(config)
    assert config.database_path == Path("/var/lib/fw.db")
    assert config.sources[0].path == Path("/data/inbox") and config.sources[0].max_bytes == 1000


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("sources: [{path: in}]\nfeeds: {max_entries: lots}\n", {}, "feedworker.yaml: feeds.max_entries: "),
        ("sources: [{path: in}]\nfeeds: {colour: red}\n", {}, "feedworker.yaml: feeds.colour: unknown key"),
        ("sources: [{path: in, nope: 1}]\n", {}, "sources[0].nope: unknown key"),
        ("feeds: {}\n", {}, "sources: required key is missing"),
        ("sources: [{path: in}]\nschedule: {every: soon}\n", {}, "schedule.every: 'soon' is not a duration"),
        ("sources: [{path: in}]\nschedule: {cron: '* *'}\n", {}, "schedule.cron: must have five fields"),
        ("sources: [{path: in}]\nfeeds: {base_url: /relative/}\n", {}, "feeds.base_url: must be an absolute"),
        (
            "sources: [{path: in}]\n",
            {"FEEDWORKER_FEEDS__MAX_ENTRIES": "abc"},
            "environment variable FEEDWORKER_FEEDS__MAX_ENTRIES: feeds.max_entries: ",
        ),
        (
            "sources: [{path: in}]\n",
            {"FEEDWORKER_TOKEN": "x"},
            "environment variable FEEDWORKER_TOKEN: token: unknown key",
        ),
        ("sources: [{path: in}\n", {}, "invalid YAML"),
        ("- a list\n", {}, "the top level must be a mapping"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, text, environ, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_a_missing_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml", {})
