"""How many NVLinks a GPU product has, so that links absent by design are not counted as down.

NVML reports a fixed number of link slots per GPU (18 on Hopper and Blackwell), also for products
that wire fewer: an H100 NVL has 12 NVLinks, an H800 8. PCIe cards reach theirs only through
optional NVLink bridges, so such a card with no active link has no bridge fitted, not a fault.
Figures from NVIDIA's product datasheets (NVLink bandwidth / per-link bandwidth of its generation).
"""

from __future__ import annotations

import re

from nodetune.facts.record import record


@record(frozen=True)
class NvlinkSpec:
    links: int
    bridged: bool  # links only through optional NVLink bridges (PCIe form factor)


# First match wins: the specific names before the families they belong to.
PRODUCTS: tuple[tuple[str, NvlinkSpec], ...] = (
    (r"GB300|GB200|B300|B200", NvlinkSpec(18, bridged=False)),
    (r"H200 NVL", NvlinkSpec(18, bridged=True)),
    (r"H100 NVL", NvlinkSpec(12, bridged=True)),
    (r"H100 PCIe|H800 PCIe", NvlinkSpec(12, bridged=True)),
    (r"H800", NvlinkSpec(8, bridged=False)),
    (r"H100|H200|H20\b", NvlinkSpec(18, bridged=False)),
    (r"A100.*PCIe|A800.*PCIe", NvlinkSpec(12, bridged=True)),
    (r"A800", NvlinkSpec(8, bridged=False)),
    (r"A100", NvlinkSpec(12, bridged=False)),
)


def nvlink_spec(name: str | None) -> NvlinkSpec | None:
    """The NVLink wiring of the product NVML names ("NVIDIA H100 NVL"); None when unknown."""
    for pattern, spec in PRODUCTS:
        if name and re.search(pattern, name):
            return spec
    return None


def links_down(name: str | None, active: int | None, inactive: int | None,
               expected: int | None = None) -> tuple[int | None, int | None]:
    """(links down, links the GPU should have) from NVML's active / inactive link counts.

    `expected` (a profile's `nvlink_links`) overrides the product's figure. Without a known
    figure every inactive slot counts, as NVML reports them. A GPU whose product has NVLinks
    but for which NVML reports no link slot at all (NotSupported: a VM given the GPU without
    its NVLinks, as single-GPU cloud VMs are) is unknown, not down: nothing says the links
    exist on this host.
    """
    if active is None or inactive is None:
        return None, None
    spec = nvlink_spec(name)
    wanted = expected if expected is not None else spec.links if spec else None
    if active + inactive == 0:
        if wanted and not (spec is not None and spec.bridged and expected is None):
            return None, wanted
        return 0, 0
    if wanted is None:
        return inactive, active + inactive
    if spec is not None and spec.bridged and active == 0 and expected is None:
        return 0, 0  # no NVLink bridge fitted
    return max(0, wanted - active), wanted
