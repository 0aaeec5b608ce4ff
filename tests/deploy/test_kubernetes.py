"""The Kubernetes manifests in deploy/k8s, checked without a cluster: every overlay is rendered
(tests/deploy/kustomize.py, compared with ``kubectl kustomize`` where kubectl is installed) and
each object it yields is valid against the Kubernetes API's schemas in strict mode
(kubernetes-validate, which bundles them: nothing is downloaded), for the oldest and the newest
Kubernetes this deployment supports. Then what the schemas cannot know: the probes name the
service's real routes, the commands parse with idcode's own CLI, every variable is a setting
the service reads and the production validator accepts, no secret is written in, and the init
container's key copy gives a store idcode trusts. Last, a release as it runs in the cluster,
on this machine with the test run's PostgreSQL and Redis: the Job's command, then the
Deployment's with production's settings, and the probes it is given (docs/kubernetes.md)."""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx2
import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from idcode.cli import build_parser
from idcode.errors import UnsafeFileError
from idcode.keystore import initialise, open_key_store
from idcode.service.api.app import create_app
from idcode.service.commands import cmd_db_upgrade, cmd_events_purge, cmd_serve
from idcode.service.console.session import KEY_FILE as CONSOLE_SESSION_KEY
from idcode.service.console.session import session_key
from idcode.service.settings import Settings
from tests.deploy.kustomize import KustomizeError, containers, pod_specs, render
from tests.live import free_port, run_cli
from tests.services import REDIS_RUN_PREFIX

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
# Every kustomization under overlays/ is something an operator applies.
OVERLAYS = sorted(path.parent for path in (K8S / "overlays").rglob("kustomization.yaml"))
# The oldest Kubernetes the manifests are for (docs/kubernetes.md) and the newest whose
# schemas kubernetes-validate bundles: a field or an API version missing in either fails.
KUBERNETES_VERSIONS = ("1.30", "1.37")
STARTUP_SECONDS = 60  # a cold start on a busy machine (tests/integration/test_replicas.py)
SERVICE_USER = 10001  # the Dockerfile's `useradd --uid`
# In a pod the service listens on every interface: the kubelet and the Service reach it there.
EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 (what the manifests must say, not a bind here)
# Settings that hold secrets or credentials: from a Secret, never a literal in a manifest.
SECRET_SETTINGS = {
    f"IDCODE_{name.upper()}"
    for name, field in Settings.model_fields.items()
    if field.annotation in (SecretStr, SecretStr | None)
} | {"IDCODE_DATABASE_URL", "IDCODE_REDIS_URL"}
# Set by the Deployment itself (tied to its volumes), not by an overlay's ConfigMap.
LAYOUT_SETTINGS = {"IDCODE_KEYS_DIR"}


def name_of(overlay: Path) -> str:
    return str(overlay.relative_to(K8S / "overlays"))


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name_of(overlay): render(overlay) for overlay in OVERLAYS}


def objects_of(rendered: dict[str, list[dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [o for objects in rendered.values() for o in objects if o["kind"] == kind]


def the(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind]
    return found


def problems_of(manifest: dict[str, Any], version: str) -> list[str]:
    """What kubernetes-validate says against ``version``'s strict schemas, as text."""
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{manifest['kind']}/{manifest['metadata']['name']}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


def test_there_are_a_staging_and_a_production_overlay_each_with_its_migration() -> None:
    assert [name_of(overlay) for overlay in OVERLAYS] == [
        "production",
        "production/migrate",
        "staging",
        "staging/migrate",
    ]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid_against_the_kubernetes_api_in_strict_mode(
    rendered: dict[str, list[dict[str, Any]]], version: str
) -> None:
    problems = [
        problem
        for objects in rendered.values()
        for manifest in objects
        for problem in problems_of(manifest, version)
    ]
    assert problems == []


def test_the_schema_check_refuses_a_wrong_kind_api_version_or_field(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    deployment = the(rendered["production"], "Deployment")
    hpa = the(rendered["production"], "HorizontalPodAutoscaler")
    [container] = pod_specs(deployment)[0]["containers"]
    misspelt = {**container, "readinesProbe": container["readinessProbe"]}
    misspelt.pop("readinessProbe")
    broken = [
        {**deployment, "kind": "Deployement"},
        {**hpa, "apiVersion": "autoscaling/v2beta2"},  # removed in Kubernetes 1.26
        {**deployment, "spec": {**deployment["spec"], "replica": 3}},
        {
            **deployment,
            "spec": {
                **deployment["spec"],
                "template": {
                    **deployment["spec"]["template"],
                    "spec": {**pod_specs(deployment)[0], "containers": [misspelt]},
                },
            },
        },
    ]
    for manifest in broken:
        assert problems_of(manifest, KUBERNETES_VERSIONS[0]) != [], manifest["kind"]


def kubectl_kustomize() -> str | None:
    """kubectl, when it is installed with kustomize 5 (Debian's kubernetes-client 1.20 has 2.0)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    version = subprocess.run(
        [kubectl, "version", "--client"], capture_output=True, text=True, check=False
    ).stdout
    found = re.search(r"Kustomize Version: v(\d+)\.", version)
    return kubectl if found is not None and int(found.group(1)) >= 5 else None


@pytest.mark.parametrize("overlay", OVERLAYS, ids=name_of)
def test_the_renderer_agrees_with_kubectl_kustomize(overlay: Path) -> None:
    kubectl = kubectl_kustomize()
    if kubectl is None:
        # scripts/test says "required" when it found kubectl with kustomize 5 (no Debian
        # package has one to install: bookworm's kubernetes-client 1.20 embeds kustomize 2.0).
        if os.environ.get("IDCODE_TEST_KUSTOMIZE") == "required":
            pytest.fail("IDCODE_TEST_KUSTOMIZE=required, but no kubectl with kustomize 5 runs")
        pytest.skip("kubectl with kustomize 5 is not installed: the renderer alone is checked")
    output = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True
    ).stdout
    theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(output)}
    ours = {(o["kind"], o["metadata"]["name"]): o for o in render(overlay)}
    assert ours == theirs


def test_the_renderer_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../base]\ncommonLabels: {team: city}\n"
    )
    with pytest.raises(KustomizeError, match="commonLabels"):
        render(tmp_path)


def http_paths(app_paths: dict[str, Any], probe: dict[str, Any]) -> str:
    path: str = probe["httpGet"]["path"]
    assert "get" in app_paths.get(path, {}), f"{path} is not a GET route of the service"
    return path


def test_the_probes_ask_the_services_own_health_routes(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    paths = create_app(Settings(environment="development")).openapi()["paths"]
    for deployment in objects_of(rendered, "Deployment"):
        container = pod_specs(deployment)[0]["containers"][0]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, probe
        # Ready when it can issue (database, schema, signing key); alive whatever they do.
        assert http_paths(paths, container["readinessProbe"]) == "/readyz"
        assert http_paths(paths, container["livenessProbe"]) == "/healthz"
        assert http_paths(paths, container["startupProbe"]) == "/healthz"
        assert paths["/readyz"]["get"]["operationId"] == "check_readiness"
        assert paths["/healthz"]["get"]["operationId"] == "check_liveness"


def parsed(command: list[str]) -> argparse.Namespace:
    """The command as idcode's CLI parses it (argparse exits on an unknown option)."""
    assert command[0] == "idcode"
    try:
        return build_parser().parse_args(command[1:])
    except SystemExit:
        pytest.fail(f"idcode refuses {command}")


def test_the_containers_run_commands_idcode_has(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for deployment in objects_of(rendered, "Deployment"):
        container = pod_specs(deployment)[0]["containers"][0]
        serve = parsed(container["command"])
        assert serve.handler is cmd_serve
        assert serve.host == EVERY_INTERFACE
        assert serve.workers == 1  # the autoscaler adds pods
        assert {p["containerPort"] for p in container["ports"]} == {serve.port}
    for job in objects_of(rendered, "Job"):
        [container] = pod_specs(job)[0]["containers"]
        assert parsed(container["command"]).handler is cmd_db_upgrade
    cron_jobs = objects_of(rendered, "CronJob")
    assert len(cron_jobs) == 2  # staging's and production's nightly purge
    for cron_job in cron_jobs:
        [container] = pod_specs(cron_job)[0]["containers"]
        purge = parsed(container["command"])
        assert purge.handler is cmd_events_purge
        assert purge.older_than is None and not purge.dry_run  # the retention setting's
        assert cron_job["spec"]["concurrencyPolicy"] == "Forbid"
        # The API server refuses what the schemas let through: a wrong schedule or zone.
        assert cron_schedule_problem(cron_job["spec"]["schedule"]) is None
        ZoneInfo(cron_job["spec"].get("timeZone", "UTC"))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--hots", EVERY_INTERFACE])


#: The ranges of a cron schedule's five fields (minute, hour, day, month, day of week).
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def cron_schedule_problem(schedule: str) -> str | None:
    """Why ``schedule`` is no numeric five-field cron schedule (lists, ranges, steps, ``*``),
    or None; the schemas take any string."""
    fields = schedule.split()
    if len(fields) != len(CRON_RANGES):
        return f"{schedule!r}: five fields"
    for text, (low, high) in zip(fields, CRON_RANGES, strict=True):
        for part in text.split(","):
            span, _, step = part.partition("/")
            if step and not (step.isascii() and step.isdigit() and int(step) > 0):
                return f"{part!r}: a step is a positive number"
            if span == "*":
                continue
            bounds = span.split("-")
            if len(bounds) > 2 or not all(b.isascii() and b.isdigit() for b in bounds):
                return f"{part!r}: a number, a range or *"
            if not all(low <= int(b) <= high for b in bounds):
                return f"{part!r}: outside {low}-{high}"
    return None


def test_the_schedule_check_refuses_what_the_api_server_refuses() -> None:
    assert cron_schedule_problem("30 3 * * *") is None
    assert cron_schedule_problem("*/15 0-6,22 1 1-12/2 7") is None
    for wrong in (
        "61 3 * * *",
        "30 3 * *",
        "30 24 * * *",
        "30 3 0 * *",
        "x 3 * * *",
        "*/0 * * * *",
    ):
        assert cron_schedule_problem(wrong) is not None, wrong
    with pytest.raises(ZoneInfoNotFoundError):
        ZoneInfo("Mars/Olympus")


def volume_at(
    spec: dict[str, Any], container: dict[str, Any], path: str
) -> tuple[dict[str, Any], str]:
    """The volume of pod ``spec`` that ``path`` is in, in ``container``, and ``path`` inside
    it."""
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for mount in container["volumeMounts"]:
        inside = os.path.relpath(path, mount["mountPath"])
        if not inside.startswith(".."):
            return volumes[mount["name"]], inside
    raise AssertionError(f"{container['name']}: nothing is mounted at {path}")


def test_the_key_copy_reads_the_key_secret_and_writes_into_memory_where_the_service_reads(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The copy's two paths are the mounts of the idcode-keys Secret and of a memory-backed
    emptyDir (the private keys never reach the node's disk), which the service's container
    mounts where IDCODE_KEYS_DIR points."""
    for objects in rendered.values():
        for deployment in (o for o in objects if o["kind"] == "Deployment"):
            spec = pod_specs(deployment)[0]
            [copy], [service] = spec["initContainers"], spec["containers"]
            source, target = copy["command"][-2:]
            secret, _ = volume_at(spec, copy, source)
            assert secret["secret"]["secretName"] == "idcode-keys"
            written, written_inside = volume_at(spec, copy, target)
            assert written["emptyDir"]["medium"] == "Memory"
            keys_dir = variables(deployment, objects)["IDCODE_KEYS_DIR"]["value"]
            read, read_inside = volume_at(spec, service, keys_dir)
            assert (read["name"], read_inside) == (written["name"], written_inside)


def variables(manifest: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Every variable each container gets: its ``env`` entries and its ConfigMaps' keys."""
    config_maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}
    found: dict[str, Any] = {}
    for container in containers(manifest):
        for source in container.get("envFrom", []):
            assert set(source) == {"configMapRef"}, "secrets come by name, in env"
            found.update(config_maps[source["configMapRef"]["name"]])
        found.update({variable["name"]: variable for variable in container.get("env", [])})
    return found


def test_every_variable_is_a_setting_the_service_reads(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    settings = {f"IDCODE_{name.upper()}" for name in Settings.model_fields}
    for objects in rendered.values():
        for manifest in objects:
            unknown = set(variables(manifest, objects)) - settings
            assert unknown == set(), f"{manifest['kind']}: not settings: {sorted(unknown)}"


def test_secrets_come_from_secrets_and_nothing_holds_a_literal_one(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    assert objects_of(rendered, "Secret") == []  # created by the operator (docs/kubernetes.md)
    for objects in rendered.values():
        for manifest in objects:
            for name, variable in variables(manifest, objects).items():
                if name in SECRET_SETTINGS:
                    assert isinstance(variable, dict) and "value" not in variable, name
                    reference = variable["valueFrom"]["secretKeyRef"]
                    assert reference == {**reference, "name": "idcode-secrets", "key": name}
    for overlay in ("staging", "production"):
        given = variables(the(rendered[overlay], "Deployment"), rendered[overlay])
        assert SECRET_SETTINGS - given.keys() == {"IDCODE_PKCS11_PIN"}  # PKCS#11: a PIN file
        assert given["IDCODE_KEY_PASSPHRASE"]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_each_overlays_settings_pass_the_services_production_checks(
    rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for overlay in ("staging", "production"):
        deployment = the(rendered[overlay], "Deployment")
        for name in [name for name in os.environ if name.startswith("IDCODE_")]:
            monkeypatch.delenv(name)
        for name, value in variables(deployment, rendered[overlay]).items():
            if isinstance(value, str):
                monkeypatch.setenv(name, value)
            elif "value" in value:
                monkeypatch.setenv(name, value["value"])
        for name in ("IDCODE_PII_ENCRYPTION_KEY", "IDCODE_PII_HASH_KEY"):
            monkeypatch.setenv(name, base64.b64encode(os.urandom(32)).decode())
        monkeypatch.setenv("IDCODE_DATABASE_URL", "postgresql://idcode@postgres.example/idcode")
        monkeypatch.setenv("IDCODE_REDIS_URL", "rediss://redis.example:6380/0")
        settings = Settings()
        assert settings.environment == "production" and not settings.demo_data, overlay
        assert settings.keys_dir == Path("/var/run/idcode/keys")


def test_images_are_released_tags_the_same_for_the_service_and_its_migration(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay in ("staging", "production"):
        images = {
            container["image"]
            for name in (overlay, f"{overlay}/migrate")
            for manifest in rendered[name]
            for container in containers(manifest)
        }
        [image] = images
        repository, _, tag = image.rpartition(":")
        assert repository and "/" in repository, image
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{image}: a release, never latest"


def test_every_container_runs_unprivileged_on_a_read_only_root_with_its_resources_bounded(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    assert f"--uid {SERVICE_USER}" in DOCKERFILE.read_text()
    for objects in rendered.values():
        for manifest in objects:
            for spec in pod_specs(manifest):
                assert spec["securityContext"]["runAsNonRoot"] is True
                assert spec["securityContext"]["runAsUser"] == SERVICE_USER
                assert spec["automountServiceAccountToken"] is False
            for container in containers(manifest):
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, container["name"]
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"]["drop"] == ["ALL"]
                for bound in ("requests", "limits"):
                    assert set(container["resources"][bound]) == {"cpu", "memory"}


def test_the_service_autoscaler_and_disruption_budget_fit_together(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay in ("staging", "production"):
        objects = rendered[overlay]
        deployment, service = the(objects, "Deployment"), the(objects, "Service")
        hpa, pdb = the(objects, "HorizontalPodAutoscaler"), the(objects, "PodDisruptionBudget")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert "replicas" not in deployment["spec"]  # the autoscaler's
        assert deployment["spec"]["selector"]["matchLabels"] == labels
        assert service["spec"]["selector"] == labels
        assert pdb["spec"]["selector"]["matchLabels"] == labels
        for spread in pod_specs(deployment)[0]["topologySpreadConstraints"]:
            assert spread["labelSelector"]["matchLabels"] == labels
        [port] = service["spec"]["ports"]
        container = pod_specs(deployment)[0]["containers"][0]
        assert port["targetPort"] in {p["name"] for p in container["ports"]}
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        # A drain can always evict one replica, and one is always left to serve.
        assert 1 <= pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], overlay
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        for o in objects:
            assert o["metadata"]["namespace"] == f"idcode-{overlay}"
        for o in rendered[f"{overlay}/migrate"]:
            assert o["metadata"]["namespace"] == f"idcode-{overlay}"


def copy_keys_command(rendered: dict[str, list[dict[str, Any]]]) -> list[str]:
    deployment = the(rendered["production"], "Deployment")
    [copy] = pod_specs(deployment)[0]["initContainers"]
    return list(copy["command"])


def secret_volume(store: Path, target: Path) -> None:
    """``store`` laid out as the kubelet mounts a Secret: the files, mode 0440 (defaultMode),
    in a timestamped directory, reached through a ``..data`` link and one link per file."""
    revision = target / "..2026_12_06_00_00_00.000000001"
    revision.mkdir(parents=True)
    for path in store.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copyfile(path, revision / path.name)
            (revision / path.name).chmod(0o440)
            (target / path.name).symlink_to(Path("..data") / path.name)
    (target / "..data").symlink_to(revision.name)


def test_the_init_container_copies_the_key_secret_into_a_store_idcode_trusts(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    store = tmp_path / "keys"
    now = int(time.time())
    initialise(open_key_store(store), now, 90)
    cookie_key = session_key(store)  # the console's: every replica must have the same
    mounted, copied = tmp_path / "secret", tmp_path / "run" / "keys"
    secret_volume(store, mounted)
    (tmp_path / "run").mkdir()
    # As mounted, idcode refuses the store: its files are links (and group-readable).
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        open_key_store(mounted).issuer_keys()

    command = copy_keys_command(rendered)
    assert command[-2:] == ["/var/run/secrets/idcode/keys", "/var/run/idcode/keys"]
    subprocess.run([*command[:-2], str(mounted), str(copied)], check=True)
    subprocess.run([*command[:-2], str(mounted), str(copied)], check=True)  # a restart

    assert stat.S_IMODE(copied.stat().st_mode) == 0o700
    assert {stat.S_IMODE(p.stat().st_mode) for p in copied.iterdir()} == {0o400}
    assert not any(p.is_symlink() for p in copied.iterdir())
    keys = open_key_store(copied)
    assert keys.signing_key(now).kid == open_key_store(store).signing_key(now).kid
    assert session_key(copied) == cookie_key


def test_the_init_container_stops_when_the_secret_has_no_console_session_key(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    store = tmp_path / "keys"
    initialise(open_key_store(store), int(time.time()), 90)
    mounted = tmp_path / "secret"
    secret_volume(store, mounted)
    assert not (mounted / CONSOLE_SESSION_KEY).exists()
    done = subprocess.run(
        [*copy_keys_command(rendered)[:-2], str(mounted), str(tmp_path / "copied")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "no console-session.key" in done.stderr
    assert not (tmp_path / "copied").exists()


def test_a_release_migrates_then_serves_with_the_overlays_settings_and_answers_its_probes(
    rendered: dict[str, list[dict[str, Any]]],
    tmp_path: Path,
    fresh_postgres_url: Callable[..., str],
    redis_url: str,
) -> None:
    """What a release does, on this machine: the migration Job's command, then the service's
    with production's settings and a key store copied out of a Secret; the probes answer."""
    objects = rendered["production"]
    deployment, job = the(objects, "Deployment"), the(rendered["production/migrate"], "Job")
    store, copied = tmp_path / "keys", tmp_path / "run" / "keys"
    initialise(open_key_store(store), int(time.time()), 90)
    session_key(store)  # the console's cookie key, as docs/kubernetes.md makes it
    secret_volume(store, tmp_path / "secret")
    (tmp_path / "run").mkdir()
    command = copy_keys_command(rendered)
    subprocess.run([*command[:-2], str(tmp_path / "secret"), str(copied)], check=True)

    token = secrets.token_urlsafe(24)
    from_secrets = {
        "IDCODE_DATABASE_URL": fresh_postgres_url("base"),  # empty: the Job migrates it
        "IDCODE_REDIS_URL": redis_url,
        "IDCODE_PII_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
        "IDCODE_PII_HASH_KEY": base64.b64encode(os.urandom(32)).decode(),
        "IDCODE_METRICS_TOKEN": token,
    }

    config_maps = {o["metadata"]["name"]: o["data"] for o in objects if o["kind"] == "ConfigMap"}

    def environment(manifest: dict[str, Any]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDCODE_")}
        for name, value in variables(manifest, objects).items():
            if isinstance(value, str) or "value" in value:
                env[name] = value if isinstance(value, str) else value["value"]
            elif "configMapKeyRef" in value["valueFrom"]:
                reference = value["valueFrom"]["configMapKeyRef"]
                env[name] = config_maps[reference["name"]][reference["key"]]
            elif name in from_secrets:
                env[name] = from_secrets[name]
        return env

    migrate = pod_specs(job)[0]["containers"][0]["command"]
    run_cli(environment(job), tmp_path, *migrate[1:])
    # The nightly purge on the migrated database, with its retention from the ConfigMap.
    cron_job = the(objects, "CronJob")
    purge_env = environment(cron_job)
    assert purge_env["IDCODE_EVENTS_RETENTION_DAYS"] == "184"
    purge = pod_specs(cron_job)[0]["containers"][0]["command"]
    purged = run_cli(purge_env, tmp_path, *purge[1:])
    assert purged.startswith("removed 0 events before "), purged

    env = environment(deployment)
    assert env["IDCODE_ENVIRONMENT"] == "production"
    env |= {"IDCODE_KEYS_DIR": str(copied), "IDCODE_REDIS_PREFIX": REDIS_RUN_PREFIX}
    container = pod_specs(deployment)[0]["containers"][0]
    serve = parsed(container["command"])
    port = free_port()
    # The pod's command, on loopback and a free port instead of every interface and 8000.
    arguments = [*container["command"][1:]]
    arguments[arguments.index("--host") + 1] = "127.0.0.1"
    arguments[arguments.index("--port") + 1] = str(port)
    assert serve.port == 8000
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "idcode.cli", *arguments],
            env=env,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as client:
            startup = container["startupProbe"]["httpGet"]["path"]
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                assert process.poll() is None, log.read_text(errors="replace")
                assert time.monotonic() < deadline, log.read_text(errors="replace")
                try:
                    if client.get(startup).status_code == 200:
                        break
                except httpx2.TransportError:
                    pass  # not listening yet
                time.sleep(0.1)
            ready = client.get(container["readinessProbe"]["httpGet"]["path"])
            assert ready.status_code == 200, ready.text
            assert ready.json()["status"] == "ready"
            assert client.get(container["livenessProbe"]["httpGet"]["path"]).status_code == 200
            assert client.get("/metrics").status_code == 401
            scrape = client.get("/metrics", headers={"authorization": f"Bearer {token}"})
            assert scrape.status_code == 200
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
