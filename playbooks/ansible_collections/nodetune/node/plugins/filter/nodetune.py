"""Filters of the nodetune.node roles: role variables -> the writes and lines the modules take.

Each filter is a pure function of its arguments, so the roles stay declarative:

    kernel_sysctl | nodetune.node.sysctl_writes
      -> [{path: /proc/sys/vm/swappiness, value: "10"}]

Runtime writes are [{path, value}] for nodetune_sysfs; persistent lines are [{regexp, line}]
for nodetune_lines; PCI writes are [{address, register, value, mask}] for the setpci role.
"""

from __future__ import annotations

import re

DOCUMENTATION = r"""
name: nodetune
short_description: Role variables of nodetune.node as module arguments
description:
  - C(sysctl_writes), C(sysctl_lines), C(cmdline_args) (kernel role), C(memory_writes),
    C(tmpfiles_lines) (memory and cpu roles), C(modules_load_lines), C(modprobe_lines)
    (modules role), C(block_writes), C(block_udev_lines) (storage role), C(mtu_writes),
    C(mtu_udev_lines), C(mrrs_writes) (nic role), C(acs_writes) (gpu role),
    C(rollback_writes) (rollback role).
"""

# MaxReadReq is bits 14:12 of the PCIe Device Control register: 128 << code bytes
MRRS_CODES = {128: 0, 256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5}


def _text(value):
    """A value as the kernel reads it ("10", "madvise"); booleans as Jinja's string filter."""
    return str(value)


def sysctl_writes(sysctl):
    """{vm.swappiness: 10} -> [{path: /proc/sys/vm/swappiness, value: "10"}]."""
    return [{"path": "/proc/sys/" + str(name).replace(".", "/"), "value": _text(value)}
            for name, value in sysctl.items()]


def sysctl_lines(sysctl, files, default_file):
    """Persistent sysctl lines grouped by file: {file: [{regexp, line}]}.

    A key goes into the file that already sets it (`files`), else into `default_file`; the
    regexp matches both spellings of the key (vm.swappiness, vm/swappiness) and a leading "-"
    (sysctl.d's "ignore errors" marker)."""
    out = {}
    for name, value in sysctl.items():
        pattern = r"^\s*-?\s*" + re.escape(str(name)).replace(r"\.", "[./]") + r"\s*="
        out.setdefault(files.get(name, default_file), []).append(
            {"regexp": pattern, "line": f"{name} = {value}"})
    return out


def cmdline_args(cmdline):
    """{iommu: pt, nosmt: true, quiet: false} -> "iommu=pt nosmt" (false leaves an arg out)."""
    words = []
    for key, value in cmdline.items():
        if value is False:
            continue
        bare = value is True or value is None or value == ""
        words.append(str(key) if bare else f"{key}={value}")
    return " ".join(words)


def memory_writes(thp_enabled, thp_defrag, hugepages):
    """Transparent hugepages and hugepage pools as runtime writes ("" leaves THP as is).

    A pool with `node` sizes that NUMA node's pool, else the system-wide one."""
    out = [{"path": "/sys/kernel/mm/transparent_hugepage/" + name, "value": _text(value)}
           for name, value in (("enabled", thp_enabled), ("defrag", thp_defrag))
           if len(_text(value)) > 0]
    for pool in hugepages:
        base = (f"/sys/devices/system/node/node{pool['node']}" if "node" in pool
                else "/sys/kernel/mm")
        out.append({"path": f"{base}/hugepages/hugepages-{pool['size_kb']}kB/nr_hugepages",
                    "value": _text(pool["pages"])})
    return out


def tmpfiles_lines(results, key="path"):
    """systemd-tmpfiles `w` lines for what nodetune_sysfs wrote and the kernel took.

    `results` are registered nodetune_sysfs results (skipped ones have no `paths`); `key` is
    "path" (one line per file) or "pattern" (one line per glob, as the cpu role writes)."""
    out = []
    done = set()
    for result in results:
        for entry in (result or {}).get("paths") or []:
            target = entry.get(key)
            if entry.get("rejected") or target is None or target in done:
                continue
            done.add(target)
            out.append({"regexp": r"^w\s+" + re.escape(target) + r"\s",
                        "line": f"w {target} - - - - {entry['after']}"})
    return out


def modules_load_lines(names):
    """modules-load.d lines, one module name each."""
    return [{"regexp": r"^\s*" + re.escape(str(name)) + r"\s*$", "line": str(name)}
            for name in names]


def modprobe_lines(options, blacklist):
    """modprobe.d `options` and `blacklist` lines."""
    out = [{"regexp": r"^\s*options\s+" + re.escape(str(name)) + r"\s",
            "line": f"options {name} {value}"} for name, value in options.items()]
    out += [{"regexp": r"^\s*blacklist\s+" + re.escape(str(name)) + r"\s*$",
             "line": f"blacklist {name}"} for name in blacklist]
    return out


def block_writes(block):
    """{nvme0n1: {scheduler: none}} -> [{path: /sys/block/nvme0n1/queue/scheduler, value}]."""
    return [{"path": f"/sys/block/{device}/queue/{attr}", "value": _text(value)}
            for device, attrs in block.items() for attr, value in attrs.items()]


def block_udev_lines(block):
    """The same block queue settings as udev rules, one line per device and attribute."""
    out = []
    for device, attrs in block.items():
        for attr, value in attrs.items():
            match = f'KERNEL=="{device}", ATTR{{queue/{attr}}}='
            line = ('ACTION=="add|change", SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", '
                    f'{match}"{value}"')
            out.append({"regexp": re.escape(match), "line": line})
    return out


def mtu_writes(mtu):
    """{ens1np0: 9000} -> [{path: /sys/class/net/ens1np0/mtu, value: "9000"}]."""
    return [{"path": f"/sys/class/net/{name}/mtu", "value": _text(value)}
            for name, value in mtu.items()]


def mtu_udev_lines(mtu):
    """Interface MTUs as udev rules, applied whenever the interface appears."""
    out = []
    for name, value in mtu.items():
        match = f'KERNEL=="{name}", ATTR{{mtu}}='
        out.append({"regexp": re.escape(match),
                    "line": f'ACTION=="add", SUBSYSTEM=="net", {match}"{value}"'})
    return out


def mrrs_writes(sizes):
    """{PCI address: bytes} -> writes of MaxReadReq (Device Control bits 14:12)."""
    out = []
    for address, size in sizes.items():
        code = MRRS_CODES.get(int(size))
        if code is None:
            raise ValueError(f"Max_Read_Request_Size {size} of {address} is not one of "
                             f"{', '.join(str(s) for s in MRRS_CODES)}")
        out.append({"address": str(address), "register": "CAP_EXP+0x8.w",
                    "value": f"{code:x}000", "mask": "7000"})
    return out


def acs_writes(addresses):
    """PCI addresses -> writes of ACS control (offset 6 of the ACS capability) to 0: all off."""
    return [{"address": str(address), "register": "ECAP_ACS+0x6.w", "value": "0000",
             "mask": "ffff"} for address in addresses]


def rollback_writes(runtime, raw):
    """Recorded runtime values as writes: the bytes read (`raw`, for a copied tree) or the
    value the kernel showed (the live host)."""
    return [{"path": entry["path"], "value": entry["raw"] if raw else entry["value"]}
            for entry in runtime]


class FilterModule:
    """nodetune.node filters."""

    def filters(self):
        return {
            "sysctl_writes": sysctl_writes,
            "sysctl_lines": sysctl_lines,
            "cmdline_args": cmdline_args,
            "memory_writes": memory_writes,
            "tmpfiles_lines": tmpfiles_lines,
            "modules_load_lines": modules_load_lines,
            "modprobe_lines": modprobe_lines,
            "block_writes": block_writes,
            "block_udev_lines": block_udev_lines,
            "mtu_writes": mtu_writes,
            "mtu_udev_lines": mtu_udev_lines,
            "mrrs_writes": mrrs_writes,
            "acs_writes": acs_writes,
            "rollback_writes": rollback_writes,
        }
