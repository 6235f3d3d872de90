"""docker-compose.yml, docker/Dockerfile and docker/agent.Dockerfile, checked without a
Docker engine."""

import os
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from pydantic import BaseModel

from agents.cli import _parser as agent_parser
from control_plane.cli import demo
from control_plane.cli.main import app as sovctl_app
from control_plane.core.settings import ENV_PREFIX, Environment, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.dockerignore"
AGENT_DOCKERFILE = ROOT / "docker" / "agent.Dockerfile"
AGENT_DOCKERIGNORE = ROOT / "docker" / "agent.Dockerfile.dockerignore"
DOCKERFILES = (DOCKERFILE, AGENT_DOCKERFILE)

INFRA_SERVICES = {"postgres", "redis"}
APP_SERVICES = {"migrate", "api", "worker", "beat", "seed"}
#: Built from docker/agent.Dockerfile: the simulated fleet.
AGENT_SERVICES = {"fleet"}
EXPECTED_COMMANDS = {
    "migrate": ["sovctl", "db", "upgrade"],
    "api": ["sovctl", "serve", "--host", "0.0.0.0", "--port", "8080"],
    "worker": ["sovctl", "worker"],
    "beat": ["sovctl", "beat"],
    "seed": ["sovctl", "demo", "seed", "--host", "api", "--port", "8080"],
}
#: Packages that compile code; none belongs in an image's final stage.
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make", "cargo", "rustc", "-dev ")

# Compose interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default}, $VAR.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def _interpolate(value: str, shell_env: dict[str, str]) -> str:
    """Resolve compose ``${...}`` references the way ``docker compose`` would."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        if name in shell_env and (shell_env[name] or ":-" not in match[0]):
            return shell_env[name]
        return match["default"] or ""

    return _INTERPOLATION.sub(replace, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict)
    return found


def _environment(
    service: dict[str, Any], shell_env: dict[str, str] | None = None
) -> dict[str, str]:
    """The service's environment as compose would pass it, with ``${...}`` resolved."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    else:
        pairs = {key: "" if value is None else str(value) for key, value in raw.items()}
    return {key: _interpolate(value, shell_env or {}) for key, value in pairs.items()}


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list), f"no command: {service}"
    return [str(part) for part in command]


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """Dependency name -> condition (compose's short list form means service_started)."""
    raw = service.get("depends_on") or {}
    if isinstance(raw, list):
        return dict.fromkeys(raw, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in raw.items()}


def _setting_path_is_known(variable: str) -> bool:
    """True when ``SOVEREIGN_A__B`` names field ``a`` of Settings and ``b`` inside it."""
    parts = variable.upper().removeprefix(ENV_PREFIX).lower().split("__")
    model: type[BaseModel] = Settings
    for depth, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if depth < len(parts) - 1:
            annotation = field.annotation
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


# -- compose ---------------------------------------------------------------------------


def test_services_are_exactly_the_stack(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == INFRA_SERVICES | APP_SERVICES | AGENT_SERVICES


def test_every_app_service_builds_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in APP_SERVICES:
        build = services[name].get("build")
        assert isinstance(build, dict), f"{name} has no build section"
        context = ROOT / build.get("context", ".")
        assert context.resolve() == ROOT, f"{name} builds from {context}"
        dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
        assert dockerfile == DOCKERFILE, f"{name} builds from {dockerfile}"
    for name in INFRA_SERVICES:
        assert "build" not in services[name]
    for name in AGENT_SERVICES:
        build = services[name]["build"]
        assert (ROOT / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == AGENT_DOCKERFILE
        assert services[name]["image"] not in {services[app]["image"] for app in APP_SERVICES}


def test_app_services_share_one_image_tag(services: dict[str, dict[str, Any]]) -> None:
    tags = {services[name].get("image") for name in APP_SERVICES}
    assert len(tags) == 1
    assert None not in tags


def test_app_services_reach_postgres_and_redis_by_service_name(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres_env = _environment(services["postgres"])
    for name in APP_SERVICES:
        env = _environment(services[name])
        database = urlsplit(env["SOVEREIGN_DATABASE_URL"])
        assert database.scheme in {"postgresql", "postgres"}
        assert database.hostname == "postgres", name
        assert (database.port or 5432) == 5432, name
        assert database.username == postgres_env["POSTGRES_USER"], name
        assert database.password == postgres_env["POSTGRES_PASSWORD"], name
        assert database.path.lstrip("/") == postgres_env["POSTGRES_DB"], name
        redis = urlsplit(env["SOVEREIGN_REDIS_URL"])
        assert redis.scheme == "redis", name
        assert redis.hostname == "redis", name
        assert (redis.port or 6379) == 6379, name


def test_app_services_share_one_environment(services: dict[str, dict[str, Any]]) -> None:
    environments = [_environment(services[name]) for name in sorted(APP_SERVICES)]
    assert all(env == environments[0] for env in environments), environments


def test_postgres_and_redis_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    postgres_check = " ".join(services["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in postgres_check
    redis_check = " ".join(services["redis"]["healthcheck"]["test"])
    assert "redis-cli" in redis_check
    assert "ping" in redis_check
    assert any(
        str(volume).split(":", 1)[1].startswith("/var/lib/postgresql/data")
        for volume in services["postgres"].get("volumes", [])
    )


def test_startup_order(services: dict[str, dict[str, Any]]) -> None:
    assert _depends_on(services["migrate"]).get("postgres") == "service_healthy"
    api = _depends_on(services["api"])
    assert api.get("migrate") == "service_completed_successfully"
    assert api.get("redis") == "service_healthy"
    for name in ("worker", "beat"):
        depends = _depends_on(services[name])
        assert depends.get("migrate") == "service_completed_successfully", name
        assert depends.get("redis") == "service_healthy", name


def test_migrate_runs_once(services: dict[str, dict[str, Any]]) -> None:
    assert str(services["migrate"].get("restart", "no")) == "no"


@pytest.mark.parametrize(("service", "expected"), sorted(EXPECTED_COMMANDS.items()))
def test_commands(services: dict[str, dict[str, Any]], service: str, expected: list[str]) -> None:
    assert _command(services[service]) == expected


@pytest.mark.parametrize("argv", sorted(EXPECTED_COMMANDS.values()))
def test_commands_exist_in_sovctl(argv: list[str]) -> None:
    command: Any = typer.main.get_command(sovctl_app)
    words = iter(argv[1:])
    for word in words:
        if word.startswith("--"):
            options = {opt for param in command.params for opt in getattr(param, "opts", [])}
            assert word in options, f"{argv}: no option {word}"
            next(words)  # its value
        else:
            assert word in getattr(command, "commands", {}), f"{argv}: no command {word}"
            command = command.commands[word]


def test_api_publishes_its_port_and_checks_readiness(
    services: dict[str, dict[str, Any]],
) -> None:
    api = services["api"]
    command = _command(api)
    port = command[command.index("--port") + 1]
    assert f"{port}:{port}" in [str(mapping) for mapping in api.get("ports", [])]
    check = api["healthcheck"]
    assert not check.get("disable", False)
    assert f"127.0.0.1:{port}/readyz" in " ".join(check["test"])


def test_services_without_http_do_not_inherit_the_http_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("migrate", "worker", "beat"):
        assert services[name].get("healthcheck", {}).get("disable") is True, name


def test_compose_sets_only_real_settings(services: dict[str, dict[str, Any]]) -> None:
    used = {
        key
        for service in services.values()
        for key in _environment(service)
        if key.upper().startswith(ENV_PREFIX)
    }
    assert {"SOVEREIGN_DATABASE_URL", "SOVEREIGN_REDIS_URL"} <= used
    unknown = sorted(key for key in used if not _setting_path_is_known(key))
    assert unknown == []


def test_setting_path_check_rejects_typos() -> None:
    assert _setting_path_is_known("SOVEREIGN_API__PORT")
    assert not _setting_path_is_known("SOVEREIGN_API__PROT")
    assert not _setting_path_is_known("SOVEREIGN_DATABASE_URI")
    assert not _setting_path_is_known("SOVEREIGN_REDIS_URL__HOST")


@pytest.mark.parametrize(
    ("shell", "expected"),
    [({}, "dev-insecure-secret"), ({"SOVEREIGN_SECRET_KEY": "from-the-shell"}, "from-the-shell")],
)
def test_api_environment_loads_as_settings(
    services: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    shell: dict[str, str],
    expected: str,
) -> None:
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    env = _environment(services["api"], shell)
    for key, value in env.items():
        monkeypatch.setenv(key, value)

    settings = load_settings()

    assert settings.env is Environment.DEV
    assert settings.database_url == env["SOVEREIGN_DATABASE_URL"]
    assert settings.redis_url == env["SOVEREIGN_REDIS_URL"]
    assert settings.secret_key.get_secret_value() == expected


# -- Dockerfile ------------------------------------------------------------------------


def _instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    result = []
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _final_stage(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    instructions = _instructions(dockerfile)
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def _exec_form(arguments: str) -> list[str]:
    parsed = yaml.safe_load(arguments) if arguments.startswith("[") else shlex.split(arguments)
    assert isinstance(parsed, list)
    return [str(part) for part in parsed]


def _base_images(dockerfile: Path) -> list[str]:
    """The image of each FROM line, with ``${ARG}`` defaults substituted."""
    instructions = _instructions(dockerfile)
    args = {
        rest.split("=", 1)[0]: rest.split("=", 1)[1]
        for keyword, rest in instructions
        if keyword == "ARG" and "=" in rest
    }
    images = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            image = rest.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), image))
    return images


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_dockerfile_is_multi_stage_python_311_slim_pinned_by_digest(dockerfile: Path) -> None:
    images = _base_images(dockerfile)
    assert len(images) >= 2
    assert all(image.startswith("python:3.11-slim") for image in images), images
    for image in images:
        assert re.fullmatch(r"[^@\s]+@sha256:[0-9a-f]{64}", image), f"not pinned: {image}"


def test_both_images_share_one_base() -> None:
    assert set(_base_images(DOCKERFILE)) == set(_base_images(AGENT_DOCKERFILE))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_final_stage_has_no_compiler_and_a_non_root_user(dockerfile: Path) -> None:
    stage = _final_stage(dockerfile)
    for keyword, rest in stage:
        if keyword == "RUN":
            assert not any(word in f"{rest} " for word in COMPILERS), rest
            assert not re.search(r"\bapt(-get)? install\b", rest), rest
    users = [rest.split(":")[0] for keyword, rest in stage if keyword == "USER"]
    assert users, f"{dockerfile.name}: the final stage runs as root"
    assert users[-1] not in {"root", "0"}
    copied = [rest for keyword, rest in stage if keyword == "COPY"]
    assert copied
    assert all(rest.startswith("--from=build ") for rest in copied), copied


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_installs_take_binary_wheels_only(dockerfile: Path) -> None:
    installs = [
        rest
        for keyword, rest in _instructions(dockerfile)
        if keyword == "RUN" and re.search(r"\bpip install\b", rest)
    ]
    assert installs
    assert all("--only-binary=:all:" in install for install in installs)


def test_dockerfile_installs_with_the_constraints_file_and_no_dev_extra() -> None:
    runs = [rest for keyword, rest in _instructions() if keyword == "RUN"]
    installs = [run for run in runs if re.search(r"\bpip install\b", run)]
    assert installs, "no pip install"
    for install in installs:
        words = shlex.split(install)
        assert "-c constraints.txt" in install or "--constraint constraints.txt" in install
        assert "." in words, install
        assert "[dev]" not in install
        assert "-e" not in words
    copied = " ".join(rest for keyword, rest in _instructions() if keyword == "COPY")
    assert "constraints.txt" in copied


def test_dockerfile_runs_sovctl_serve_as_non_root() -> None:
    stage = _final_stage()
    commands = [_exec_form(rest) for keyword, rest in stage if keyword in {"CMD", "ENTRYPOINT"}]
    assert any("sovctl" in command for command in commands)
    cmd = [_exec_form(rest) for keyword, rest in stage if keyword == "CMD"][-1]
    assert cmd == EXPECTED_COMMANDS["api"]
    users = [rest.split(":")[0] for keyword, rest in stage if keyword == "USER"]
    assert users, "final stage runs as root"
    assert users[-1] not in {"root", "0"}
    assert "8080" in [rest for keyword, rest in stage if keyword == "EXPOSE"]


def test_dockerfile_healthcheck_uses_python_on_healthz() -> None:
    checks = [rest for keyword, rest in _final_stage() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/healthz" in checks[0]
    assert "python" in checks[0]
    assert "curl" not in checks[0]


@pytest.mark.parametrize(
    ("dockerfile", "dockerignore"),
    [(DOCKERFILE, DOCKERIGNORE), (AGENT_DOCKERFILE, AGENT_DOCKERIGNORE)],
    ids=["Dockerfile", "agent.Dockerfile"],
)
def test_dockerignore_keeps_what_the_dockerfile_copies(
    dockerfile: Path, dockerignore: Path
) -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in dockerignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert ".venv" in ignored
    assert ".git" in ignored
    for keyword, rest in _instructions(dockerfile):
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _destination = shlex.split(rest)
        for source in sources:
            assert source not in ignored, f"{source} is copied but ignored"
            assert (ROOT / source).exists(), f"{source} is copied but missing"


# -- the agent image and the simulated fleet ---------------------------------------------


def test_agent_image_installs_only_the_agent_distribution() -> None:
    instructions = _instructions(AGENT_DOCKERFILE)
    copied = " ".join(rest for keyword, rest in instructions if keyword == "COPY")
    assert "control_plane" not in copied
    assert "pyproject.toml" not in copied.replace("agents/pyproject.toml", "")
    (install,) = [
        rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest
    ]
    assert "./agents[nvml]" in install
    assert "-c constraints.txt" in install
    stage = _final_stage(AGENT_DOCKERFILE)
    entrypoint = [_exec_form(rest) for keyword, rest in stage if keyword == "ENTRYPOINT"]
    assert entrypoint == [["sovereign-agent"]]
    cmd = [_exec_form(rest) for keyword, rest in stage if keyword == "CMD"][-1]
    agent_parser().parse_args(cmd)
    assert "9402" in [rest for keyword, rest in stage if keyword == "EXPOSE"]


def _fleet_argv(fleet: dict[str, Any], shell_env: dict[str, str]) -> list[str]:
    return [_interpolate(part, shell_env) for part in _command(fleet)]


def test_fleet_simulates_from_the_seeded_config(services: dict[str, dict[str, Any]]) -> None:
    fleet = services["fleet"]
    argv = _fleet_argv(fleet, {})
    args = agent_parser().parse_args(argv)
    assert args.command == "simulate"
    assert args.nodes == 50
    assert _fleet_argv(fleet, {"SIMULATED_NODES": "7"})[argv.index("--nodes") + 1] == "7"
    # The zones and origins `make up` simulates (sovctl demo seed creates those zones).
    assert args.zones.split(",") == list(demo.SIMULATED_ZONES)
    assert args.origins.split(",") == list(demo.SIMULATED_ORIGINS)
    # The config seed writes into the state directory they share.
    state_dir = _environment(services["seed"])["SOVEREIGN_STATE_DIR"]
    assert args.config == Path(state_dir) / "simulator.yaml"
    volumes = {str(v).split(":")[1]: str(v).split(":")[0] for v in fleet["volumes"]}
    seed_volumes = {str(v).split(":")[1]: str(v).split(":")[0] for v in services["seed"]["volumes"]}
    assert volumes[state_dir] == seed_volumes[state_dir]
    # The recording is the repository's, mounted read-only.
    mount = next(target for target in volumes if str(args.fixture).startswith(target))
    relative = args.fixture.relative_to(mount)
    assert (ROOT / volumes[mount] / relative / "nvml-dump.json").is_file()
    assert any(str(v).endswith(f"{mount}:ro") for v in fleet["volumes"])


def test_fleet_starts_after_seed_and_a_ready_api(services: dict[str, dict[str, Any]]) -> None:
    assert _depends_on(services["seed"]).get("migrate") == "service_completed_successfully"
    fleet = _depends_on(services["fleet"])
    assert fleet.get("seed") == "service_completed_successfully"
    assert fleet.get("api") == "service_healthy"
    assert str(services["seed"].get("restart", "no")) == "no"
    assert services["seed"]["healthcheck"]["disable"] is True


def test_seed_tells_the_fleet_where_the_api_is(services: dict[str, dict[str, Any]]) -> None:
    seed = _command(services["seed"])
    api = _command(services["api"])
    assert seed[seed.index("--port") + 1] == api[api.index("--port") + 1]
    assert seed[seed.index("--host") + 1] == "api"
