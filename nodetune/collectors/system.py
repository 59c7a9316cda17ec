"""System identity: DMI product, board and firmware (BIOS/UEFI) version, and the OS release.

Serial numbers, UUIDs and asset tags are never read (they are secrets for many sites, and
snapshots refuse them too).
"""

from __future__ import annotations

import shlex

from nodetune.collectors import Context, register
from nodetune.collectors.sysfs import FactNotes
from nodetune.facts.model import FactSet
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

DMI_DIR = "/sys/class/dmi/id"
DMI_FIELDS = ("sys_vendor", "product_name", "product_version", "board_vendor", "board_name",
              "bios_vendor", "bios_version", "bios_date")
# os-release(5): /etc/os-release first, /usr/lib/os-release as the fallback.
OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")
# Values firmware writes where it has nothing to say (dmidecode's list of placeholders).
DMI_PLACEHOLDERS = frozenset({"", "to be filled by o.e.m.", "default string", "not specified",
                              "not applicable", "system product name", "system version",
                              "none", "n/a", "0123456789"})


@record(frozen=True, kw_only=True)
class Dmi:
    sys_vendor: str | None
    product_name: str | None
    product_version: str | None
    board_vendor: str | None
    board_name: str | None
    bios_vendor: str | None
    bios_version: str | None
    bios_date: str | None  # as firmware writes it: "07/19/2019"


@record(frozen=True, kw_only=True)
class OsRelease:
    id: str | None  # "debian", "ubuntu", "rhel"
    version_id: str | None  # "12", "24.04", "9.4"
    pretty_name: str | None


@record(frozen=True, kw_only=True)
class SystemFacts(FactSet):
    dmi: Dmi | None = None  # None where the kernel exposes no DMI (most Arm boards, POWER)
    os: OsRelease | None = None


def parse_os_release(text: str) -> dict[str, str]:
    """os-release(5) KEY=value lines, shell-quoted values unquoted; comments and junk skipped."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or not key or key.startswith("#"):
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        out[key] = " ".join(words)
    return out


def _dmi_value(text: str | None) -> str | None:
    if text is None:
        return None
    value = text.replace("\x00", "").strip()
    return None if value.lower() in DMI_PLACEHOLDERS else value


def read_dmi(root: HostRoot, notes: FactNotes) -> Dmi | None:
    if not root.isdir(DMI_DIR):
        notes.missing("dmi", f"no {DMI_DIR} (no DMI/SMBIOS tables: most Arm and POWER "
                             "systems, or a tree gathered without it)")
        return None
    values = {}
    for name in DMI_FIELDS:
        path = f"{DMI_DIR}/{name}"
        raw = root.read_str(path, None)
        values[name] = _dmi_value(raw)
        if values[name] is not None:
            notes.source(f"dmi.{name}", path)
        else:
            notes.missing(f"dmi.{name}", f"{path} is missing" if raw is None
                          else f"{path} holds a firmware placeholder ({raw!r})")
    return Dmi(**values)


def read_os_release(root: HostRoot, notes: FactNotes) -> OsRelease | None:
    for path in OS_RELEASE_FILES:
        text = root.read_text(path, None)
        if text is None:
            continue
        fields = parse_os_release(text)
        notes.source("os", path)
        return OsRelease(id=fields.get("ID"), version_id=fields.get("VERSION_ID"),
                         pretty_name=fields.get("PRETTY_NAME"))
    notes.missing("os", "neither /etc/os-release nor /usr/lib/os-release is readable")
    return None


@register("system")
class SystemCollector:
    """DMI system product, board and BIOS version; OS release (ID, VERSION_ID, PRETTY_NAME)."""

    requires = ()

    def collect(self, ctx: Context) -> SystemFacts:
        notes = FactNotes(ctx.root)
        return SystemFacts(dmi=read_dmi(ctx.root, notes), os=read_os_release(ctx.root, notes),
                           sources=notes.sources, unknown=notes.unknown)
