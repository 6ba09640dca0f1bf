"""Kubernetes operator for Alibaba Cloud ECI data caches."""

__version__ = "0.1.0"

GROUP = "eci.datacache.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
