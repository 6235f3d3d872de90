"""helm/sovereign, rendered and strictly linted with the real Helm v4 SDK (no binary, no
cluster), with every rendered object validated against the Kubernetes 1.34+ schemas.

Each value set is rendered once per module; the tests then read the objects. The schemas
are kubernetes-validate's strict ones (an unknown field is an error). cert-manager's and
the Prometheus Operator's kinds are not in them, so they are checked against the small
schemas below, written from those projects' API references for the fields the chart sets.
"""

import base64
import json
import re
import ssl
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cel
import helm_python as helm
import jsonschema
import pytest
import typer.main
import uvicorn
import yaml
from kubernetes_validate import utils as kubernetes_validate
from pydantic import BaseModel

from agents.cli import _parser as agent_parser
from agents.config import load_config
from control_plane.app import create_app
from control_plane.cli.main import app as sovctl_app
from control_plane.core import tls
from control_plane.core.settings import ENV_PREFIX, AdmissionSettings, Settings
from tests.certificates import make_tls_files

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "sovereign"
RELEASE = "sov"
NAMESPACE = "sovereign"
API_SERVICE = f"{RELEASE}-sovereign-api"
WEBHOOK_SERVICE = f"{RELEASE}-sovereign-webhooks"
TLS_SECRET = f"{RELEASE}-sovereign-tls"
WORKER_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-sovereign-worker"
#: The oldest Kubernetes the chart is validated for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.34.0", kubernetes_validate.latest_version())
#: What makes the API serve HTTPS: the chart sets both with TLS on, neither without.
TLS_SETTINGS = {"SOVEREIGN_TLS_CERT_FILE", "SOVEREIGN_TLS_KEY_FILE"}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "cert-manager": {"tls": {"mode": "certManager"}},
    "cert-manager-issuer": {
        "tls": {
            "mode": "certManager",
            "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"}},
        }
    },
    "external-database": {
        "database": {"existingSecret": "corp-postgres", "key": "dsn"},
        "redis": {"existingSecret": "corp-redis", "key": "uri"},
        "secretKey": {"existingSecret": "corp-sovereign-key", "key": "hmac"},
        "image": {"digest": "sha256:" + "ab" * 32},
    },
    "agent-off": {"agent": {"enabled": False}},
    "service-monitor": {
        "metrics": {"serviceMonitor": {"enabled": True}, "grafanaDashboard": {"enabled": True}}
    },
    "evictions-only": {"evictions": {"enabled": True}, "labelSync": {"enabled": False}},
    "webhook-mtls": {
        "webhooks": {
            "replicas": 1,
            "clientCA": {"secretName": "apiserver-client-ca"},
            "clientNames": ["kube-apiserver"],
            "affinity": "zones",
            "undeclaredAllowedNamespaces": ["research"],
            "namespaceTenants": {"ml-prod": "research"},
        },
        "networkPolicy": {"webhooksFrom": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]},
    },
    "plain-http": {
        "tls": {"enabled": False},
        "webhooks": {"enabled": False},
        "labelSync": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "api": {"podAntiAffinity": "hard", "podDisruptionBudget": {"enabled": False}},
        "agent": {
            "runAsRoot": False,
            "runtimeClassName": "",
            "declared": {"zone": "jp-east", "originCountry": "TW", "labels": {"rack": "a1"}},
        },
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
}


# -- schemas of the custom resources the chart may render --------------------------------


def _strict(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": required or [],
    }


_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": _STRING, "namespace": _STRING, "labels": {"type": "object"}},
}
_ISSUER_REF = _strict({"name": _STRING, "kind": _STRING, "group": _STRING}, ["name"])


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _strict(
        {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


CUSTOM_RESOURCE_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    # cert-manager.io/v1 (cert-manager.io/docs/reference/api-docs).
    ("cert-manager.io/v1", "Issuer"): _resource(
        "cert-manager.io/v1",
        "Issuer",
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "selfSigned": _strict({}),
                "ca": _strict({"secretName": _STRING}, ["secretName"]),
            },
        },
    ),
    ("cert-manager.io/v1", "Certificate"): _resource(
        "cert-manager.io/v1",
        "Certificate",
        _strict(
            {
                "secretName": _STRING,
                "isCA": {"type": "boolean"},
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": _STRINGS,
                "ipAddresses": _STRINGS,
                "duration": {"type": "string", "pattern": "^[0-9]+h$"},
                "renewBefore": {"type": "string", "pattern": "^[0-9]+h$"},
                "usages": {
                    "type": "array",
                    "items": {
                        "enum": [
                            "digital signature",
                            "key encipherment",
                            "server auth",
                            "client auth",
                            "cert sign",
                        ]
                    },
                },
                "privateKey": _strict(
                    {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    }
                ),
                "issuerRef": _ISSUER_REF,
            },
            ["secretName", "issuerRef"],
        ),
    ),
    # monitoring.coreos.com/v1 (prometheus-operator.dev/docs/api-reference/api).
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _resource(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        _strict(
            {
                "selector": _strict({"matchLabels": {"type": "object"}}, ["matchLabels"]),
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {
                            "port": _STRING,
                            "path": _STRING,
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "tlsConfig": _strict(
                                {
                                    "serverName": _STRING,
                                    "ca": _strict(
                                        {"secret": _strict({"name": _STRING, "key": _STRING})}
                                    ),
                                }
                            ),
                            "relabelings": {
                                "type": "array",
                                "items": _strict(
                                    {"sourceLabels": _STRINGS, "targetLabel": _STRING}
                                ),
                            },
                        },
                        ["port"],
                    ),
                },
            },
            ["selector", "endpoints"],
        ),
    ),
}


# -- rendering, once per value set -------------------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def rendered(chart: helm.Chart) -> dict[str, dict[str, str]]:
    """Template path -> manifest text, per value set."""
    return {
        name: chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        for name, values in VALUE_SETS.items()
    }


@pytest.fixture(scope="module")
def objects(rendered: dict[str, dict[str, str]]) -> dict[str, list[dict[str, Any]]]:
    """Every Kubernetes object each value set renders."""
    result: dict[str, list[dict[str, Any]]] = {}
    for name, manifests in rendered.items():
        found: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                continue
            found.extend(document for document in yaml.safe_load_all(text) if document)
        result[name] = found
    return result


def _all(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        item for item in _all(objects, kind) if name is None or item["metadata"]["name"] == name
    ]
    assert len(matches) == 1, f"{len(matches)} {kind} named {name}"
    return matches[0]


def _workload(objects: list[dict[str, Any]], component: str) -> dict[str, Any]:
    """The Deployment, DaemonSet or Job of a component."""
    name = f"{RELEASE}-sovereign-{component}"
    matches = [
        item
        for item in objects
        if item["kind"] in {"Deployment", "DaemonSet", "Job"} and item["metadata"]["name"] == name
    ]
    assert len(matches) == 1, name
    return matches[0]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


CONTROL_PLANE = ("api", "worker", "beat", "migrate")


# -- the chart as a whole ----------------------------------------------------------------


def test_chart_is_v2_and_runs_the_projects_version(chart: helm.Chart) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart.metadata["apiVersion"] == "v2"
    assert chart.metadata["appVersion"] == project["version"]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_strict_lint_passes(value_set: str) -> None:
    report = helm.lint(
        CHART_DIR,
        VALUE_SETS[value_set],
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBERNETES_VERSIONS[0]}",
    )
    assert report["errors"] == []
    # Severity 2 is a warning, 3 an error; 1 (info) is only "icon is recommended".
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_object_validates(
    objects: dict[str, list[dict[str, Any]]], value_set: str, version: str
) -> None:
    assert objects[value_set]
    for item in objects[value_set]:
        custom = CUSTOM_RESOURCE_SCHEMAS.get((item["apiVersion"], item["kind"]))
        if custom is not None:
            jsonschema.validate(item, custom)
            continue
        # SchemaNotFoundError for any other kind: the chart ships nothing unchecked.
        kubernetes_validate.validate(item, version, strict=True)


def test_kubernetes_validate_refuses_an_unknown_field(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    broken = json.loads(json.dumps(_workload(objects["default"], "api")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_every_namespaced_object_is_in_the_release_namespace(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    cluster_scoped = {
        "ClusterRole",
        "ClusterRoleBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    }
    for items in objects.values():
        for item in items:
            if item["kind"] in cluster_scoped:
                assert "namespace" not in item["metadata"]
            else:
                assert item["metadata"]["namespace"] == NAMESPACE, item["metadata"]["name"]


# -- values.schema.json ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"webhook": {"enabled": False}}, "webhook"),
        ({"api": {"replica": 3}}, "replica"),
        ({"beat": {"replicas": 2}}, "replicas"),
        ({"webhooks": {"failurePolicy": "Sometimes"}}, "failurePolicy"),
        ({"webhooks": {"timeoutSeconds": 31}}, "timeoutSeconds"),
        ({"tls": {"mode": "selfSigned"}}, "mode"),
        ({"database": {"existingSecret": ""}}, "existingSecret"),
        ({"settings": {"SOVEREIGN_AGENT_ZONE": "x"}}, "SOVEREIGN_AGENT_ZONE"),
        ({"image": {"digest": "latest"}}, "digest"),
    ],
)
def test_schema_refuses_a_bad_value(
    chart: helm.Chart, values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        chart.validate_schema(chart.merge_values(values))
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_schema_is_draft_07_and_closed(chart: helm.Chart) -> None:
    schema = chart.schema
    assert schema is not None
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(chart.values)
    for section in ("api", "worker", "beat", "agent", "tls", "webhooks", "database", "metrics"):
        assert schema["properties"][section]["additionalProperties"] is False, section
    chart.validate_schema(chart.values)


def test_webhooks_without_tls_are_refused(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"needs tls\.enabled"):
        chart.render({"tls": {"enabled": False}}, name=RELEASE, namespace=NAMESPACE)


# -- the control plane -------------------------------------------------------------------


def _registered_paths() -> set[str]:
    app = create_app(Settings())
    return {route.path for route in app.routes if hasattr(route, "path")}


def test_api_probes_use_the_apps_health_routes(objects: dict[str, list[dict[str, Any]]]) -> None:
    paths = _registered_paths()
    for value_set, scheme in (("default", "HTTPS"), ("plain-http", "HTTP")):
        api = _container(_workload(objects[value_set], "api"))
        assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert api[probe]["httpGet"]["path"] in paths
            assert api[probe]["httpGet"]["scheme"] == scheme
        assert api["resources"]["requests"]


def test_control_plane_commands_exist_in_sovctl(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    for component in CONTROL_PLANE:
        argv = _container(_workload(objects["default"], component))["command"]
        assert argv[0] == "sovctl"
        command: Any = typer.main.get_command(sovctl_app)
        words = iter(argv[1:])
        for word in words:
            if word.startswith("--"):
                options = {o for param in command.params for o in getattr(param, "opts", [])}
                assert word in options, f"{argv}: no option {word}"
                next(words)
            else:
                assert word in command.commands, f"{argv}: no command {word}"
                command = command.commands[word]


def test_api_has_replicas_a_disruption_budget_and_anti_affinity(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    default = objects["default"]
    api = _workload(default, "api")
    assert api["spec"]["replicas"] == 2
    selector = api["spec"]["selector"]["matchLabels"]
    budget = _one(default, "PodDisruptionBudget", f"{RELEASE}-sovereign-api")
    assert budget["spec"]["selector"]["matchLabels"] == selector
    assert budget["spec"]["maxUnavailable"] == 1
    soft = api["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = soft["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == selector
    hard = _workload(objects["plain-http"], "api")["spec"]["template"]["spec"]["affinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" in hard["podAntiAffinity"]
    assert _all(objects["plain-http"], "PodDisruptionBudget") == []


def test_beat_is_one_replica_replaced_not_rolled(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    beat = _workload(objects["default"], "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    env = _env(_container(beat))
    mounts = {m["mountPath"] for m in _container(beat)["volumeMounts"]}
    assert env["SOVEREIGN_STATE_DIR"]["value"] in mounts


def test_migrations_run_as_a_pre_install_and_pre_upgrade_hook(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    job = _workload(objects["default"], "migrate")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert _container(job)["command"] == ["sovctl", "db", "upgrade"]
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    # A pre-install hook runs before the release's own ServiceAccounts exist.
    assert "serviceAccountName" not in spec
    assert spec["automountServiceAccountToken"] is False


def _setting_is_known(variable: str) -> bool:
    """True when ``SOVEREIGN_A__B`` names a field of Settings (and ``b`` inside ``a``)."""
    model: type[BaseModel] = Settings
    parts = variable.removeprefix(ENV_PREFIX).lower().split("__")
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


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_control_plane_env_names_real_settings(
    objects: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    for component in CONTROL_PLANE:
        for name in _env(_container(_workload(objects[value_set], component))):
            assert name.startswith(ENV_PREFIX), name
            assert _setting_is_known(name), f"{component}: {name}"


def test_the_webhooks_have_their_own_listener_apart_from_the_api(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    """`sovctl serve-webhooks`: own Deployment, Service, PDB, NetworkPolicy; no /k8s on the API."""
    default = objects["default"]
    listener = _workload(default, "webhooks")
    container = _container(listener)
    assert container["command"][:2] == ["sovctl", "serve-webhooks"]
    assert listener["spec"]["replicas"] == 2
    assert listener["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    env = _env(container)
    # The release's own namespace and its worker, whatever the release is called.
    assert json.loads(env["SOVEREIGN_ADMISSION__EXEMPT_NAMESPACES"]["value"]) == [
        NAMESPACE,
        "kube-system",
        "kube-public",
        "kube-node-lease",
    ]
    assert env["SOVEREIGN_ADMISSION__LABEL_SYNC_USER"]["value"] == (
        f"system:serviceaccount:{NAMESPACE}:{RELEASE}-sovereign-worker"
    )
    assert "SOVEREIGN_ADMISSION__CLIENT_CA_FILE" not in env
    assert env["SOVEREIGN_ADMISSION__AFFINITY"]["value"] == "node_ids"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    selector = listener["spec"]["selector"]["matchLabels"]
    service = _one(default, "Service", WEBHOOK_SERVICE)
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["port"] == 443
    budget = _one(default, "PodDisruptionBudget", f"{RELEASE}-sovereign-webhooks")
    assert budget["spec"]["minAvailable"] == 1
    policy = _one(default, "NetworkPolicy", f"{RELEASE}-sovereign-webhooks")
    assert policy["spec"]["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]
    api_env = _env(_container(_workload(default, "api")))
    assert not [name for name in api_env if name.startswith("SOVEREIGN_ADMISSION__")]
    assert _all(objects["plain-http"], "ValidatingWebhookConfiguration") == []
    assert [
        item for item in objects["plain-http"] if item["metadata"]["name"].endswith("-webhooks")
    ] == []


def test_a_client_ca_makes_the_listener_require_the_api_servers_certificate(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    items = objects["webhook-mtls"]
    listener = _workload(items, "webhooks")
    container = _container(listener)
    env = _env(container)
    ca_file = Path(env["SOVEREIGN_ADMISSION__CLIENT_CA_FILE"]["value"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert str(ca_file.parent) == mounts["client-ca"]
    volume = next(
        v for v in listener["spec"]["template"]["spec"]["volumes"] if v["name"] == "client-ca"
    )
    assert volume["secret"]["secretName"] == "apiserver-client-ca"
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": ca_file.name}]
    assert json.loads(env["SOVEREIGN_ADMISSION__CLIENT_NAMES"]["value"]) == ["kube-apiserver"]
    assert json.loads(env["SOVEREIGN_ADMISSION__UNDECLARED_ALLOWED_NAMESPACES"]["value"]) == [
        "research"
    ]
    assert json.loads(env["SOVEREIGN_ADMISSION__NAMESPACE_TENANTS"]["value"]) == {
        "ml-prod": "research"
    }
    # The kubelet has no client certificate: under mTLS the probes check the port.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["tcpSocket"] == {"port": "https"}, probe
    # One replica: no budget that would block every drain.
    assert f"{RELEASE}-sovereign-webhooks" not in {
        b["metadata"]["name"] for b in _all(items, "PodDisruptionBudget")
    }
    policy = _one(items, "NetworkPolicy", f"{RELEASE}-sovereign-webhooks")
    assert policy["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/24"}}]
    # The settings the chart writes are the ones the listener reads.
    settings = AdmissionSettings.model_validate(
        {
            "client_ca_file": str(ca_file),
            "client_names": json.loads(env["SOVEREIGN_ADMISSION__CLIENT_NAMES"]["value"]),
            "exempt_namespaces": json.loads(env["SOVEREIGN_ADMISSION__EXEMPT_NAMESPACES"]["value"]),
            "affinity": env["SOVEREIGN_ADMISSION__AFFINITY"]["value"],
        }
    )
    assert settings.client_names == ["kube-apiserver"]
    assert settings.affinity == "zones"


def test_external_database_redis_and_key_come_from_the_named_secrets(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    expected = {
        "SOVEREIGN_DATABASE_URL": {"name": "corp-postgres", "key": "dsn"},
        "SOVEREIGN_REDIS_URL": {"name": "corp-redis", "key": "uri"},
        "SOVEREIGN_SECRET_KEY": {"name": "corp-sovereign-key", "key": "hmac"},
    }
    for component in CONTROL_PLANE:
        workload = _workload(objects["external-database"], component)
        env = _env(_container(workload))
        for name, reference in expected.items():
            assert env[name]["valueFrom"]["secretKeyRef"] == reference, (component, name)
            assert "value" not in env[name]
        assert env["SOVEREIGN_ENV"]["value"] == "prod"
        assert _container(workload)["image"] == "sovereign/control-plane@sha256:" + "ab" * 32
    # The chart ships no Secret of these: they exist before the install.
    assert [s["metadata"]["name"] for s in _all(objects["external-database"], "Secret")] == [
        TLS_SECRET
    ]


def test_api_serves_tls_from_the_certificate_secret(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    for value_set in ("default", "cert-manager"):
        api = _workload(objects[value_set], "api")
        container = _container(api)
        env = _env(container)
        mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
        assert env["SOVEREIGN_TLS_CERT_FILE"]["value"] == f"{mount['mountPath']}/tls.crt"
        assert env["SOVEREIGN_TLS_KEY_FILE"]["value"] == f"{mount['mountPath']}/tls.key"
        volume = next(v for v in api["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
        assert volume["secret"]["secretName"] == TLS_SECRET
    plain = _env(_container(_workload(objects["plain-http"], "api")))
    assert not TLS_SETTINGS & set(plain)


# -- security ------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_container_is_locked_down(
    objects: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    for item in objects[value_set]:
        if item["kind"] not in {"Deployment", "DaemonSet", "Job"}:
            continue
        pod = item["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "add" not in context["capabilities"]
            assert not context.get("privileged", False)
        if item["metadata"]["name"].endswith("-agent"):
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert all(c["securityContext"]["runAsNonRoot"] is True for c in pod["containers"])


def test_agent_runs_as_root_only_when_asked(objects: dict[str, list[dict[str, Any]]]) -> None:
    root = _workload(objects["default"], "agent")["spec"]["template"]["spec"]["securityContext"]
    assert root["runAsUser"] == 0
    plain = _workload(objects["plain-http"], "agent")["spec"]["template"]["spec"]
    assert plain["securityContext"]["runAsNonRoot"] is True
    assert plain["securityContext"]["runAsUser"] == 10001
    assert plain["containers"][0]["securityContext"]["runAsNonRoot"] is True


def test_rbac_follows_the_feature_flags(objects: dict[str, list[dict[str, Any]]]) -> None:
    def rules(value_set: str) -> dict[str, set[str]]:
        roles = _all(objects[value_set], "ClusterRole")
        return {
            resource: set(rule["verbs"])
            for role in roles
            for rule in role["rules"]
            for resource in rule["resources"]
        }

    assert rules("default") == {"nodes": {"get", "list", "watch", "patch"}}
    assert rules("evictions-only") == {"pods": {"get", "list"}, "pods/eviction": {"create"}}
    assert rules("plain-http") == {}
    assert _all(objects["plain-http"], "ClusterRoleBinding") == []
    binding = _one(objects["default"], "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{RELEASE}-sovereign-worker", "namespace": NAMESPACE}
    ]
    assert _all(objects["default"], "Role") == []
    for value_set, mounted in (("default", True), ("plain-http", False)):
        worker = _workload(objects[value_set], "worker")["spec"]["template"]["spec"]
        assert worker["automountServiceAccountToken"] is mounted
    for component in ("api", "beat", "agent"):
        pod = _workload(objects["default"], component)["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, component
    # Beat schedules the pod sweep exactly where the worker may evict.
    for value_set, sweeping in (("default", "false"), ("evictions-only", "true")):
        for component in ("worker", "beat"):
            env = _env(_container(_workload(objects[value_set], component)))
            assert env["SOVEREIGN_KUBERNETES__POD_SWEEP_ENABLED"]["value"] == sweeping


def test_network_policies(objects: dict[str, list[dict[str, Any]]]) -> None:
    policies = {p["metadata"]["name"]: p for p in _all(objects["default"], "NetworkPolicy")}
    api = policies[f"{RELEASE}-sovereign-api"]["spec"]
    assert api["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]
    for component in ("worker", "beat", "migrate"):
        spec = policies[f"{RELEASE}-sovereign-{component}"]["spec"]
        assert spec["ingress"] == []
        assert spec["policyTypes"] == ["Ingress"]
    assert _all(objects["plain-http"], "NetworkPolicy") == []


# -- admission webhooks ------------------------------------------------------------------


def _webhooks(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        hook
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for configuration in _all(objects, kind)
        for hook in configuration["webhooks"]
    ]


def test_webhooks_fail_closed_at_the_configured_paths(
    chart: helm.Chart, objects: dict[str, list[dict[str, Any]]]
) -> None:
    paths = chart.values["webhooks"]["paths"]
    assert paths == {
        "mutate": "/k8s/mutate",
        "validate": "/k8s/validate",
        "validateNode": "/k8s/validate-node",
    }
    mutating = _one(objects["default"], "MutatingWebhookConfiguration")["webhooks"]
    validating = _one(objects["default"], "ValidatingWebhookConfiguration")["webhooks"]
    assert {h["clientConfig"]["service"]["path"] for h in mutating} == {paths["mutate"]}
    assert {h["clientConfig"]["service"]["path"] for h in validating} == {
        paths["validate"],
        paths["validateNode"],
    }
    resources = {(h["rules"][0]["apiGroups"][0], h["rules"][0]["resources"][0]) for h in mutating}
    assert resources == {("", "pods"), ("batch", "jobs"), ("batch", "cronjobs")}
    node = next(h for h in validating if h["rules"][0]["resources"] == ["nodes"])
    assert node["rules"][0]["operations"] == ["UPDATE"]
    for hook in mutating + validating:
        assert hook["failurePolicy"] == "Fail"
        assert 1 <= hook["timeoutSeconds"] <= 10
        assert hook["admissionReviewVersions"] == ["v1"]
        service = hook["clientConfig"]["service"]
        assert (service["name"], service["namespace"], service["port"]) == (
            WEBHOOK_SERVICE,
            NAMESPACE,
            443,
        )
        # Decisions and refused Node changes are recorded, but never for a dry run.
        assert hook["sideEffects"] == "NoneOnDryRun"
        if hook is not node:
            exempt = hook["namespaceSelector"]["matchExpressions"][0]
            assert exempt["key"] == "kubernetes.io/metadata.name"
            assert exempt["operator"] == "NotIn"
            assert {NAMESPACE, "kube-system", "kube-node-lease"} <= set(exempt["values"])
    assert _webhooks(objects["plain-http"]) == []


def test_generated_ca_is_the_webhooks_ca_bundle(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    secret = _one(objects["default"], "Secret", TLS_SECRET)
    assert secret["type"] == "kubernetes.io/tls"
    ca = base64.b64decode(secret["data"]["ca.crt"])
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----")
    assert base64.b64decode(secret["data"]["tls.key"]).startswith(b"-----BEGIN RSA PRIVATE KEY")
    hooks = _webhooks(objects["default"])
    assert len(hooks) == 7
    for hook in hooks:
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
    for component in ("api", "webhooks"):
        pod = _workload(objects["default"], component)["spec"]["template"]["metadata"]
        assert "checksum/tls" in pod["annotations"], component


def _handshake_in_memory(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> str:
    """A whole TLS handshake between two contexts through memory; the protocol agreed."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(to_client, to_server, server_hostname=name)
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, end in (("client", client_side), ("server", server_side)):
            if not done[side]:
                try:
                    end.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return str(client_side.version())
    raise AssertionError("the handshake did not finish")


def test_the_generated_certificate_serves_and_verifies_as_the_api_and_agents_use_it(
    objects: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    secret = _one(objects["default"], "Secret", TLS_SECRET)
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    env = _env(_container(_workload(objects["default"], "api")))
    mount = Path(env["SOVEREIGN_TLS_CERT_FILE"]["value"]).parent
    settings = Settings(
        tls_cert_file=tmp_path / Path(env["SOVEREIGN_TLS_CERT_FILE"]["value"]).relative_to(mount),
        tls_key_file=tmp_path / Path(env["SOVEREIGN_TLS_KEY_FILE"]["value"]).relative_to(mount),
    )
    # What `sovctl serve` checks, then the very context uvicorn builds from the same options.
    tls.check(settings)
    config = uvicorn.Config(create_app(settings), **tls.uvicorn_options(settings))
    config.load()
    assert config.ssl is not None
    assert config.ssl.minimum_version >= ssl.TLSVersion.TLSv1_2
    # The agent's context, with the chart's CA as its bundle, for each name it may dial.
    agent = ssl.create_default_context(cafile=tmp_path / "ca.crt")
    # The API server dials the webhooks' Service with the same CA as its caBundle.
    for name in (
        f"{API_SERVICE}.{NAMESPACE}.svc",
        f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc",
        "localhost",
        "127.0.0.1",
    ):
        assert _handshake_in_memory(config.ssl, agent, name) == "TLSv1.3", name
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake_in_memory(config.ssl, agent, "sovereign.example.com")


@pytest.mark.parametrize("value_set", ["cert-manager", "cert-manager-issuer"])
def test_cert_manager_issues_the_certificate_and_injects_the_ca(
    objects: dict[str, list[dict[str, Any]]], value_set: str
) -> None:
    items = objects[value_set]
    certificate = _one(items, "Certificate", TLS_SECRET)
    assert certificate["spec"]["secretName"] == TLS_SECRET
    assert f"{API_SERVICE}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert f"{WEBHOOK_SERVICE}.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert _all(items, "Secret") == []
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        configuration = _one(items, kind)
        assert configuration["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{TLS_SECRET}"
        }
        assert all("caBundle" not in h["clientConfig"] for h in configuration["webhooks"])
    issuers = {i["metadata"]["name"] for i in _all(items, "Issuer")}
    if value_set == "cert-manager":
        ca_issuer = f"{RELEASE}-sovereign-ca"
        assert issuers == {f"{RELEASE}-sovereign-selfsigned", ca_issuer}
        assert certificate["spec"]["issuerRef"]["name"] == ca_issuer
        assert _one(items, "Certificate", ca_issuer)["spec"]["isCA"] is True
    else:
        assert issuers == set()
        assert certificate["spec"]["issuerRef"] == {
            "name": "corp-ca",
            "kind": "ClusterIssuer",
            "group": "cert-manager.io",
        }


def _pod(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"spec": {"containers": containers, **spec}}


_GPU = {"name": "train", "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "4"}}}
_MIG = {"name": "mig", "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}}
_CPU = {"name": "web", "resources": {"limits": {"cpu": "1"}}}
_BARE = {"name": "sidecar"}


@pytest.mark.parametrize(
    ("pod", "asks"),
    [
        (_pod([_GPU]), True),
        (_pod([_BARE, _MIG]), True),
        (_pod([_CPU], initContainers=[_GPU]), True),
        (_pod([_BARE], resourceClaims=[{"name": "gpu", "resourceClaimName": "a100"}]), True),
        (_pod([_CPU, _BARE]), False),
        (_pod([_CPU], initContainers=[_BARE]), False),
    ],
)
def test_only_gpu_pods_reach_the_webhooks(
    objects: dict[str, list[dict[str, Any]]], pod: dict[str, Any], asks: bool
) -> None:
    by_resource = {
        hook["rules"][0]["resources"][0]: hook
        for hook in _one(objects["default"], "MutatingWebhookConfiguration")["webhooks"]
    }
    documents = {
        "pods": pod,
        "jobs": {"spec": {"template": pod}},
        "cronjobs": {"spec": {"jobTemplate": {"spec": {"template": pod}}}},
    }
    for resource, document in documents.items():
        (condition,) = by_resource[resource]["matchConditions"]
        assert cel.evaluate(condition["expression"], {"object": document}) is asks, resource


def _node(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "gpu-1", "labels": labels}}


@pytest.mark.parametrize(
    ("old", "new", "user", "called"),
    [
        ({"sovereign.io/zone": "jp"}, {"sovereign.io/zone": "us"}, "system:node:gpu-1", True),
        ({}, {"sovereign.io/zone": "jp"}, "system:node:gpu-1", True),
        ({"sovereign.io/zone": "jp"}, {}, "alice", True),
        ({"sovereign.io/zone": "jp"}, {"sovereign.io/zone": "jp", "a": "b"}, "alice", False),
        ({"sovereign.io/zone": "jp"}, {"sovereign.io/zone": "us"}, WORKER_ACCOUNT, False),
    ],
)
def test_node_protection_is_called_for_sovereign_labels_changed_by_others(
    objects: dict[str, list[dict[str, Any]]],
    old: dict[str, str],
    new: dict[str, str],
    user: str,
    called: bool,
) -> None:
    validating = _one(objects["default"], "ValidatingWebhookConfiguration")["webhooks"]
    hook = next(h for h in validating if h["rules"][0]["resources"] == ["nodes"])
    context = {
        "object": _node(new),
        "oldObject": _node(old),
        "request": {"userInfo": {"username": user}},
    }
    results = [cel.evaluate(c["expression"], context) for c in hook["matchConditions"]]
    assert all(results) is called


# -- the agent -----------------------------------------------------------------------------


def test_agent_daemonset_on_gpu_nodes(objects: dict[str, list[dict[str, Any]]]) -> None:
    agent = _workload(objects["default"], "agent")
    assert agent["kind"] == "DaemonSet"
    pod = agent["spec"]["template"]["spec"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
    ]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["hostNetwork"] is True
    container = pod["containers"][0]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9402, "protocol": "TCP"}]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["machine-id"]["readOnly"] is True
    assert volumes["machine-id"]["hostPath"] == {"path": "/etc/machine-id", "type": "File"}
    assert volumes["state"]["hostPath"]["path"] == "/var/lib/sovereign-agent"
    # The API's CA only, never its key.
    assert volumes["ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert (
        "runtimeClassName"
        not in _workload(objects["plain-http"], "agent")["spec"]["template"]["spec"]
    )


def test_agent_environment_loads_as_agent_config(
    objects: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    # The agent loads the bundle at start, so it must be a real CA certificate.
    ca_file = make_tls_files(tmp_path / "tls").ca_cert
    for value_set, url in (
        ("default", f"https://{API_SERVICE}.{NAMESPACE}.svc:443"),
        ("plain-http", f"http://{API_SERVICE}.{NAMESPACE}.svc:443"),
    ):
        container = _container(_workload(objects[value_set], "agent"))
        env = {}
        for name, entry in _env(container).items():
            env[name] = entry.get("value", "from-a-secret")
        if "SOVEREIGN_AGENT_CA_BUNDLE" in env:
            env["SOVEREIGN_AGENT_CA_BUNDLE"] = str(ca_file)
        config = load_config(environ=env)
        assert config.control_plane_url == url
        assert config.bootstrap_token == "from-a-secret"
        assert config.metrics_port == container["ports"][0]["containerPort"]
        assert str(config.state_dir) in {m["mountPath"] for m in container["volumeMounts"]}
        agent_parser().parse_args(container["args"])
    declared = load_config(
        environ={
            name: entry.get("value", "x")
            for name, entry in _env(_container(_workload(objects["plain-http"], "agent"))).items()
        }
    )
    assert (declared.zone, declared.origin_country, dict(declared.labels)) == (
        "jp-east",
        "TW",
        {"rack": "a1"},
    )


def test_agent_off_renders_no_agent(objects: dict[str, list[dict[str, Any]]]) -> None:
    items = objects["agent-off"]
    assert _all(items, "DaemonSet") == []
    assert not [i for i in items if i["metadata"]["name"].endswith("-agent")]
    assert _workload(items, "api")


# -- monitoring ----------------------------------------------------------------------------


def test_service_monitors_only_when_enabled(objects: dict[str, list[dict[str, Any]]]) -> None:
    assert _all(objects["default"], "ServiceMonitor") == []
    assert _all(objects["default"], "ConfigMap") == []
    monitors = {
        m["metadata"]["name"]: m for m in _all(objects["service-monitor"], "ServiceMonitor")
    }
    api = monitors[f"{RELEASE}-sovereign-api"]["spec"]
    service = _one(objects["service-monitor"], "Service", API_SERVICE)
    assert api["selector"]["matchLabels"] == service["spec"]["selector"]
    (endpoint,) = api["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "https"
    assert endpoint["path"] in _registered_paths()
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": TLS_SECRET, "key": "ca.crt"}
    agent = monitors[f"{RELEASE}-sovereign-agent"]["spec"]
    assert agent["endpoints"][0]["port"] == "metrics"
    plain = _all(objects["plain-http"], "ServiceMonitor")
    assert {e["scheme"] for m in plain for e in m["spec"]["endpoints"] if "scheme" in e} == {"http"}


def test_grafana_dashboard_charts_real_metrics(objects: dict[str, list[dict[str, Any]]]) -> None:
    configmap = _one(objects["service-monitor"], "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["sovereign.json"])
    sources = "".join(
        path.read_text()
        for package in ("control_plane", "agents")
        for path in (ROOT / package).rglob("*.py")
    )
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert expressions
    for expression in expressions:
        for metric in re.findall(r"sovereign_[a-z_]+", expression):
            base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
            assert f'"{base}"' in sources, metric


def test_notes_say_how_to_get_the_first_admin_token(
    rendered: dict[str, dict[str, str]],
) -> None:
    notes = rendered["default"]["sovereign/templates/NOTES.txt"]
    assert f"exec deploy/{RELEASE}-sovereign-api" in notes
    assert "sovctl tokens create --role admin" in notes
    # sovctl's own CA setting, not SSL_CERT_FILE, which would change every tool's trust.
    assert "export SOVCTL_CA_BUNDLE=" in notes
    assert "SSL_CERT_FILE" not in notes
    assert "webhooks.clientCA is not set" in notes
    assert (
        "webhooks.clientCA is not set"
        not in rendered["webhook-mtls"]["sovereign/templates/NOTES.txt"]
    )


def test_the_audit_signing_key_is_mounted_where_checkpoints_are_signed(
    objects: dict[str, list[dict[str, Any]]],
) -> None:
    """The worker (beat's checkpoints) and the API (on demand) read the key; nothing else."""
    for component in ("api", "worker"):
        workload = _workload(objects["default"], component)
        pod = workload["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if v["name"] == "audit-signing"]
        assert volume["secret"] == {
            "secretName": "sovereign-audit-signing-key",
            "defaultMode": 0o440,
            "items": [{"key": "signing-key.pem", "path": "signing-key.pem"}],
        }
        container = _container(workload)
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "audit-signing"]
        assert mount["readOnly"] is True
        env = _env(container)
        path = env["SOVEREIGN_AUDIT__SIGNING_KEY_FILE"]["value"]
        assert path == mount["mountPath"] + "/signing-key.pem"
        assert env["SOVEREIGN_AUDIT__CHECKPOINT_SECONDS"]["value"] == "300"
    beat = _workload(objects["default"], "beat")["spec"]["template"]["spec"]
    assert all(v["name"] != "audit-signing" for v in beat.get("volumes", []))
    # Beat is told the path (it refuses to start in prod without it) but never reads it.
    assert "SOVEREIGN_AUDIT__SIGNING_KEY_FILE" in _env(
        _container(_workload(objects["default"], "beat"))
    )
