"""PCIe link arithmetic shared by the collectors, the rule engine and the benchmarks."""

from __future__ import annotations

# Raw transfer rate (GT/s) and line code per generation (8b/10b, 128b/130b, Gen6 FLIT 242/256).
GT_PER_S = {1: 2.5, 2: 5.0, 3: 8.0, 4: 16.0, 5: 32.0, 6: 64.0}
ENCODING = {1: (8, 10), 2: (8, 10), 3: (128, 130), 4: (128, 130), 5: (128, 130), 6: (242, 256)}
_GEN_BY_SPEED = {**{rate: gen for gen, rate in GT_PER_S.items()}, 128.0: 7}


def gen_of(speed_gts: float | None) -> int | None:
    """PCIe generation of a transfer rate: 2.5 -> 1 ... 32 -> 5, 64 -> 6, 128 -> 7."""
    if speed_gts is None:
        return None
    for rate, gen in _GEN_BY_SPEED.items():
        if abs(rate - float(speed_gts)) < 0.1:
            return gen
    return None


def link_gbps(gen: int | None, width: int | None) -> float | None:
    """Usable bandwidth per direction in GB/s, unrounded (Gen5 x16 -> 63.015...)."""
    if not gen or not width or gen not in GT_PER_S:
        return None
    num, den = ENCODING[gen]
    return GT_PER_S[gen] * width * num / den / 8


def normalize_address(text: str | bytes | None) -> str | None:
    """Any spelling of a PCI address as sysfs writes it, "0000:18:00.0"; None when it is none.

    Takes NVML's 8-digit domains ("00000000:18:00.0"), the short form without a domain
    ("18:00.0") and Xid messages' form without a function ("0000:3b:00"). NVML's "no device"
    bus id ("FFFFFFFF:FF:FF.0") and out-of-range numbers are not addresses.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not text:
        return None
    parts = text.strip().lower().split(":")
    if len(parts) == 2:
        parts.insert(0, "0")
    if len(parts) != 3:
        return None
    domain, bus, rest = parts
    device, _, function = rest.partition(".")
    try:
        numbers = (int(domain, 16), int(bus, 16), int(device, 16), int(function or "0", 16))
    except ValueError:
        return None
    # domains past 0xffff exist (Intel VMD: "10000:e0:00.0"); all ones is NVML's "no device"
    if numbers[0] >= 0xFFFFFFFF or numbers[1] > 0xFF or numbers[2] > 0x1F or numbers[3] > 7:
        return None
    return "{:04x}:{:02x}:{:02x}.{:x}".format(*numbers)


def sysfs_address(text: str) -> str | None:
    """`text` as sysfs writes it when it is one full PCI address ("0000:18:00.0", Intel VMD's
    "10000:e0:00.0"), else None: a path component that only looks like one ("pci0000:00",
    "0000:18:00") is not."""
    if text.count(":") != 2 or "." not in text:
        return None
    address = normalize_address(text)
    return address if address is not None and address == text.lower() else None
