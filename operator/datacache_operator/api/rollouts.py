"""The rollout contract: the annotation by which a Deployment or StatefulSet opts in to being
rolled onto a cache's new revision, and the pod-template annotation that records, per cache,
the revision its pods were rolled onto.

Pure names; `reconcile/rollouts.py` decides, `controllers/rollouts.py` patches.
"""

from __future__ import annotations

from datacache_operator import GROUP
from datacache_operator.api.common import fit_name

ROLLOUT_ANNOTATION = f"{GROUP}/rollout"
"""On a Deployment or StatefulSet (its own metadata, not its pod template): `"true"` lets the
operator roll it when a cache its pods use gets a new current revision."""
REVISION_ANNOTATION_PREFIX = f"revisions.{GROUP}/"
"""`revisions.eci.datacache.dev/<cache>: <revision>` on a pod template: the revision of that
cache the template was last rolled onto. Changing it is what rolls the workload, as
`kubectl rollout restart` does with `kubectl.kubernetes.io/restartedAt`."""

ROLLOUT_KINDS = ("Deployment", "StatefulSet")
"""The workloads that are rolled (apps/v1): both replace their pods by their own rolling update."""

_ANNOTATION_NAME_MAX = 63


def revision_annotation(cache: str) -> str:
    """The pod-template annotation recording `cache`'s revision: a qualified name whose name
    part is the cache's name, fitted to 63 characters as `uses_label` fits it."""
    return REVISION_ANNOTATION_PREFIX + fit_name(cache, _ANNOTATION_NAME_MAX)
