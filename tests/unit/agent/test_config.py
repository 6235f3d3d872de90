"""Agent configuration: file < environment < flags, and clear errors naming the key."""

from pathlib import Path

import pytest

from agents.config import AgentConfigError, load_config
from agents.protocol import DeclaredProvenance, HostFacts, Inventory, NodeRegister
from tests.certificates import make_tls_files

FILE = """\
version: v1
control_plane:
  url: https://cp.example:8443
  bootstrap_token: sov_from_file
sweep_interval_seconds: 5
metrics: {port: 9500}
spool: {max_entries: 100}
declared:
  zone: jp-east
  origin_country: TW
  component_origins: {gpu: TW, cpu: US}
labels: {team: research}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(FILE)
    return path


def test_file_values(config_file: Path) -> None:
    config = load_config(config_file, environ={})
    assert config.control_plane_url == "https://cp.example:8443"
    assert config.sweep_interval_seconds == 5.0
    assert config.metrics_port == 9500
    assert config.spool_max_entries == 100
    assert config.zone == "jp-east"
    assert dict(config.component_origins) == {"gpu": "TW", "cpu": "US"}
    inventory = Inventory(host=HostFacts(hostname="gpu-01", machine_id="m-1"))
    assert config.registration(inventory) == NodeRegister(
        inventory=inventory,
        zone="jp-east",
        site=None,
        labels={"team": "research"},
        provenance=DeclaredProvenance(
            origin_country="TW", component_origins={"gpu": "TW", "cpu": "US"}, asset_tag=None
        ),
    )


def test_environment_beats_file_and_flags_beat_environment(config_file: Path) -> None:
    environ = {
        "SOVEREIGN_AGENT_SWEEP_INTERVAL_SECONDS": "2",
        "SOVEREIGN_AGENT_ZONE": "jp-west",
        "SOVEREIGN_AGENT_LABELS": "team=infra,rack=a1",
    }
    config = load_config(config_file, environ=environ, flags={"zone": "tw-north", "site": None})
    assert config.sweep_interval_seconds == 2.0
    assert config.zone == "tw-north"
    assert dict(config.labels) == {"team": "infra", "rack": "a1"}
    assert config.bootstrap_token == "sov_from_file"


def test_config_path_from_the_environment(config_file: Path) -> None:
    config = load_config(environ={"SOVEREIGN_AGENT_CONFIG": str(config_file)})
    assert config.zone == "jp-east"


def test_missing_default_file_is_fine() -> None:
    assert load_config(environ={}).sweep_interval_seconds == 10.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: v2\n", "version must be one of v1"),
        ("version: v1\nsweep_intervall: 3\n", "unknown key sweep_intervall"),
        ("version: v1\ncontrol_plane: {uri: x}\n", "unknown key control_plane.uri"),
        ("version: v1\nsweep_interval_seconds: fast\n", "sweep_interval_seconds"),
        ("version: v1\nsweep_interval_seconds: 0\n", "greater than 0"),
        ("version: v1\ndeclared: {component_origins: {fpga: US}}\n", "unknown class 'fpga'"),
        ("version: v1\nmetrics: {port: 70000}\n", "metrics_port"),
        ("version: [v1\n", "not valid YAML"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(AgentConfigError, match=message):
        load_config(path, environ={})


def test_unknown_environment_variable_is_refused() -> None:
    with pytest.raises(AgentConfigError, match="SOVEREIGN_AGENT_ZONES"):
        load_config(environ={"SOVEREIGN_AGENT_ZONES": "x"})


def test_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml", environ={})


def test_bad_pairs_are_refused() -> None:
    with pytest.raises(AgentConfigError, match="labels"):
        load_config(environ={"SOVEREIGN_AGENT_LABELS": "team"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SOVEREIGN_AGENT_BACKEND": "dcgm"}, "backend: 'dcgm' is not one of"),
        ({"SOVEREIGN_AGENT_CONTROL_PLANE_URL": "cp.internal:8080"}, "must start with http"),
        ({"SOVEREIGN_AGENT_CA_BUNDLE": "/nonexistent/ca.pem"}, "no such file"),
    ],
)
def test_bad_values_are_one_line_errors(environ: dict[str, str], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        load_config(environ=environ)


def test_a_ca_bundle_without_a_pem_certificate_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    with pytest.raises(AgentConfigError) as raised:
        load_config(environ={"SOVEREIGN_AGENT_CA_BUNDLE": str(bundle)})
    assert str(raised.value) == (
        f"control_plane.ca_bundle: {bundle} holds no PEM certificate (NO_CERTIFICATE_OR_CRL_FOUND)"
    )


def test_a_pem_ca_bundle_is_taken(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path / "tls")
    config = load_config(environ={"SOVEREIGN_AGENT_CA_BUNDLE": str(files.ca_cert)})
    assert config.ca_bundle == files.ca_cert


def test_the_kubernetes_node_name_comes_from_the_daemonsets_variable_and_is_registered() -> None:
    config = load_config(
        environ={"SOVEREIGN_AGENT_KUBERNETES_NODE_NAME": "gpu-01.cluster.example"},
        flags={"kubernetes_node_name": None},
    )
    inventory = Inventory(host=HostFacts(hostname="gpu-01", machine_id="m-1"))
    assert config.registration(inventory).kubernetes_node_name == "gpu-01.cluster.example"
    flagged = load_config(
        environ={"SOVEREIGN_AGENT_KUBERNETES_NODE_NAME": "gpu-01"},
        flags={"kubernetes_node_name": "gpu-02"},
    )
    assert flagged.kubernetes_node_name == "gpu-02"
    # Unset (the chart without nodeNameEnv): none reported, so the sync matches by hostname.
    unset = load_config(environ={"SOVEREIGN_AGENT_KUBERNETES_NODE_NAME": ""})
    assert unset.registration(inventory).kubernetes_node_name is None
