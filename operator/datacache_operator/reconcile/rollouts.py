"""Pure decisions about rolling workloads onto a cache's new revision: does a Deployment or
StatefulSet use a cache, has it opted in, and the JSON patch that records the revision on its
pod template (which starts the workload's own rolling update, as `kubectl rollout restart`
does). No I/O: `controllers/rollouts.py` lists and patches the workloads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datacache_operator.api.binding import CACHES_ANNOTATION, INJECT_LABEL, BindingError, parse_caches
from datacache_operator.api.rollouts import ROLLOUT_ANNOTATION, revision_annotation

TEMPLATE_ANNOTATIONS = "/spec/template/metadata/annotations"


def _template_metadata(workload: Mapping[str, Any]) -> Mapping[str, Any]:
    template = (workload.get("spec") or {}).get("template") or {}
    return template.get("metadata") or {}


def opted_in(workload: Mapping[str, Any]) -> bool:
    """The workload itself (not its pod template) carries `eci.datacache.dev/rollout: "true"`."""
    annotations = (workload.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ROLLOUT_ANNOTATION, "")).strip().lower() == "true"


def uses_cache(workload: Mapping[str, Any], cache: str) -> bool:
    """Its pod template is labelled for injection and its caches annotation names `cache`
    (a malformed annotation names nothing: the webhook would refuse its pods anyway)."""
    metadata = _template_metadata(workload)
    if (metadata.get("labels") or {}).get(INJECT_LABEL) != "true":
        return False
    try:
        requests = parse_caches((metadata.get("annotations") or {}).get(CACHES_ANNOTATION))
    except BindingError:
        return False
    return any(request.name == cache for request in requests)


def wants_rollout(workload: Mapping[str, Any], cache: str) -> bool:
    """Rolled when `cache` gets a new revision: opted in, and its pods use the cache."""
    return opted_in(workload) and uses_cache(workload, cache)


def recorded_revision(workload: Mapping[str, Any], cache: str) -> str | None:
    """The revision of `cache` the pod template was last rolled onto, if any."""
    value = (_template_metadata(workload).get("annotations") or {}).get(revision_annotation(cache))
    return None if value is None else str(value)


def _pointer(key: str) -> str:
    """One JSON-pointer token (RFC 6901): an annotation key's `/` becomes `~1`."""
    return key.replace("~", "~0").replace("/", "~1")


def rollout_patch(workload: Mapping[str, Any], cache: str, revision: str) -> list[dict[str, Any]] | None:
    """The JSON patch recording `revision` of `cache` on the workload's pod template; None when
    the template already records it (a repeated call patches nothing).

    The patch first tests that the template's annotations are still exactly those read: a
    concurrent change of them (another revision recorded, the caches annotation edited, a
    `kubectl rollout restart`) fails the patch instead of being overwritten, and the caller
    reads the workload again. Status updates of the workload's controller do not fail it. A
    template without annotations (it uses no cache) is tested by the workload's resourceVersion."""
    if recorded_revision(workload, cache) == revision:
        return None
    key = revision_annotation(cache)
    annotations = _template_metadata(workload).get("annotations")
    if annotations is None:
        version = (workload.get("metadata") or {}).get("resourceVersion")
        guard = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}] if version else []
        if "metadata" not in ((workload.get("spec") or {}).get("template") or {}):
            return [
                *guard,
                {"op": "add", "path": "/spec/template/metadata", "value": {"annotations": {key: revision}}},
            ]
        return [*guard, {"op": "add", "path": TEMPLATE_ANNOTATIONS, "value": {key: revision}}]
    return [
        {"op": "test", "path": TEMPLATE_ANNOTATIONS, "value": dict(annotations)},
        {"op": "add", "path": f"{TEMPLATE_ANNOTATIONS}/{_pointer(key)}", "value": revision},
    ]


def workload_ref(workload: Mapping[str, Any]) -> str:
    """`Deployment/name`, as the caller reports a rolled workload."""
    return f"{workload.get('kind')}/{(workload.get('metadata') or {}).get('name')}"
