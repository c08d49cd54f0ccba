"""The docker compose stack, checked without a Docker engine (there is none in CI): the compose file and the
Dockerfile are parsed and held against the code they start (commands, queues, settings, packages), and the
secrets-from-files path they rely on is run for real against a redis-server that asks for a password."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import Settings
from tests.services import ROOT, RedisServer
from worker.cli import build_parser
from worker.queue.client import QUEUES, JobClient

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES = COMPOSE["services"]
TERRASEG_SERVICES = ("app", "worker-cpu", "worker-gpu")
SECRETS_DIR = "/run/secrets"


def stages() -> dict[str, list[str]]:
    """Each Dockerfile stage's instructions (continuation lines joined), by stage name."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in re.sub(r"\\\n\s*", " ", DOCKERFILE).splitlines():
        line = line.strip()
        if match := re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE):
            parent = found.get(match.group(1), [])
            current = found.setdefault(match.group(2), list(parent))  # a stage inherits its parent's
        elif line and not line.startswith("#"):
            current.append(line)
    return found


def parse_terraseg(command: list[str]) -> Any:
    """The CLI's own parser on a `terraseg ...` command line (SystemExit: not a command that exists)."""
    assert command[0] == "terraseg", command
    return build_parser().parse_args(command[1:])


def test_the_stack_has_redis_the_app_and_both_workers_on_one_cache_volume():
    assert set(SERVICES) == {"redis", *TERRASEG_SERVICES}
    assert {"cache", "redis-data"} <= set(COMPOSE["volumes"])
    for name in TERRASEG_SERVICES:
        service = SERVICES[name]
        cache_dir = service["environment"]["TERRASEG_CACHE_DIR"]
        assert f"cache:{cache_dir}" in service["volumes"], name  # job folders are the truth: shared by all
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["build"]["target"] in stages(), name
    assert "redis-data:/data" in SERVICES["redis"]["volumes"]


def test_redis_keeps_an_append_only_file_and_takes_its_password_from_the_secret():
    redis = SERVICES["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert f"$$(cat {SECRETS_DIR}/terraseg_redis_password)" in command  # $$: compose's escaped $
    assert "--requirepass" not in command  # on the command line, `ps` would show it
    assert "ports" not in redis  # reachable from the stack's network only
    assert redis["user"] != "root" and not redis["user"].startswith("0")


def test_every_command_and_health_check_is_one_the_code_has():
    for name in ("worker-cpu", "worker-gpu"):
        args = parse_terraseg(SERVICES[name]["command"])
        assert args.verb == "worker" and set(args.queues) <= set(QUEUES), name
        health = parse_terraseg(SERVICES[name]["healthcheck"]["test"][1:])
        assert health.verb == "health" and health.this_host
    served = {q for name in ("worker-cpu", "worker-gpu") for q in SERVICES[name]["command"][3:]}
    assert served == set(QUEUES)  # every queue has a worker
    for service in SERVICES.values():
        assert service["healthcheck"]["test"], service
    app_check = SERVICES["app"]["healthcheck"]["test"]
    assert app_check[:2] == ["CMD", "python"] and "/_stcore/health" in app_check[-1]
    for stage, instructions in stages().items():
        for line in instructions:
            if line.startswith("CMD "):
                command = json.loads(line[4:])
                if command[0] == "terraseg":
                    parse_terraseg(command)
                elif command[0] == "streamlit":
                    assert command[1:3] == ["run", "app.py"] and (ROOT / "app.py").exists(), stage


def test_every_setting_in_the_environment_exists_and_no_secret_is_an_environment_value():
    for name in TERRASEG_SERVICES:
        environment = SERVICES[name]["environment"]
        fields = {}
        for key, value in environment.items():
            assert key.startswith("TERRASEG_"), key
            field = key.removeprefix("TERRASEG_").lower()
            assert field in Settings.model_fields, key
            assert not re.search(r"PASSWORD|SECRET_?KEY|TOKEN|HASH", key) or value.startswith(SECRETS_DIR), key
            fields[field] = value
        settings = Settings(**{k: v for k, v in fields.items() if k != "secrets_dir"})
        assert settings.redis_url == "redis://redis:6379/0"  # no password in the URL: it comes from a file
        for secret in SERVICES[name]["secrets"]:
            declared = COMPOSE["secrets"][secret]["file"]
            assert declared.startswith("./secrets/"), declared  # git-ignored folder next to the file
            # A setting's own file (terraseg_<setting>, read through TERRASEG_SECRETS_DIR), or a file a setting
            # names (TERRASEG_ACCOUNTS_FILE).
            assert secret.removeprefix("terraseg_") in Settings.model_fields or any(
                v == f"{SECRETS_DIR}/{secret}" for v in environment.values()
            ), secret
        assert "terraseg_redis_password" in SERVICES[name]["secrets"]
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_gpu_worker_reserves_an_nvidia_device_and_runs_a_cuda_torch():
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    gpu = " ".join(stages()["worker-gpu"])
    assert "ENV TERRASEG_DEVICE=cuda" in gpu
    assert re.search(r"--index-url \S+ torch==2\.13\.0", gpu)  # the pinned version, CUDA build
    assert "deploy" not in SERVICES["worker-cpu"]


def test_every_image_runs_as_a_user_and_holds_the_code_it_starts():
    from tomllib import loads

    packages = loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for target in ("app", "worker-cpu", "worker-gpu"):
        instructions = stages()[target]
        users = [line.split()[1] for line in instructions if line.startswith("USER ")]
        assert users and users[-1] not in ("root", "0"), target
        copied = {shlex.split(line)[1].rstrip("/") for line in instructions if line.startswith("COPY ")}
        for package in packages:
            assert package.rstrip("*") in copied, (target, package)
        assert "app.py" in copied and ".streamlit/config.toml" in copied
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".venv", "cache", "secrets", ".streamlit/secrets.toml", ".env"} <= set(ignored)


@pytest.fixture
def redis_with_password(tmp_path: Path):  # noqa: ANN201
    server = RedisServer(tmp_path, password="s3cret/with:odd@chars")
    server.start()
    yield server
    server.kill()


def test_settings_take_the_redis_password_from_a_secret_file_and_the_health_command_says_what_runs(
    redis_with_password: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "terraseg_redis_password").write_text(redis_with_password.password + "\n")
    url = f"redis://127.0.0.1:{redis_with_password.port}/0"
    monkeypatch.setenv("TERRASEG_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("TERRASEG_REDIS_URL", url)
    monkeypatch.setenv("TERRASEG_CACHE_DIR", str(tmp_path / "cache"))
    settings = Settings()
    assert settings.redis_password is not None and redis_with_password.password not in repr(settings)
    assert JobClient(settings).health().redis_ok

    def health(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker", "health", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    answer = health()
    assert answer.returncode == 0 and "redis: up; workers: 0" in answer.stdout, answer.stderr
    assert redis_with_password.password not in answer.stdout + answer.stderr
    assert health("--this-host").returncode == 1  # no worker here: a container's health check fails
    monkeypatch.delenv("TERRASEG_SECRETS_DIR")  # without the file: Redis refuses, and the command says so
    refused = health()
    assert refused.returncode == 1 and "redis: down" in refused.stdout
