"""Pure admission decisions: (pod, the objects its caches name) -> a JSON patch or a denial.

No I/O: `admission.server` reads the DataCaches and replications, resolves each cache name
with `reconcile.binding.binding_of` and hands the result here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datacache_operator.api.binding import (
    BOUND_ANNOTATION,
    CACHES_ANNOTATION,
    ECI_BUCKET_ANNOTATION,
    ECI_POD_LABEL,
    GATED_LABEL,
    SCHEDULING_GATE,
    BindingError,
    CacheRequest,
    Placement,
    bound_annotation,
    parse_caches,
    uses_label,
    volume_name,
)
from datacache_operator.reconcile.binding import Binding

NOWHERE_IN_PARTICULAR = Placement()


def requested_caches(pod: Mapping[str, Any]) -> list[CacheRequest]:
    return parse_caches(((pod.get("metadata") or {}).get("annotations") or {}).get(CACHES_ANNOTATION))


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _containers(spec: Mapping[str, Any]) -> list[tuple[str, int, Mapping[str, Any]]]:
    return [
        (kind, index, container)
        for kind in ("initContainers", "containers")
        for index, container in enumerate(spec.get(kind) or [])
    ]


def _one_bucket(bindings: Sequence[tuple[CacheRequest, Binding]], annotations: Mapping[str, str]) -> str:
    buckets = {b.bound.bucket for _, b in bindings}
    if len(buckets) > 1:
        listed = ", ".join(f"{r.name} (bucket {b.bound.bucket})" for r, b in bindings)
        raise BindingError(
            f"caches {listed} are in different buckets; an ECI pod mounts caches of one bucket only"
        )
    bucket = buckets.pop()
    preset = annotations.get(ECI_BUCKET_ANNOTATION)
    if preset is not None and preset != bucket:
        raise BindingError(
            f"annotation {ECI_BUCKET_ANNOTATION} is {preset!r}, but the caches are in bucket {bucket!r}"
        )
    return bucket


def _disk_annotations(
    bindings: Sequence[tuple[CacheRequest, Binding]], annotations: Mapping[str, str]
) -> dict[str, str]:
    """The disk options of the caches that the pod does not set itself (the pod wins)."""
    chosen: dict[str, tuple[str, str]] = {}  # annotation -> (value, cache)
    for request, binding in bindings:
        for key, value in binding.pod_disk.items():
            if key in annotations:
                continue
            if key in chosen and chosen[key][0] != value:
                raise BindingError(
                    f"caches {chosen[key][1]} and {request.name} ask for different {key} "
                    f"({chosen[key][0]} and {value}); set the annotation on the pod to choose"
                )
            chosen.setdefault(key, (value, request.name))
    return {key: value for key, (value, _) in chosen.items()}


def mutation(
    pod: Mapping[str, Any],
    bindings: Sequence[tuple[CacheRequest, Binding]],
    placement: Placement = NOWHERE_IN_PARTICULAR,
) -> list[dict[str, Any]]:
    """The JSON patch binding `pod` to its caches and to ECI; BindingError when it must be denied.

    Idempotent: a pod that already went through (a reinvocation) gets the same values and
    no second volume, mount or gate.
    """
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    bucket = _one_bucket(bindings, annotations)
    volumes = {v.get("name"): v for v in spec.get("volumes") or []}
    ours = {volume_name(request.name) for request, _ in bindings}
    for name, volume in volumes.items():
        if volume.get("hostPath") is not None and name not in ours:
            # On ECI a hostPath in the bucket is any cache of the account at that path.
            raise BindingError(
                f"volume {name} is a hostPath: a pod that uses caches mounts them only through "
                "the eci.datacache.dev/caches annotation"
            )
    for request, binding in bindings:
        name = volume_name(request.name)
        existing = volumes.get(name)
        if existing is not None and (existing.get("hostPath") or {}).get("path") != binding.bound.path:
            raise BindingError(f"the pod already has a volume named {name} (needed for cache {request.name})")
        for _, _, container in _containers(spec):
            for mount in container.get("volumeMounts") or []:
                if mount.get("mountPath", "").rstrip("/") == request.mount_path and mount.get("name") != name:
                    raise BindingError(
                        f"container {container.get('name')} already mounts volume {mount.get('name')} at "
                        f"{request.mount_path}, where cache {request.name} should go"
                    )

    patch: list[dict[str, Any]] = []
    new_annotations = {
        ECI_BUCKET_ANNOTATION: bucket,
        BOUND_ANNOTATION: bound_annotation([b.bound for _, b in bindings]),
        **_disk_annotations(bindings, annotations),
    }
    for key, value in new_annotations.items():
        patch.append({"op": "add", "path": f"/metadata/annotations/{_pointer(key)}", "value": value})
    gated = not all(b.ready for _, b in bindings)
    labels = {uses_label(r.name): b.bound.region for r, b in bindings}
    if gated:
        labels[GATED_LABEL] = "true"
    if placement.label:
        labels[ECI_POD_LABEL] = "true"
    if meta.get("labels") is None:
        patch.append({"op": "add", "path": "/metadata/labels", "value": labels})
    else:
        for key, value in labels.items():
            patch.append({"op": "add", "path": f"/metadata/labels/{_pointer(key)}", "value": value})

    wanted_volumes = [
        {"name": volume_name(r.name), "hostPath": {"path": b.bound.path}}
        for r, b in bindings
        if volume_name(r.name) not in volumes
    ]
    _append(patch, spec, "/spec", "volumes", wanted_volumes)
    for kind, index, container in _containers(spec):
        present = {m.get("name") for m in container.get("volumeMounts") or []}
        mounts = [
            {
                "name": volume_name(r.name),
                "mountPath": r.mount_path,
                **({"readOnly": True} if r.read_only else {}),
            }
            for r, _ in bindings
            if volume_name(r.name) not in present
        ]
        _append(patch, container, f"/spec/{kind}/{index}", "volumeMounts", mounts)
    _place(patch, spec, placement)
    gates = spec.get("schedulingGates") or []
    if gated and not any(g.get("name") == SCHEDULING_GATE for g in gates):
        _append(patch, spec, "/spec", "schedulingGates", [{"name": SCHEDULING_GATE}])
    return patch


def _place(patch: list[dict[str, Any]], spec: Mapping[str, Any], placement: Placement) -> None:
    """The nodeSelector and toleration that keep the pod on the virtual node."""
    selector: Mapping[str, str] = spec.get("nodeSelector") or {}
    for key, value in placement.node_selector.items():
        if key in selector and selector[key] != value:
            raise BindingError(
                f"nodeSelector {key}={selector[key]}: a pod that uses caches runs on ECI ({key}={value})"
            )
    if placement.node_selector and spec.get("nodeSelector") is None:
        patch.append({"op": "add", "path": "/spec/nodeSelector", "value": dict(placement.node_selector)})
    else:
        for key, value in placement.node_selector.items():
            patch.append({"op": "add", "path": f"/spec/nodeSelector/{_pointer(key)}", "value": value})
    taint = placement.toleration_key
    if taint and not any(
        t.get("key") == taint and t.get("operator") == "Exists" for t in spec.get("tolerations") or []
    ):
        _append(
            patch,
            spec,
            "/spec",
            "tolerations",
            [{"key": taint, "operator": "Exists", "effect": "NoSchedule"}],
        )


def _append(
    patch: list[dict[str, Any]], parent: Mapping[str, Any], path: str, key: str, items: list[dict[str, Any]]
) -> None:
    if not items:
        return
    if parent.get(key) is None:
        patch.append({"op": "add", "path": f"{path}/{key}", "value": items})
    else:
        patch.extend({"op": "add", "path": f"{path}/{key}/-", "value": item} for item in items)
