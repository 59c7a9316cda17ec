"""User strings that land in generated files, checked against each target's grammar first.

A node name, an image or a namespace is written into slurm.conf, gres.conf, YAML and shell
lines as it is; a value outside its grammar (a newline, a quote, a colon-space) could add a
line or a key to them. Each check either returns the value unchanged or raises `BadValue`
(exit 3, one line), before any file is written.
"""

from __future__ import annotations

import re

from nodetune.errors import NodetuneError

# RFC 1123 host name label: what Slurm's NodeName and a short host name are. Case is kept:
# Slurm node names may hold capitals.
HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Kubernetes DNS-1123 label (namespaces; k8s.io/apimachinery validation.IsDNS1123Label).
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
# An extended resource name: DNS-1123 subdomain prefix, "/", a qualified name.
RESOURCE_NAME = re.compile(_SUBDOMAIN + r"/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
# OCI image reference (github.com/distribution/reference regexp.go): [host[:port]/]path[:tag]
# [@digest], path components lower case.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
IMAGE_REFERENCE = re.compile(
    rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?")
IMAGE_MAX = 255


class BadValue(NodetuneError):
    """A user value that would not fit the grammar of the file it lands in."""


def _check(value: str, pattern: re.Pattern[str], what: str, grammar: str, fix: str,
           limit: int = 253) -> str:
    if len(value) > limit or pattern.fullmatch(value) is None:
        raise BadValue(f"{what} {value!r} is not {grammar}", fix=fix)
    return value


def node_name(value: str) -> str:
    return _check(value, HOST_LABEL, "node name", "a host name label (letters, digits and "
                  "'-', at most 63, no dots)", "pass --node-name with the short host name", 63)


def namespace(value: str) -> str:
    return _check(value, DNS1123_LABEL, "namespace", "a DNS-1123 label (lower-case letters, "
                  "digits and '-', at most 63)", "pass --namespace NAME", 63)


def image(value: str, option: str) -> str:
    return _check(value, IMAGE_REFERENCE, f"{option}", "an OCI image reference "
                  "(REGISTRY/PATH:TAG or @sha256:DIGEST)", f"pass {option} REGISTRY/NAME:TAG",
                  IMAGE_MAX)


def resource_name(value: str) -> str:
    return _check(value, RESOURCE_NAME, "extended resource", "DOMAIN/NAME (a DNS-1123 "
                  "subdomain, '/', a qualified name)", "pass --rdma-resource like "
                  "rdma/rdma_shared_device_a")


KUBERNETES_VERSION = re.compile(r"v?1\.(\d{1,2})(?:\.\d{1,3})?")


def kubernetes_version(value: str) -> tuple[int, int]:
    """"1.33", "v1.34.2" -> (1, 33); BadValue for anything else."""
    _check(value, KUBERNETES_VERSION, "--kubernetes-version", "a Kubernetes version "
           "(1.MINOR or v1.MINOR.PATCH)", "pass --kubernetes-version like 1.33", 16)
    minor = KUBERNETES_VERSION.fullmatch(value)
    assert minor is not None
    return 1, int(minor[1])
