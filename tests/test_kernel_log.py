"""Xid/SXid events from the kernel log: /dev/kmsg records and syslog files of the current boot."""
# ruff: noqa: E501  (kernel log lines are quoted whole, as the driver prints them)

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from nodetune.collectors import Context
from nodetune.collectors.kernel_log import (
    SYSLOG_FILES,
    KernelLogCollector,
    normalize_pci,
    parse_events,
    parse_kmsg_record,
    parse_syslog,
)
from nodetune.errors import NoData
from nodetune.node.hostroot import HostRoot

# Two boots in one Debian kern.log: the Xid 79 of the first boot no longer counts.
KERN_LOG = textwrap.dedent("""\
    Nov 22 18:00:01 gpu07 kernel: [    0.000000] Linux version 6.8.0-45-generic (buildd@lcy02) #45
    Nov 22 18:29:55 gpu07 kernel: [  966.503025] NVRM: Xid (PCI:0000:2b:00): 79, pid=1101, name=python, GPU has fallen off the bus.
    Nov 22 19:00:00 gpu07 kernel: [ 2771.000000] reboot: Restarting system
    Nov 22 19:01:10 gpu07 kernel: [    0.000000] Linux version 6.8.0-45-generic (buildd@lcy02) #45
    Nov 22 19:05:00 gpu07 kernel: [  230.250000] NVRM: Xid (0000:01:00): 31, Ch 0000000b, engmask 00000120, intr 10000000
    Nov 22 19:06:00 gpu07 kernel: [  290.000000] NVRM: Xid (PCI:0000:1b:00): 48, pid=2201, name=train, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at 0x0.
    Nov 22 19:07:00 gpu07 kernel: [  350.000000] nvidia-nvswitch3: SXid (PCI:0000:c8:00.0): 20034, Fatal, Link 18 LTSSM Fault Up
    Nov 22 19:07:01 gpu07 kernel: [  351.000000] nvidia-nvswitch3: SXid (PCI:0000:c8:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)
    """)

# journald-forwarded rsyslog lines carry no kernel timestamp and no boot banner.
MESSAGES = "2026-11-20T10:00:00.000000+00:00 gpu07 kernel: NVRM: Xid (PCI:00000000:3b:00): 94, pid=7, " \
           "name=x, Contained: SM (0x1). RST: No, D-RST: No\n"

KMSG = textwrap.dedent("""\
    5,0,0,-;Linux version 6.18.44 (builder@host) #1 SMP
    4,812,966503025,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1101, name=python, GPU has fallen off the bus.
    6,813,966503100,-;nvidia 0000:3b:00.0: some other line
    """)


def _tree(tmp_path: Path, files: dict[str, str]) -> HostRoot:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return HostRoot(str(tmp_path))


def test_normalize_pci_adds_function_and_trims_domain() -> None:
    assert normalize_pci("0000:2B:00") == "0000:2b:00.0"
    assert normalize_pci("00000000:3b:00") == "0000:3b:00.0"
    assert normalize_pci("0000:c8:00.1") == "0000:c8:00.1"


def test_kmsg_record_gives_seconds_since_boot() -> None:
    when, text = parse_kmsg_record("4,812,966503025,-;NVRM: Xid (PCI:0000:3b:00): 79, x\n SUBSYSTEM=pci\n")
    assert when == pytest.approx(966.503025)
    assert text == "NVRM: Xid (PCI:0000:3b:00): 79, x"


def test_syslog_keeps_only_the_current_boot() -> None:
    xids, sxids = parse_events(parse_syslog(KERN_LOG), uptime_s=400.0)
    assert [(x.code, x.pci_address) for x in xids] == [(31, "0000:01:00.0"), (48, "0000:1b:00.0")]
    assert xids[1].age_s == pytest.approx(110.0)
    assert xids[1].message.startswith("pid=2201, name=train, An uncorrectable double bit error")
    assert [(s.code, s.fatal) for s in sxids] == [(20034, True), (12028, False)]


def test_collector_reads_kern_log_in_a_root_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"var/log/kern.log": KERN_LOG, "proc/uptime": "400.00 700.00\n"})
    facts = KernelLogCollector().collect(Context(root=root))
    assert facts.source == "/var/log/kern.log"
    assert [x.code for x in facts.xids] == [31, 48]
    assert facts.uptime_s == 400.0


def test_collector_falls_back_to_messages_without_timestamps(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"var/log/messages": MESSAGES})
    facts = KernelLogCollector().collect(Context(root=root))
    assert facts.source == "/var/log/messages"
    assert [(x.code, x.pci_address, x.age_s) for x in facts.xids] == [(94, "0000:3b:00.0", None)]


def test_saved_kmsg_file_wins_over_syslog(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"dev/kmsg": KMSG, "var/log/kern.log": KERN_LOG,
                            "proc/uptime": "1000.5 1.0\n"})
    facts = KernelLogCollector().collect(Context(root=root))
    assert facts.source == "/dev/kmsg"
    assert [(x.code, x.age_s) for x in facts.xids] == [(79, pytest.approx(33.996975))]


def test_no_log_at_all_is_no_data(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"proc/uptime": "1.0 1.0\n"})
    with pytest.raises(NoData, match="no kernel log"):
        KernelLogCollector().collect(Context(root=root))


def test_live_ring_buffer_reads_without_blocking() -> None:
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("/dev/kmsg is not readable by this user")
    try:
        facts = KernelLogCollector().collect(Context(root=HostRoot("/")))
    except NoData as exc:  # a container without CAP_SYSLOG and no syslog files
        assert "/dev/kmsg" in exc.message
        return
    assert facts.source in ("/dev/kmsg", *SYSLOG_FILES)
    assert facts.uptime_s is not None and facts.uptime_s > 0
