"""Service facts: GPU node daemons running (/proc) and enabled (systemd unit links), no exec."""

from __future__ import annotations

import os
from dataclasses import field
from typing import Annotated

from nodetune.collectors import Context, register, tuned
from nodetune.collectors.kernel import read_mounts
from nodetune.facts.model import FactSet, Keyed
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

# unit name -> process name (/proc/<pid>/comm keeps only the first 15 characters)
SERVICES = {
    "nvidia-persistenced": "nvidia-persistenced",
    "nvidia-fabricmanager": "nv-fabricmanager",
    "nvidia-imex": "nvidia-imex",
    "irqbalance": "irqbalance",
    "tuned": "tuned",  # re-applies its own profile over the settings nodetune applies
}
COMM_LEN = 15
UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")


@record(frozen=True, kw_only=True)
class Unit:
    state: str  # "running" | "not-running" | "unknown"
    enabled: bool | None
    installed: bool | None
    source: str


@record(frozen=True, kw_only=True)
class ServicesFacts(FactSet):
    units: Annotated[dict[str, Unit], Keyed("unit")] = field(default_factory=dict)
    tuned: tuned.TunedProfile | None = None  # None: TuneD is not installed


def running_processes(root: HostRoot, wanted: set[str]) -> tuple[dict[str, int], int]:
    """{comm: first pid} for wanted process names, and how many /proc/<pid> entries were seen."""
    found: dict[str, int] = {}
    pids = [p for p in root.listdir("/proc") if p.isdigit()]
    for pid in pids:
        comm = root.read_str(f"/proc/{pid}/comm", None)
        if comm in wanted and comm not in found:
            found[comm] = int(pid)
    return found, len(pids)


def _proc_hidden(root: HostRoot) -> bool:
    """True when /proc is mounted with hidepid and we are not root: other users' pids hidden."""
    if not root.is_live or os.geteuid() == 0:
        return False
    mounts, _ = read_mounts(root)
    return any(mp == "/proc" and "hidepid=" in opts and "hidepid=0" not in opts
               for _, mp, _, opts in mounts or [])


def unit_enabled(root: HostRoot, unit: str) -> tuple[bool | None, bool | None]:
    """(enabled, installed) from systemd's unit links; (None, None) without /etc/systemd."""
    if not root.isdir("/etc/systemd/system"):
        return None, None
    filename = f"{unit}.service"
    masked = root.readlink(f"/etc/systemd/system/{filename}") == "/dev/null"
    installed = any(root.exists(f"{d}/{filename}") for d in UNIT_DIRS) and not masked
    for directory in ("/etc/systemd/system", "/run/systemd/system"):
        for wants in root.listdir(directory):
            if wants.endswith((".wants", ".requires")) and \
                    root.readlink(f"{directory}/{wants}/{filename}") is not None:
                return not masked, installed
    return False, installed


@register("services")
class ServicesCollector:
    """State of nvidia-persistenced, nvidia-fabricmanager, nvidia-imex, irqbalance and tuned:
    running (from /proc/<pid>/comm) and enabled (systemd .wants links); TuneD's active profile
    and what it sets (/etc/tuned, /usr/lib/tuned)."""

    requires = ("/proc", "/etc/systemd/system")

    def collect(self, ctx: Context) -> ServicesFacts:
        root = ctx.root
        wanted = {comm[:COMM_LEN] for comm in SERVICES.values()}
        found, seen = running_processes(root, wanted)
        unknown: dict[str, str] = {}
        hidden = _proc_hidden(root)
        units = {}
        for unit, comm in SERVICES.items():
            pid = found.get(comm[:COMM_LEN])
            if pid is not None:
                state, source = "running", f"/proc/{pid}/comm"
            elif seen and not hidden:
                state, source = "not-running", "/proc/*/comm"
            else:
                state, source = "unknown", "/proc/*/comm"
                unknown[f"units.{unit}.state"] = (
                    "/proc is mounted with hidepid: run nodetune as root" if hidden
                    else "no process directories under /proc in this tree")
            enabled, installed = unit_enabled(root, unit)
            if enabled is None:
                unknown[f"units.{unit}.enabled"] = "/etc/systemd/system is not present"
            units[unit] = Unit(state=state, enabled=enabled, installed=installed, source=source)
        profile, profile_unknown = tuned.read(root)
        unknown.update(profile_unknown)
        sources = {"units": "/proc/*/comm, /etc/systemd/system"}
        if profile is not None:
            sources["tuned.active"] = tuned.ACTIVE_PROFILE
            sources["tuned.settings"] = ", ".join(profile.chain) or tuned.ACTIVE_PROFILE
        return ServicesFacts(units=units, tuned=profile, sources=sources, unknown=unknown)
