"""The container files: docker-compose.yml and the Dockerfile, checked without Docker.

No Docker engine runs where these tests run, so nothing here calls the `docker` client, even
when the binary is installed: the files are parsed and checked against the contract and
against each other.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

CONTRACT_VARIABLES = (
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "HTTP_HOST",
    "HTTP_PORT",
    "RESERVES_API_TOKENS",
    "RESERVES_ERP_TOKENS",
    "RESERVE_REQUEST_TTL",
)
PACKAGE_PATHS = ("pyproject.toml", "README.md", "domain", "handlers", "projections", "services")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
_INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)


# --- compose ------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    try:
        yaml = importlib.import_module("yaml")
    except ModuleNotFoundError:
        pytest.fail(
            "PyYAML is not installed, so docker-compose.yml cannot be checked: "
            "add `pyyaml` to the `dev` extras in pyproject.toml and reinstall (`make install`)."
        )
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    document = _load_yaml(COMPOSE_FILE)
    assert isinstance(document, dict), "docker-compose.yml must be a mapping at the top level"
    return document


def _service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    services = compose.get("services")
    assert isinstance(services, dict), "docker-compose.yml has no `services` mapping"
    service = services.get(name)
    assert isinstance(service, dict), f"docker-compose.yml has no `{name}` service"
    return service


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as strings, whether written as a mapping or as a list."""
    raw = service.get("environment", {})
    env: dict[str, str] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            if value is None:
                continue  # passed through from the host only if set there: not "set" here
            env[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    else:
        assert isinstance(raw, list), "`environment` must be a mapping or a list"
        for item in raw:
            key, sep, value = str(item).partition("=")
            if sep:
                env[key] = value
    return env


@dataclass(frozen=True)
class _Reference:
    name: str
    operator: str | None
    argument: str


def _references(value: str) -> list[_Reference]:
    return [
        _Reference(m["name"], m["op"], m["arg"] or "") for m in _INTERPOLATION.finditer(value)
    ]


def _with_defaults(value: str) -> str:
    """The value compose would use when the host sets none of the variables it refers to."""

    def substitute(match: re.Match[str]) -> str:
        op = match["op"]
        if op in ("-", ":-"):
            return match["arg"] or ""
        raise AssertionError(f"{match[0]} has no default")

    return _INTERPOLATION.sub(substitute, value)


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    assert sep and host and port.isdigit(), f"{address!r} is not host:port"
    return host, int(port)


def _advertised_listeners(kafka_env: dict[str, str]) -> Iterator[tuple[str, str, int]]:
    for listener in kafka_env.get("KAFKA_ADVERTISED_LISTENERS", "").split(","):
        name, sep, address = listener.strip().partition("://")
        if sep:
            host, port = _host_port(address)
            yield name, host, port


def test_compose_defines_postgres_kafka_and_reserves_services(compose: dict[str, Any]) -> None:
    services = compose.get("services")
    assert isinstance(services, dict)
    assert {"postgres", "kafka", "reserves"} <= set(services)


def test_reserves_starts_only_after_postgres_and_kafka_are_healthy(
    compose: dict[str, Any],
) -> None:
    reserves = _service(compose, "reserves")
    depends_on = reserves.get("depends_on")
    assert isinstance(depends_on, dict), (
        "reserves.depends_on must use the long form, with conditions"
    )
    for dependency in ("postgres", "kafka"):
        assert dependency in depends_on, f"reserves does not depend on {dependency}"
        assert depends_on[dependency].get("condition") == "service_healthy", (
            f"reserves must wait for {dependency} to be healthy, not merely started"
        )
        assert "healthcheck" in _service(compose, dependency), (
            f"{dependency} has no healthcheck, so service_healthy would never be reached"
        )


def test_reserves_is_built_from_this_repository_and_restarts_unless_stopped(
    compose: dict[str, Any],
) -> None:
    reserves = _service(compose, "reserves")
    build = reserves.get("build")
    context = build.get("context", ".") if isinstance(build, dict) else build
    assert context in (".", "./"), f"reserves must be built from the repository root, not {build!r}"
    assert reserves.get("restart") == "unless-stopped"


@pytest.mark.parametrize("variable", CONTRACT_VARIABLES)
def test_reserves_sets_every_contract_variable(compose: dict[str, Any], variable: str) -> None:
    env = _environment(_service(compose, "reserves"))
    assert env.get(variable, "").strip(), f"reserves does not set {variable}"


@pytest.mark.parametrize("variable", ["RESERVES_API_TOKENS", "RESERVES_ERP_TOKENS"])
def test_tokens_come_from_the_host_and_compose_refuses_to_start_without_them(
    compose: dict[str, Any], variable: str
) -> None:
    value = _environment(_service(compose, "reserves"))[variable]
    references = _references(value)
    assert [r.name for r in references] == [variable], (
        f"{variable} must be taken from the host's {variable}, not written into the file"
    )
    (reference,) = references
    assert reference.operator == ":?", (
        f"{variable} must use ${{{variable}:?message}} so a missing or empty value stops compose"
    )
    assert reference.argument.strip(), f"{variable}'s :? needs a message telling what to set"


def test_request_ttl_can_be_overridden_from_the_host_and_defaults_to_one_day(
    compose: dict[str, Any],
) -> None:
    value = _environment(_service(compose, "reserves"))["RESERVE_REQUEST_TTL"]
    assert [r.name for r in _references(value)] == ["RESERVE_REQUEST_TTL"]
    assert _with_defaults(value) == "86400"


def test_reserves_listens_on_all_interfaces_on_the_published_port(
    compose: dict[str, Any],
) -> None:
    reserves = _service(compose, "reserves")
    env = _environment(reserves)
    assert env["HTTP_HOST"] == "0.0.0.0", "a container bound to 127.0.0.1 cannot be reached"
    port = env["HTTP_PORT"]
    published = [str(p) for p in reserves.get("ports", [])]
    assert any(p.rpartition(":")[2].split("/")[0] == port for p in published), (
        f"reserves listens on {port} but publishes only {published}"
    )
    assert "8000:8000" in published


def test_database_url_points_at_the_postgres_service_with_its_credentials(
    compose: dict[str, Any],
) -> None:
    url = urlsplit(_environment(_service(compose, "reserves"))["DATABASE_URL"])
    postgres_env = _environment(_service(compose, "postgres"))
    assert url.scheme in ("postgresql", "postgres")
    assert url.hostname == "postgres", "DATABASE_URL must name the postgres service as its host"
    assert (url.port or 5432) == 5432
    assert url.username == postgres_env.get("POSTGRES_USER", "postgres")
    assert url.password == postgres_env.get("POSTGRES_PASSWORD")
    database = url.path.lstrip("/")
    assert database == postgres_env.get("POSTGRES_DB", postgres_env.get("POSTGRES_USER"))


def test_postgres_keeps_its_data_in_a_named_volume_and_reports_readiness(
    compose: dict[str, Any],
) -> None:
    postgres = _service(compose, "postgres")
    assert str(postgres.get("image", "")).startswith("postgres:16")
    named_volumes = set(compose.get("volumes") or {})
    mounts = [str(v) for v in postgres.get("volumes", [])]
    assert any(
        m.partition(":")[0] in named_volumes and ":/var/lib/postgresql/data" in m for m in mounts
    ), f"postgres data must live in a named volume, got {mounts}"
    assert "pg_isready" in json.dumps(postgres["healthcheck"]["test"])


def test_kafka_bootstrap_servers_match_a_listener_the_broker_advertises(
    compose: dict[str, Any],
) -> None:
    bootstrap = _environment(_service(compose, "reserves"))["KAFKA_BOOTSTRAP_SERVERS"]
    advertised = {
        (host, port) for _, host, port in _advertised_listeners(
            _environment(_service(compose, "kafka"))
        )
    }
    for server in bootstrap.split(","):
        assert _host_port(server) in advertised, (
            f"{server} is not among the kafka service's advertised listeners {sorted(advertised)}"
        )


def test_kafka_advertises_the_service_name_inside_and_localhost_outside(
    compose: dict[str, Any],
) -> None:
    kafka = _service(compose, "kafka")
    listeners = {name: (host, port) for name, host, port in _advertised_listeners(
        _environment(kafka)
    )}
    assert listeners.get("PLAINTEXT") == ("kafka", 9092)
    assert listeners.get("EXTERNAL") == ("localhost", 29092)
    published = [str(p) for p in kafka.get("ports", [])]
    assert any(p.endswith(":29092") for p in published), (
        f"the EXTERNAL listener must be published for the host, got {published}"
    )
    assert not any(p.endswith(":9092") for p in published), (
        "the PLAINTEXT listener advertises `kafka`, which the host cannot resolve"
    )


def test_kafka_runs_kraft_as_one_combined_broker_and_controller(
    compose: dict[str, Any],
) -> None:
    kafka = _service(compose, "kafka")
    env = _environment(kafka)
    assert str(kafka.get("image")) == "apache/kafka:3.9.0"
    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    assert {"broker", "controller"} <= roles
    assert env.get("KAFKA_CONTROLLER_LISTENER_NAMES"), "KRaft needs a controller listener"
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").startswith(env.get("KAFKA_NODE_ID", "?"))
    assert "zookeeper" not in json.dumps(kafka).lower()


def test_kafka_does_not_create_topics_on_first_use(compose: dict[str, Any]) -> None:
    env = _environment(_service(compose, "kafka"))
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "").lower() == "false"


def test_kafka_health_is_probed_with_the_broker_api_versions_tool(
    compose: dict[str, Any],
) -> None:
    test = json.dumps(_service(compose, "kafka")["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in test


def test_reserves_uses_the_idempotent_producer_against_real_kafka(
    compose: dict[str, Any],
) -> None:
    env = _environment(_service(compose, "reserves"))
    assert env.get("KAFKA_ENABLE_IDEMPOTENCE", "").lower() == "true"


# --- Dockerfile ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Instruction:
    keyword: str
    arguments: str


def _instructions(text: str) -> list[_Instruction]:
    """Dockerfile instructions, with comments dropped and continuation lines joined."""
    instructions: list[_Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, arguments = whole.partition(" ")
        instructions.append(_Instruction(keyword.upper(), arguments.strip()))
    if pending.strip():
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append(_Instruction(keyword.upper(), arguments.strip()))
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[_Instruction]:
    assert DOCKERFILE.is_file(), f"{DOCKERFILE} is missing"
    return _instructions(DOCKERFILE.read_text(encoding="utf-8"))


def _final_stage(instructions: list[_Instruction]) -> list[_Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1]:]


def _exec_form(arguments: str) -> list[str]:
    if arguments.startswith("["):
        parsed = json.loads(arguments)
        assert isinstance(parsed, list) and all(isinstance(a, str) for a in parsed)
        return [str(a) for a in parsed]
    return shlex.split(arguments)


def _copy_sources(instruction: _Instruction) -> list[str]:
    words = _exec_form(instruction.arguments)
    while words and words[0].startswith("--"):
        words = words[1:]
    return words[:-1]


def test_image_is_based_on_python_3_11_slim(dockerfile: list[_Instruction]) -> None:
    images = [ins.arguments.split()[0] for ins in dockerfile if ins.keyword == "FROM"]
    assert images, "the Dockerfile has no FROM"
    final = _final_stage(dockerfile)[0].arguments.split()[0]
    assert final == "python:3.11-slim"


def test_image_runs_reserves_serve(dockerfile: list[_Instruction]) -> None:
    commands = [ins for ins in _final_stage(dockerfile) if ins.keyword == "CMD"]
    assert commands, "the final stage has no CMD"
    assert _exec_form(commands[-1].arguments) == ["reserves", "serve"]
    assert not any(ins.keyword == "ENTRYPOINT" for ins in _final_stage(dockerfile)), (
        "an ENTRYPOINT would change what CMD runs"
    )


def test_image_does_not_run_as_root(dockerfile: list[_Instruction]) -> None:
    users = [ins for ins in _final_stage(dockerfile) if ins.keyword == "USER"]
    assert users, "the final stage has no USER line, so the service would run as root"
    user = users[-1].arguments.split(":")[0].strip()
    assert user not in ("root", "0", ""), f"the image runs as {users[-1].arguments!r}"


def test_image_listens_on_all_interfaces_on_the_exposed_port(
    dockerfile: list[_Instruction],
) -> None:
    final = _final_stage(dockerfile)
    exposed = {
        port.split("/")[0]
        for ins in final
        if ins.keyword == "EXPOSE"
        for port in ins.arguments.split()
    }
    assert "8000" in exposed
    env_text = " ".join(ins.arguments for ins in final if ins.keyword == "ENV")
    assert re.search(r"\bHTTP_HOST=0\.0\.0\.0\b", env_text), "the image must set HTTP_HOST=0.0.0.0"


def test_image_probes_health_without_curl(dockerfile: list[_Instruction]) -> None:
    checks = [ins for ins in _final_stage(dockerfile) if ins.keyword == "HEALTHCHECK"]
    assert checks, "the final stage has no HEALTHCHECK"
    probe = checks[-1].arguments
    assert "python" in probe and "/health" in probe and "127.0.0.1" in probe
    assert "curl" not in probe and "wget" not in probe, "python:3.11-slim has neither curl nor wget"


def test_image_installs_the_project_from_pyproject(dockerfile: list[_Instruction]) -> None:
    copied = {
        source.rstrip("/")
        for ins in dockerfile
        if ins.keyword == "COPY" and "--from" not in ins.arguments
        for source in _copy_sources(ins)
    }
    assert set(PACKAGE_PATHS) <= copied, f"the image does not copy {set(PACKAGE_PATHS) - copied}"
    installs = [ins.arguments for ins in dockerfile if ins.keyword == "RUN"]
    assert any(re.search(r"\bpip install (?:[^&|;]* )?\.(?:\s|$)", run) for run in installs), (
        "the image must `pip install .` the project"
    )


def test_every_path_the_image_copies_exists_in_the_repository(
    dockerfile: list[_Instruction],
) -> None:
    for ins in dockerfile:
        if ins.keyword != "COPY" or "--from" in ins.arguments:
            continue
        for source in _copy_sources(ins):
            assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"


def test_docker_build_context_leaves_out_local_state_and_tests() -> None:
    ignore = ROOT / ".dockerignore"
    assert ignore.is_file(), ".dockerignore is missing"
    patterns = {
        line.strip().rstrip("/")
        for line in ignore.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", "var", ".git", "tests"} <= patterns
    assert not {p for p in patterns if p.startswith("!")}, "nothing should be re-included"
    for needed in PACKAGE_PATHS:
        assert needed not in patterns, f".dockerignore leaves out {needed}, which the image needs"
