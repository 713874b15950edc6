"""knative/ validated offline: rendered by kustomize, Knative kinds strictly against the
CRD schemas, core kinds against Kubernetes' schemas, and cross-checked with the code
(route ownership, event handlers, tuning) so manifests and code cannot drift."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.knative_eventing.eventing.v1 import Broker, Trigger
from cloudcoil.models.knative_eventing.sources.v1 import PingSource, SinkBinding
from cloudcoil.models.knative_serving.serving.v1 import Service

from functions.routes import FUNCTIONS, ROUTE_OWNERS, service_name
from functions.topology import load_topology
from tests.conftest import PROJECT_ROOT

KNATIVE_DIR = PROJECT_ROOT / "knative" / "base"
SHARED_DIR = Path(os.environ.get("ABAXUS_SHARED_DIR", PROJECT_ROOT.parent / "shared"))
KNATIVE_MODELS = {
    "Service": Service,
    "Trigger": Trigger,
    "Broker": Broker,
    "PingSource": PingSource,
    "SinkBinding": SinkBinding,
}
CORE_KINDS = {"Namespace", "ConfigMap", "Job"}
# Valid Knative fields newer than the 1.17 models cloudcoil ships for Python 3.11.
NEWER_THAN_MODELS = {("Trigger", ("spec", "delivery", "timeout"))}


def _python_render(directory: Path) -> list[dict]:
    """kustomize's effect for these kustomizations (resources — files or directories —,
    namespace, labels, images, and ConfigMap patches, which is all the overlays use),
    used only where kubectl is not installed."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization.get("resources", []):
        if (directory / resource).is_dir():
            documents.extend(_python_render(directory / resource))
            continue
        documents.extend(d for d in yaml.safe_load_all((directory / resource).read_text()) if d)
    for patch in kustomization.get("patches", []):
        change = yaml.safe_load((directory / patch["path"]).read_text())
        assert change["kind"] == "ConfigMap", "the fallback renders ConfigMap patches only"
        for document in documents:
            if document["kind"] == "ConfigMap" and (
                document["metadata"]["name"] == change["metadata"]["name"]
            ):
                document["data"] = {**document.get("data", {}), **change["data"]}
    if "namespace" in kustomization:
        for document in documents:
            if document["kind"] != "Namespace":
                document["metadata"]["namespace"] = kustomization["namespace"]
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization.get("images", [])}
    rendered = yaml.safe_dump_all(documents)
    for name, image in images.items():
        rendered = rendered.replace(f"image: {name}\n", f"image: {image}\n")
    return list(yaml.safe_load_all(rendered))


# The base (one region) and each overlay (API.md §10): every test below holds for each.
LAYOUTS = [
    "",
    "overlays/central",
    "overlays/region",
    "overlays/zones/eu-central",
    "overlays/zones/eu-west-1",
    "overlays/zones/us-central",
    "overlays/zones/us-east-1",
]


def render(layout: str) -> list[dict]:
    directory = PROJECT_ROOT / "knative" / layout if layout else PROJECT_ROOT / "knative"
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return _python_render(directory)
    output = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(output) if d]


@pytest.fixture(scope="module", params=LAYOUTS, ids=lambda layout: layout or "base")
def rendered(request: pytest.FixtureRequest) -> list[dict]:
    return render(request.param)


def _of(rendered, kind):
    return [d for d in rendered if d["kind"] == kind]


def test_kustomize_renders_every_object_into_the_namespace_with_the_release_image(rendered):
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds.count("Service") == 6 and kinds.count("Trigger") == 11
    assert {
        "Broker",
        "PingSource",
        "SinkBinding",
        "Job",
        "ConfigMap",
        "Namespace",
        "HTTPRoute",
    } <= set(kinds)
    assert all(
        d["metadata"].get("namespace") == "abaxus" for d in rendered if d["kind"] != "Namespace"
    )
    images = {
        c["image"]
        for s in _of(rendered, "Service")
        for c in s["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example.com/abaxus/functions:0.1.0"}


def test_knative_objects_pass_the_strict_crd_schemas(rendered, tmp_path):
    validator, crds = SHARED_DIR / "tools" / "crd_validate.py", SHARED_DIR / "knative-crds"
    if not validator.exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI must validate against the Knative CRDs, but {validator} is missing")
        pytest.skip(
            "the Knative CRD schemas are not in this repository (../shared); "
            "the cloudcoil round-trip below still checks every Knative object"
        )
    manifest = tmp_path / "knative.yaml"
    manifest.write_text(yaml.safe_dump_all([d for d in rendered if d["kind"] in KNATIVE_MODELS]))
    result = subprocess.run(
        [sys.executable, str(validator), str(crds), str(manifest)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _dropped(original, round_tripped, path=()):
    if isinstance(original, dict) and isinstance(round_tripped, dict):
        for key, value in original.items():
            if key not in round_tripped:
                yield (*path, key)
            else:
                yield from _dropped(value, round_tripped[key], (*path, key))
    elif isinstance(original, list) and isinstance(round_tripped, list):
        for a, b in zip(original, round_tripped, strict=False):
            yield from _dropped(a, b, path)


def test_knative_objects_round_trip_through_the_knative_models(rendered):
    for document in rendered:
        model = KNATIVE_MODELS.get(document["kind"])
        if model is None:
            continue
        back = model.model_validate(document).model_dump(
            by_alias=True, exclude_none=True, mode="json"
        )
        unknown = [
            p for p in _dropped(document, back) if (document["kind"], p) not in NEWER_THAN_MODELS
        ]
        assert unknown == [], (
            f"{document['kind']}/{document['metadata']['name']}: unknown fields {unknown}"
        )


def test_core_objects_pass_the_kubernetes_schemas_strictly(rendered):
    for document in rendered:
        if document["kind"] in CORE_KINDS:
            kubernetes_validate.validate(
                document, kubernetes_validate.latest_version(), strict=True
            )


def _env(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_every_function_runs_as_one_service_tuned_consistently(rendered):
    services = {s["metadata"]["name"]: s for s in _of(rendered, "Service")}
    assert set(services) == {service_name(f) for f in FUNCTIONS}
    for name, service in services.items():
        assert not any(
            k.startswith("autoscaling.knative.dev/")
            for k in service["metadata"].get("annotations", {})
        )
        template = service["spec"]["template"]
        annotations = template["metadata"]["annotations"]
        assert all(isinstance(v, str) for v in annotations.values()), name
        (container,) = template["spec"]["containers"]
        env = _env(container)
        assert env["FUNCTION_TARGET"] == name.removeprefix("abaxus-")
        assert env["WORKERS"] == "1"
        assert template["spec"]["containerConcurrency"] == int(env["THREADS"]), name
        assert int(env["ABAXUS_DB_POOL_SIZE"]) >= int(env["THREADS"]), name
        assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "abaxus-db", "key": "url"}}
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert template["spec"]["timeoutSeconds"] <= 600
    scale = {
        n: s["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"]
        for n, s in services.items()
    }
    assert scale["abaxus-ingest"] == "1"
    assert scale["abaxus-calculate"] == scale["abaxus-invoice"] == scale["abaxus-charge"] == "0"


def test_the_httproute_routes_exactly_the_ownership_table(rendered):
    (route,) = _of(rendered, "HTTPRoute")
    routed = {}
    for rule in route["spec"]["rules"]:
        (match,) = rule["matches"]
        (backend,) = rule["backendRefs"]
        assert match["path"]["type"] == "PathPrefix"
        routed[match["path"]["value"]] = backend["name"]
    assert routed == {prefix: service_name(function) for prefix, function in ROUTE_OWNERS.items()}


def test_every_function_serves_only_paths_it_owns():
    from functions.routes import owner_of

    for function in FUNCTIONS:
        app = importlib.import_module(f"functions.{function}").APP
        for rule in app.rules():
            concrete = rule.replace("<int:", "<").replace("<", "x").replace(">", "")
            assert owner_of(concrete) == function, (function, rule)


EXPECTED_ROUTING = {
    "dev.abaxus.usage.reported.v1": {"ingest"},
    "dev.abaxus.events.ingested.v1": {"aggregate"},
    "dev.abaxus.aggregate.tick.v1": {"aggregate"},
    "dev.abaxus.invoice.requested.v1": {"calculate"},
    "dev.abaxus.calculation.completed.v1": {"invoice"},
    "dev.abaxus.billing.tick.v1": {"invoice"},
    "dev.abaxus.payment.succeeded.v1": {"invoice"},
    "dev.abaxus.payment.failed.v1": {"invoice"},
    "dev.abaxus.invoice.issued.v1": {"charge"},
    "dev.abaxus.invoice.unknown.v1": set(),
}


@pytest.mark.parametrize(("type_", "functions"), EXPECTED_ROUTING.items())
def test_triggers_route_each_event_type_as_the_architecture_says(type_, functions):
    topology = load_topology(KNATIVE_DIR)
    assert {
        s.function for s in topology.subscribers({"type": type_, "source": "/any"})
    } == functions


def test_every_trigger_delivers_only_types_its_function_handles():
    topology = load_topology(KNATIVE_DIR)
    for subscription in topology.subscriptions:
        handled = importlib.import_module(f"functions.{subscription.function}").APP.event_handlers
        for type_ in [*EXPECTED_ROUTING, "dev.knative.sources.ping"]:
            for source in ["/any", *(p.source for p in topology.pings)]:
                if subscription.matches({"type": type_, "source": source}):
                    assert type_ in handled, (subscription.trigger, type_)


def test_ticks_fire_aggregate_every_minute_and_billing_hourly_to_their_function():
    topology = load_topology(KNATIVE_DIR)
    pings = {p.name: p for p in topology.pings}
    assert pings["abaxus-aggregate-tick"].schedule == "* * * * *"
    assert pings["abaxus-billing-tick"].schedule == "0 * * * *"
    for name, functions in (
        ("abaxus-aggregate-tick", ["aggregate"]),
        # The billing cycle (invoice) and due payment attempts, dunning included (charge).
        ("abaxus-billing-tick", ["invoice", "charge"]),
    ):
        attributes = {"type": "dev.knative.sources.ping", "source": pings[name].source}
        assert [s.function for s in topology.subscribers(attributes)] == functions


def test_the_sinkbinding_gives_k_sink_to_exactly_the_emitting_functions(rendered):
    (binding,) = _of(rendered, "SinkBinding")
    selector = binding["spec"]["subject"]["selector"]["matchLabels"]
    bound = {
        s["metadata"]["name"]
        for s in _of(rendered, "Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
    }
    assert bound == {service_name(f) for f in ("ingest", "calculate", "invoice", "charge")}


def _config(layout: str) -> dict[str, str]:
    (config,) = [d for d in render(layout) if d["kind"] == "ConfigMap"]
    return dict(config["data"])


@pytest.mark.parametrize("layout", LAYOUTS[1:])
def test_each_overlay_configures_a_role_the_settings_accept(layout, monkeypatch):
    """What an overlay sets is a valid configuration (the settings refuse to start
    otherwise): its role, its region, its zone in a two-zone topology."""
    from core.config import Settings

    data = _config(layout)
    for name in list(os.environ):
        if name.startswith("ABAXUS_"):
            monkeypatch.delenv(name)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    config = Settings(database_url="postgresql://localhost/abaxus")
    expected_role = "central" if layout.endswith("central") else "region"
    assert config.abaxus_role == expected_role
    if "zones/" in layout:
        zone = layout.split("/")[-1][:2]
        assert config.zone == zone
        if expected_role == "region":
            assert config.abaxus_enforce_residency is True
            assert config.abaxus_catalog_connection and f"central-{zone}" in (
                config.abaxus_catalog_connection
            )
            assert config.abaxus_directory_connections
    if expected_role == "region":
        assert config.abaxus_central_url and config.abaxus_catalog_connection
