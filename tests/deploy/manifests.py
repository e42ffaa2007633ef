"""What the deploy/ tests read: the compose file as Compose interpolates it, and the Kubernetes
manifests as `kubectl kustomize` renders them, with the subset of kustomize deploy/k8s uses
(resources, strategic-merge patches, configMapGenerator, images, namespace), since kubectl is
not installed in CI. Lists of named items (containers, env, ports, volumes) merge by name, as
the strategic merge does for them; other lists are replaced."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).parents[2] / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
CLUSTER_SCOPED = {"Namespace"}

Obj = dict[str, Any]


def interpolate(text: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR-default}` with nothing set (defaults, else a
    placeholder), and `$$` as a literal dollar."""

    def value(match: re.Match[str]) -> str:
        default = match.group(2)
        return default if default is not None else "unset"

    text = re.sub(r"(?<!\$)\$\{(\w+)(?::?-([^}]*))?\}", value, text)
    return text.replace("$$", "$")


def compose() -> Obj:
    loaded: Obj = yaml.safe_load(interpolate(COMPOSE.read_text()))
    return loaded


def merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    ):
        by_name = {item["name"]: item for item in base}
        out_list = [merge(by_name[i["name"]], i) if i["name"] in by_name else i for i in patch]
        patched = {i["name"] for i in patch}
        return [i for i in base if i["name"] not in patched] + out_list
    return copy.deepcopy(patch)


def _key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def render(directory: Path) -> list[Obj]:
    """The objects a kustomization renders (without kustomize's name hashes)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[Obj] = []
    for resource in spec.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [d for d in yaml.safe_load_all(path.read_text()) if d]
    index = {_key(o): i for i, o in enumerate(objects)}
    for generator in spec.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for name in generator.get("files", []):
            data[Path(name).name] = (directory / name).read_text()
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value
        key = ("ConfigMap", generator["name"])
        if generator.get("behavior") == "merge":
            objects[index[key]] = merge(objects[index[key]], {"data": data})
        else:
            generated = {"apiVersion": "v1", "kind": "ConfigMap"}
            objects.append({**generated, "metadata": {"name": generator["name"]}, "data": data})
            index[key] = len(objects) - 1
    for patch in spec.get("patches", []):
        for doc in yaml.safe_load_all((directory / patch["path"]).read_text()):
            key = _key(doc)
            assert key in index, f"{patch['path']} patches {key}, which the base lacks"
            objects[index[key]] = merge(objects[index[key]], doc)
    images = {i["name"]: i for i in spec.get("images", [])}
    for obj in objects:
        if spec.get("namespace") and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = spec["namespace"]
        for container in containers(obj):
            name, _, tag = container["image"].partition(":")
            if name in images:
                image = images[name]
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return objects


def pod_spec(obj: Obj) -> Obj | None:
    template = obj.get("spec", {}).get("template")
    if obj["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"} and template:
        spec: Obj = template["spec"]
        return spec
    return None


def containers(obj: Obj) -> list[Obj]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return [*spec.get("initContainers", []), *spec["containers"]]
