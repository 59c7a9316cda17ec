"""The network part of the `health` section: RDMA ports (state, subnet manager, error counters
and their growth) and link flaps of ports and physical interfaces.

`History` holds the earlier readings of this boot (nodetune.check.readings) and the time of
the current one; without earlier readings nothing has grown and no flap is counted: the checks
that need them are skipped (`baseline` false), never passed on a guess.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nodetune.facts.netcounters import LINK_ERROR_COUNTERS, Reading, increase_within, within
from nodetune.facts.record import record

# Port counters compared with the absolute thresholds (`rdma_error_thresholds`) and kept in
# readings: the IBA PortCounters error fields, as sysfs names them.
ERROR_COUNTERS = (*LINK_ERROR_COUNTERS, "port_rcv_switch_relay_errors", "port_xmit_discards",
                  "port_xmit_constraint_errors", "port_rcv_constraint_errors", "VL15_dropped")
DEFAULT_COUNTER_WINDOW_S = 900.0
DEFAULT_FLAP_WINDOW_S = 600.0


@record(frozen=True)
class History:
    """Earlier readings of this boot, the time of this one, and why there are none."""

    readings: Sequence[Reading] = ()
    now: float = 0.0
    note: str = "no earlier reading"


def rdma_ports(facts: Mapping[str, Any], variables: Mapping[str, Any],
               history: History, unknown: dict[str, str]) -> list[dict[str, Any]]:
    """One item per port of a PCI RDMA device matching `rdma_devices`; reasons for null
    values go to `unknown` (keyed `rdma_ports.<i>.<field>`)."""
    wanted = re.compile(str(variables.get("rdma_devices") or ".*"))
    limits = {str(k): int(v) for k, v in (variables.get("rdma_error_thresholds") or {}).items()}
    window = float(variables.get("rdma_counter_window_s") or DEFAULT_COUNTER_WINDOW_S)
    recent = within(history.readings, history.now, window)
    out: list[dict[str, Any]] = []
    for dev in ((facts.get("rdma") or {}).get("devices") or []):
        name = str(dev.get("name"))
        if not dev.get("pci_address") or not wanted.fullmatch(name):
            continue  # software RDMA (rxe, siw) has no PCI device
        for port in dev.get("ports") or []:
            item = _port(name, port, limits)
            _growth(item, recent, history, window)
            _note_unknown(unknown, len(out), item, port, history, window)
            out.append(item)
    return out


def _growth(item: dict[str, Any], recent: Sequence[Reading], history: History,
            window: float) -> None:
    """The link-error counters that rose over the readings of the window (its oldest reading
    of this port is the baseline): growth stays visible for a window after it stopped."""
    subject = item["subject"]
    seen = [r for r in recent if isinstance((r.get("ports") or {}).get(subject), Mapping)]
    item["baseline"] = bool(seen) and bool(item["counters"])
    item["baseline_age_s"] = round(history.now - float(seen[0]["t"]), 1) \
        if item["baseline"] else None
    rose = {}
    for name in LINK_ERROR_COUNTERS if item["baseline"] else ():
        increase = increase_within(seen, history.now, window, "ports", subject,
                                   item["counters"].get(name), counter=name)
        if increase:
            rose[name] = increase
    item["errors_grown"] = ", ".join(f"{k} +{v}" for k, v in rose.items())
    item["errors_grown_count"] = len(rose) if item["baseline"] else None


def _port(device: str, port: Mapping[str, Any], limits: Mapping[str, int]) -> dict[str, Any]:
    state = port.get("state")
    layer = port.get("link_layer")
    lid, sm_lid = port.get("lid"), port.get("sm_lid")
    raw = port.get("counters") or {}
    counters = {k: raw[k] for k in ERROR_COUNTERS if isinstance(raw.get(k), int)}
    over = {k: v for k, v in counters.items() if k in limits and v >= limits[k] > 0}
    return {
        "subject": f"{device}/{port.get('port')}", "device": device, "port": port.get("port"),
        "state": state, "phys_state": port.get("phys_state"),
        "rate_gbps": port.get("rate_gbps"), "link_layer": layer,
        "active": None if state is None else str(state).upper() == "ACTIVE",
        "infiniband": None if layer is None else layer == "InfiniBand",
        "lid": lid, "sm_lid": sm_lid,
        # LID 0 is never a valid unicast LID: the SM has not configured the port or its own
        "sm_ok": None if lid is None or sm_lid is None else lid != 0 and sm_lid != 0,
        "counters": counters,
        "errors_over": ", ".join(f"{k} {v} (limit {limits[k]})" for k, v in over.items()),
        "errors_over_count": len(over) if counters else None,
    }


def _note_unknown(unknown: dict[str, str], index: int, item: Mapping[str, Any],
                  port: Mapping[str, Any], history: History, window: float) -> None:
    key = f"rdma_ports.{index}"
    if item["sm_ok"] is None:
        missing = [n for n in ("lid", "sm_lid") if port.get(n) is None]
        unknown[f"{key}.sm_ok"] = f"{item['subject']}: ports/{item['port']}/" \
            f"{' and '.join(missing)} not readable"
    if not item["counters"]:
        unknown[f"{key}.errors_over_count"] = f"{item['subject']}: no error counter readable " \
            f"(ports/{item['port']}/counters)"
    if not item["baseline"]:
        unknown[f"{key}.errors_grown_count"] = f"{history.note} within {window:g} s"


def link_flaps(facts: Mapping[str, Any], ports: Sequence[Mapping[str, Any]],
               variables: Mapping[str, Any], history: History,
               unknown: dict[str, str]) -> list[dict[str, Any]]:
    """Flaps within `link_flap_window_s` of each physical interface (carrier changes, two per
    down-and-up) and each InfiniBand port (`link_downed`, one per flap); IPoIB interfaces are
    left to their port. A counter that cannot be read makes `flaps` null with the reason in
    `unknown`; a readable one without an earlier reading in the window has no `baseline`."""
    window = float(variables.get("link_flap_window_s") or DEFAULT_FLAP_WINDOW_S)
    counted: list[tuple[str, str, Any, int | None]] = []
    for iface in physical_interfaces(facts):
        name, count = str(iface.get("name")), iface.get("carrier_changes")
        rose = increase_within(history.readings, history.now, window, "interfaces", name,
                               count if isinstance(count, int) else None)
        counted.append((name, "interface", count, None if rose is None else -(-rose // 2)))
    for port in ports:
        if port.get("infiniband") is True:
            count = (port.get("counters") or {}).get("link_downed")
            rose = increase_within(history.readings, history.now, window, "ports",
                                   str(port["subject"]), count, counter="link_downed")
            counted.append((str(port["subject"]), "ib_port", count, rose))
    out = []
    for i, (subject, kind, count, flaps) in enumerate(counted):
        readable = isinstance(count, int)
        if not readable:
            unknown[f"link_flaps.{i}.flaps"] = f"{subject}: " + (
                "the kernel does not report carrier_changes" if kind == "interface"
                else "no link_downed counter")
        out.append({"subject": subject, "kind": kind, "count": count if readable else None,
                    "flaps": flaps, "baseline": flaps is not None or not readable,
                    "window_s": window})
    return out


def physical_interfaces(facts: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Interfaces of a PCI device that are not IPoIB (not bonds, bridges, veths, tunnels)."""
    return [i for i in ((facts.get("nic") or {}).get("interfaces") or [])
            if isinstance(i, Mapping) and not i.get("virtual") and i.get("pci_address")
            and i.get("link_type") != "infiniband"]


def roce_ecn(facts: Mapping[str, Any], ports: Sequence[Mapping[str, Any]],
             unknown: dict[str, str]) -> list[dict[str, Any]]:
    """ECN of each netdev of an RDMA device with a RoCE (Ethernet link layer) port: on when
    some priority has both its reaction and notification point on (DCQCN needs both)."""
    roce = {p["device"] for p in ports if p.get("infiniband") is False}
    nic = facts.get("nic") or {}
    interfaces = {str(i.get("name")): i for i in nic.get("interfaces") or []
                  if isinstance(i, Mapping)}
    out: list[dict[str, Any]] = []
    for dev in ((facts.get("rdma") or {}).get("devices") or []):
        if dev.get("name") not in roce:
            continue
        for netdev in dev.get("netdevs") or []:
            ecn = (interfaces.get(netdev) or {}).get("ecn")
            rp = list((ecn or {}).get("rp_enabled") or [])
            np_ = list((ecn or {}).get("np_enabled") or [])
            enabled = None if not ecn or not ecn.get("priorities_read") else \
                any(p in np_ for p in rp)
            if enabled is None:
                unknown[f"roce_ecn.{len(out)}.ecn_enabled"] = _ecn_unknown(nic, netdev, ecn)
            out.append({"subject": f"{netdev} ({dev.get('name')})", "interface": netdev,
                        "device": dev.get("name"), "ecn_enabled": enabled,
                        "rp_enabled": ",".join(map(str, rp)) or "none",
                        "np_enabled": ",".join(map(str, np_)) or "none"})
    return out


def _ecn_unknown(nic: Mapping[str, Any], netdev: str, ecn: Mapping[str, Any] | None) -> str:
    if ecn:
        return f"{netdev}: no ecn/roce_rp|roce_np/enable/<prio> file readable"
    noted = (nic.get("unknown") or {}).get(f"interfaces.{netdev}.ecn")
    if noted:
        return f"{netdev}: {noted}"
    return f"{netdev}: not among the interfaces the nic collector read" if nic \
        else "the nic collector did not report"
