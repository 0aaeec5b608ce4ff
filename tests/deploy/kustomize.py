"""The subset of kustomize that deploy/k8s uses, rendered in Python, so that the tests can
check the overlays without the kustomize binary (Debian packages none recent enough: its
kubernetes-client 1.20 embeds kustomize 2.0, which has no ``patches``).

Known: ``resources`` (files, and directories holding a kustomization.yaml), ``namespace``,
``images`` (``name``, ``newName``, ``newTag``), ``patches`` given by ``path`` (a strategic
merge patch that names its target by kind and name) and ``configMapGenerator`` with
``literals``, whose names get kustomize's content hash and whose references are renamed.
Anything else in a kustomization.yaml is refused, so that an overlay cannot outgrow what is
checked. The merge is kustomize's for what the overlays patch (maps merged, lists of named
items merged by name, other lists replaced), not Kubernetes' full per-field strategy.
tests/deploy/test_kubernetes.py compares the result with ``kubectl kustomize`` wherever
kubectl is installed."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

KNOWN_FIELDS = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "images", "patches", "configMapGenerator"}
)
# Namespaced kinds only: the renderer puts each object into the overlay's namespace.
KNOWN_KINDS = frozenset(
    {
        "ConfigMap",
        "CronJob",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    }
)

Manifest = dict[str, Any]


class KustomizeError(ValueError):
    """A kustomization outside the subset this renderer knows, or a broken one."""


def render(directory: Path) -> list[Manifest]:
    """Every object the kustomization in ``directory`` produces, in the order found."""
    path = directory / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text(encoding="utf-8"))
    unknown = set(kustomization) - KNOWN_FIELDS
    if unknown:
        raise KustomizeError(f"{path}: this renderer does not know {sorted(unknown)}")
    if kustomization.get("kind") != "Kustomization":
        raise KustomizeError(f"{path}: not a Kustomization")
    objects: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        target = directory / resource
        if target.is_dir():
            objects.extend(render(target))
        else:
            objects.extend(_documents(target))
    renames: dict[str, str] = {}
    for generator in kustomization.get("configMapGenerator", []):
        config_map = _config_map(path, generator)
        renames[generator["name"]] = config_map["metadata"]["name"]
        objects.append(config_map)
    for patch in kustomization.get("patches", []):
        _apply_patch(objects, directory, patch)
    for manifest in objects:
        if manifest.get("kind") not in KNOWN_KINDS:
            raise KustomizeError(f"this renderer does not know kind {manifest.get('kind')}")
        if "namespace" in kustomization:
            manifest["metadata"]["namespace"] = kustomization["namespace"]
        for spec in pod_specs(manifest):
            _set_images(spec, kustomization.get("images", []))
            _rename_config_maps(spec, renames)
    return objects


def pod_specs(manifest: Manifest) -> list[Manifest]:
    """The pod spec of a Deployment's, a Job's or a CronJob's template (none for other kinds)."""
    if manifest["kind"] in ("Deployment", "Job"):
        return [manifest["spec"]["template"]["spec"]]
    if manifest["kind"] == "CronJob":
        return [manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def containers(manifest: Manifest) -> list[Manifest]:
    """Every container of the object's pods, init containers first."""
    return [
        container
        for spec in pod_specs(manifest)
        for container in (*spec.get("initContainers", []), *spec["containers"])
    ]


def _documents(path: Path) -> list[Manifest]:
    documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    if not all(isinstance(d, dict) for d in documents):
        raise KustomizeError(f"{path}: every document must be an object")
    return documents


def _config_map(path: Path, generator: Manifest) -> Manifest:
    unknown = set(generator) - {"name", "literals"}
    if unknown:
        raise KustomizeError(f"{path}: configMapGenerator with {sorted(unknown)}")
    data: dict[str, str] = {}
    for literal in generator.get("literals", []):
        if not isinstance(literal, str) or "=" not in literal:
            raise KustomizeError(f"{path}: a literal is KEY=VALUE, not {literal!r}")
        key, value = literal.split("=", 1)
        if value[:1] in ("'", '"'):
            raise KustomizeError(f"{path}: {key}: kustomize would strip the quotes")
        data[key] = value
    name = generator["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-{content_hash(name, data)}"},
        "data": data,
    }


def content_hash(name: str, data: dict[str, str]) -> str:
    """kustomize's name suffix of a generated ConfigMap (api/hasher: SHA-256 of Go's JSON of
    kind, name and data, its first 10 hex digits with 0, 1, 3, a, e made letters).

    The name it hashes is empty: kustomize 5 looks the name up as one key "metadata/name",
    which no ConfigMap has, so ``name`` does not change the suffix (as ``kubectl kustomize``
    shows, and the comparison test checks)."""
    del name
    encoded = json.dumps(
        {"data": data, "kind": "ConfigMap", "name": ""},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    for character, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        encoded = encoded.replace(character, escape)  # as Go's encoding/json does
    digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _apply_patch(objects: list[Manifest], directory: Path, patch: Manifest) -> None:
    if set(patch) != {"path"}:
        raise KustomizeError(f"{directory}: only patches given by path are known ({patch})")
    [change] = _documents(directory / patch["path"])
    targets = [
        o
        for o in objects
        if o["kind"] == change["kind"] and o["metadata"]["name"] == change["metadata"]["name"]
    ]
    if len(targets) != 1:
        raise KustomizeError(f"{patch['path']}: {len(targets)} objects match, not one")
    if change.get("apiVersion") != targets[0]["apiVersion"]:
        raise KustomizeError(f"{patch['path']}: apiVersion differs from its target's")
    merged = _merge(targets[0], change)
    targets[0].clear()
    targets[0].update(merged)


def _merge(base: Any, change: Any) -> Any:
    if isinstance(base, dict) and isinstance(change, dict):
        if any(isinstance(key, str) and key.startswith("$") for key in change):
            raise KustomizeError(f"patch directives are not known here: {sorted(change)}")
        merged = dict(base)
        for key, value in change.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(change, list) and _named(base) and _named(change):
        by_name = {item["name"]: item for item in base}
        merged_list = [
            _merge(by_name[item["name"]], item) if item["name"] in by_name else item
            for item in change
        ]
        changed = {item["name"] for item in change}
        return merged_list + [item for item in base if item["name"] not in changed]
    return copy.deepcopy(change)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def _set_images(spec: Manifest, images: list[Manifest]) -> None:
    for container in (*spec.get("initContainers", []), *spec["containers"]):
        for image in images:
            unknown = set(image) - {"name", "newName", "newTag"}
            if unknown:
                raise KustomizeError(f"images: {sorted(unknown)} are not known here")
            name, _, tag = container["image"].partition(":")
            if name == image["name"] and "@" not in container["image"]:
                new_tag = image.get("newTag", tag)
                container["image"] = image.get("newName", name) + (f":{new_tag}" if new_tag else "")


def _rename_config_maps(spec: Manifest, renames: dict[str, str]) -> None:
    for container in (*spec.get("initContainers", []), *spec["containers"]):
        for source in container.get("envFrom", []):
            reference = source.get("configMapRef")
            if reference is not None:
                reference["name"] = renames.get(reference["name"], reference["name"])
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("configMapKeyRef")
            if reference is not None:
                reference["name"] = renames.get(reference["name"], reference["name"])
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            volume["configMap"]["name"] = renames.get(
                volume["configMap"]["name"], volume["configMap"]["name"]
            )
