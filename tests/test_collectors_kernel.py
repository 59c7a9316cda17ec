"""kernel collector: command line, modules, sysctls in effect and persisted, cgroup, IOMMU."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from nodetune.collectors import Context
from nodetune.collectors.kernel import (
    KernelCollector,
    cgroup_version_from_mounts,
    iommu_mode_from_cmdline,
    parse_cmdline,
    parse_mounts,
    parse_version,
)
from nodetune.collectors.persisted import (
    normalize_sysctl_key,
    parse_modprobe_conf,
    parse_shell_assignments,
    parse_sysctl_conf,
)
from nodetune.node.hostroot import HostRoot
from tests.host_trees import write_tree


def _write(root: Path, files: dict[str, str]) -> Path:
    return write_tree(root, files, dedent=True)


def _kernel(root: Path):
    return KernelCollector().collect(Context(root=HostRoot(str(root))))


def test_parse_cmdline_quotes_flags_and_init_args() -> None:
    args = parse_cmdline('BOOT_IMAGE=/vmlinuz ro quiet dyndbg="file x.c +p" console=tty0 '
                         'console=ttyS0 iommu=pt -- --init-flag x=1')
    assert args == {"BOOT_IMAGE": "/vmlinuz", "ro": True, "quiet": True,
                    "dyndbg": "file x.c +p", "console": "ttyS0", "iommu": "pt"}


def test_parse_version_and_mounts() -> None:
    text = ("Linux version 6.17.0-1014-nvidia (buildd@bos03) (gcc 13.3.0) "
            "#14-Ubuntu SMP PREEMPT_DYNAMIC Tue Mar 17 19:01:40 UTC 2026")
    assert parse_version(text) == ("6.17.0-1014-nvidia",
                                   "#14-Ubuntu SMP PREEMPT_DYNAMIC Tue Mar 17 19:01:40 UTC 2026")
    mounts = parse_mounts("/dev/sda1 /mnt/my\\040disk ext4 rw,relatime 0 0\n"
                          "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    assert mounts[0] == ("/dev/sda1", "/mnt/my disk", "ext4", "rw,relatime")
    assert cgroup_version_from_mounts(mounts) == 2
    assert cgroup_version_from_mounts([("cgroup", "/sys/fs/cgroup/cpu", "cgroup", "rw"),
                                       ("cgroup2", "/sys/fs/cgroup/unified", "cgroup2", "rw")]) == 1
    assert cgroup_version_from_mounts([("tmpfs", "/tmp", "tmpfs", "rw")]) is None


def test_iommu_mode_from_cmdline() -> None:
    assert iommu_mode_from_cmdline(parse_cmdline("intel_iommu=on iommu=pt")) == "passthrough"
    assert iommu_mode_from_cmdline(parse_cmdline("intel_iommu=on")) == "translated"
    assert iommu_mode_from_cmdline(parse_cmdline("amd_iommu=off")) == "off"
    assert iommu_mode_from_cmdline(parse_cmdline("iommu.passthrough=1")) == "passthrough"
    assert iommu_mode_from_cmdline(parse_cmdline("iommu.passthrough=0")) == "translated"
    assert iommu_mode_from_cmdline(parse_cmdline("quiet splash")) is None


def test_persisted_file_parsers() -> None:
    assert normalize_sysctl_key("kernel/numa_balancing") == "kernel.numa_balancing"
    assert normalize_sysctl_key("net/ipv4/conf/eth0.100/rp_filter") == \
        "net.ipv4.conf.eth0/100.rp_filter"
    text = "# c\n; c\n-vm.swappiness = 10\nnet.ipv4.tcp_rmem = 4096  87380 16777216\n"
    assert parse_sysctl_conf(text) == [("vm.swappiness", "10"),
                                       ("net.ipv4.tcp_rmem", "4096 87380 16777216")]
    modprobe = ("options nvidia NVreg_EnableGpuFirmware=0 \\\n  NVreg_X=1\n"
                "blacklist nouveau\n# options x y\ninstall ib-ipoib /bin/false\n")
    assert parse_modprobe_conf(modprobe) == [
        ("options", "nvidia", "NVreg_EnableGpuFirmware=0 NVreg_X=1"),
        ("blacklist", "nouveau", ""), ("install", "ib_ipoib", "/bin/false")]
    values = parse_shell_assignments(textwrap.dedent('''\
        GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"
        GRUB_CMDLINE_LINUX='iommu=pt'   # set by ops
        GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT numa_balancing=disable"
        export GRUB_TIMEOUT=5
        '''))
    assert values["GRUB_CMDLINE_LINUX_DEFAULT"] == "quiet splash numa_balancing=disable"
    assert values["GRUB_CMDLINE_LINUX"] == "iommu=pt"
    assert values["GRUB_TIMEOUT"] == "5"


def test_persisted_sysctl_precedence(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "/proc/sys/vm/swappiness": "60\n",
        "/proc/sys/net/ipv4/tcp_rmem": "4096\t131072\t6291456\n",
        "/usr/lib/sysctl.d/10-vendor.conf": "vm.swappiness = 30\nkernel.pid_max = 4194304\n",
        "/etc/sysctl.d/10-vendor.conf": "vm.swappiness = 20\n",  # hides the /usr/lib file
        "/usr/lib/sysctl.d/50-tune.conf": "vm.swappiness = 10\nnet/ipv4/tcp_rmem = 4096 1 2\n",
        "/etc/sysctl.conf": "vm.dirty_ratio = 10\n",
    })
    kernel = _kernel(root)
    sysctl = kernel.persisted["sysctl"]
    assert sysctl["vm.swappiness"] == {"value": "10", "file": "/usr/lib/sysctl.d/50-tune.conf"}
    assert "kernel.pid_max" not in sysctl  # its file is hidden by the same-named /etc file
    assert sysctl["net.ipv4.tcp_rmem"]["value"] == "4096 1 2"
    assert sysctl["vm.dirty_ratio"] == {"value": "10", "file": "/etc/sysctl.conf"}
    assert kernel.sysctl["vm.swappiness"] == "60"
    assert kernel.sysctl["net.ipv4.tcp_rmem"] == "4096 131072 6291456"


def test_sysctl_conf_linked_into_sysctl_d_is_read_once_in_order(tmp_path: Path) -> None:
    root = _write(tmp_path, {"/etc/sysctl.conf": "vm.swappiness = 1\n",
                             "/etc/sysctl.d/99-zz.conf": "vm.swappiness = 5\n"})
    os.symlink("../sysctl.conf", root / "etc/sysctl.d/99-sysctl.conf")
    assert _kernel(root).persisted["sysctl"]["vm.swappiness"]["value"] == "5"


def test_persisted_modules_and_boot_cmdline(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "/proc/modules": "nvidia_uvm 1830912 0 - Live 0x0 (O)\nnvidia 14299136 1 nvidia_uvm, "
                         "Live 0x0 (O)\n",
        "/etc/modprobe.d/nvidia.conf": "options nvidia NVreg_RestrictProfilingToAdminUsers=0\n",
        "/etc/modprobe.d/blacklist-nouveau.conf": "blacklist nouveau\n",
        "/usr/lib/modprobe.d/nvidia.conf": "options nvidia NVreg_Hidden=1\n",
        "/etc/modules-load.d/peermem.conf": "# GPUDirect RDMA\nnvidia-peermem\n",
        "/etc/default/grub": 'GRUB_CMDLINE_LINUX=""\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
        "/etc/default/grub.d/50-tune.cfg":
            'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT iommu=pt"\n',
        "/etc/kernel/cmdline": "root=/dev/sda1 ignored=because-grub-wins\n",
    })
    kernel = _kernel(root)
    assert kernel.modules == ["nvidia", "nvidia_uvm"]
    mods = kernel.persisted["modprobe"]
    assert mods["nvidia"]["options"] == "NVreg_RestrictProfilingToAdminUsers=0"
    assert mods["nouveau"]["blacklisted"] is True
    assert mods["nvidia_peermem"] == {"options": "", "blacklisted": False, "load_at_boot": True,
                                      "file": "/etc/modules-load.d/peermem.conf"}
    assert kernel.persisted["cmdline"] == "quiet iommu=pt"
    assert kernel.persisted["cmdline_file"].startswith("/etc/default/grub")
    (root / "etc/default/grub").unlink()
    assert _kernel(root).persisted["cmdline"] == "root=/dev/sda1 ignored=because-grub-wins"


def test_iommu_from_group_types(tmp_path: Path) -> None:
    files = {f"/sys/kernel/iommu_groups/{g}/type": "identity\n" for g in range(3)}
    assert _kernel(_write(tmp_path / "pt", files)).iommu.mode == "passthrough"
    files["/sys/kernel/iommu_groups/1/type"] = "DMA-FQ\n"
    iommu = _kernel(_write(tmp_path / "dma", files)).iommu
    assert (iommu.mode, iommu.groups) == ("translated", 3)
    off = tmp_path / "off"
    (off / "sys/kernel/iommu_groups").mkdir(parents=True)
    (off / "sys/class/iommu").mkdir(parents=True)
    assert _kernel(off).iommu.mode == "off"


def test_h200_vm_kernel(host_tree) -> None:
    tree = host_tree("h200x2-vm-gather")
    kernel = _kernel(tree)
    uname = (tree / "cmd/uname.txt").read_text()
    assert kernel.release == "6.18.44-fc-v657-gpu" and kernel.release in uname
    assert kernel.version == "#1 SMP PREEMPT_DYNAMIC @0"
    modules = sorted(line.split()[0] for line in (tree / "proc/modules").read_text().splitlines())
    assert kernel.modules == modules == ["nvidia", "nvidia_uvm"]
    assert kernel.cmdline_args["driver_async_probe"] == "mlx5_core"
    assert kernel.cmdline_args["quiet"] is True
    assert kernel.cgroup_version == 2  # sys/fs/cgroup/cgroup.controllers; no readable mounts
    assert kernel.sysctl["vm.max_map_count"] == "8250340"
    assert kernel.sysctl["net.ipv4.tcp_rmem"] == "4096 131072 33554432"
    assert kernel.sysctl["kernel.numa_balancing"] == "0"
    assert kernel.virtualization == "vm"  # cpuinfo hypervisor flag, no DMI in the tree
    assert kernel.iommu.mode == "unknown" and "iommu.mode" in kernel.unknown
    assert "persisted.sysctl" in kernel.unknown  # no /etc in the gather


def test_real_trees_kernel(host_tree) -> None:
    gb10 = _kernel(host_tree("nvidia-dgx-gb10"))
    assert gb10.release == "6.17.0-1014-nvidia"
    assert gb10.cmdline_args["init_on_alloc"] == "0"
    assert gb10.iommu.mode == "translated"  # iommu.passthrough=0
    assert gb10.cgroup_version == 2
    arm = _kernel(host_tree("128arm-2pa2n8cluster4co"))
    assert arm.iommu.mode == "passthrough"  # iommu.passthrough=1
    assert arm.cgroup_version == 1  # hybrid: v1 controllers plus cgroup2 at .../unified
    h100 = _kernel(host_tree("h100x2-fc-vm-gather"))
    assert h100.iommu == type(h100.iommu)(mode="off", groups=0)  # empty iommu_groups
    assert h100.modules == ["nvidia", "nvidia_uvm"]


def test_hostname_from_the_kernel(tmp_path: Path, host_tree) -> None:
    named = _write(tmp_path / "named", {"proc/sys/kernel/hostname": "gpu-node-07.cluster\n"})
    kernel = _kernel(named)
    assert kernel.hostname == "gpu-node-07.cluster"
    assert kernel.sources["hostname"] == "/proc/sys/kernel/hostname"
    unset = _kernel(_write(tmp_path / "unset", {"proc/sys/kernel/hostname": "(none)\n"}))
    assert unset.hostname is None and "not set" in unset.unknown["hostname"]
    absent = _kernel(_write(tmp_path / "absent", {"proc/cmdline": "quiet\n"}))
    assert absent.hostname is None and "is not present" in absent.unknown["hostname"]
    assert _kernel(host_tree("h100x2-fc-vm-gather")).hostname == "vm"  # the gathered VM
