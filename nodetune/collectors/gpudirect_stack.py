"""The GPUDirect RDMA software stack: kernel DMA-BUF build options, rdma-core, NCCL.

What DMA-BUF registration of GPU memory with an RDMA NIC needs besides the driver (the
`nvidia_driver` collector) and the kernel release (`kernel`):

- `kernel_config`: the running kernel's build options from /boot/config-<release> (or
  /proc/config.gz): CONFIG_DMA_SHARED_BUFFER (the dma-buf framework, Linux 5.12+ lets RDMA
  import it: drivers/infiniband/core/umem_dmabuf.c) and CONFIG_DMABUF_MOVE_NOTIFY (reported
  only: NVIDIA's exporter pins its buffers, so move notification is not needed).
- `rdma_core`: the rdma-core release behind libibverbs. `ibv_reg_dmabuf_mr` arrived in rdma-core
  v34 (libibverbs/libibverbs.map.in, IBVERBS_1.12). The soname link libibverbs.so.1 points at
  libibverbs.so.1.<ABI minor>.<release>.0 (Documentation/versioning.md); MLNX_OFED and DOCA-OFED
  builds name the release `<OFED release>mlnx<upstream release>` ("2410mlnx54": DOCA-OFED
  24.10 on rdma-core 54).
- `nccl`: NCCL in the library directories (the soname link libnccl.so.2 -> libnccl.so.2.X.Y)
  and PyTorch's NCCL wheel (nvidia_nccl_cu*-X.Y.Z.dist-info in site-packages). NCCL usually
  lives inside the job's container image, so none found on the host is common: the fact is then
  unknown, not absent.

Only soname links are read in the library directories (one readlink each, never a listing of
thousands of libraries), so a snapshot keeps exactly them (nodetune.node.snapshot).

Only nodes with RDMA devices are read (GPUDirect RDMA needs one); elsewhere the collector
has no data.
"""

from __future__ import annotations

import posixpath
import re
import zlib
from dataclasses import field

from nodetune.collectors import Context, register
from nodetune.errors import NoData
from nodetune.facts.model import FactSet
from nodetune.facts.record import record
from nodetune.node.hostroot import HostRoot

IB_DIR = "/sys/class/infiniband"
CONFIG_OPTIONS = ("CONFIG_DMA_SHARED_BUFFER", "CONFIG_DMABUF_MOVE_NOTIFY")
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
            "/usr/local/lib", "/usr/local/cuda/lib64", "/usr/local/nccl/lib", "/opt/nccl/lib")
# Where pip puts PyTorch's nvidia-nccl-cu* wheel: system, /usr/local and conda interpreters.
PYTHON_DIRS = ("/usr/lib", "/usr/local/lib", "/opt/conda/lib")
SONAMES = ("libibverbs.so.1", "libnccl.so.2")

_LIBIBVERBS = re.compile(r"^libibverbs\.so\.1\.\d+\.(\d+(?:mlnx\d+)?)\.0$")
_LIBNCCL = re.compile(r"^libnccl\.so\.(2\.\d+\.\d+)$")
_NCCL_WHEEL = re.compile(r"^nvidia_nccl_cu\d+-(\d+\.\d+\.\d+)(?:\.\w+)?\.dist-info$")
_RELEASE = re.compile(r"^(\d+)(?:mlnx(\d+))?")


@record(frozen=True, kw_only=True)
class KernelConfig:
    file: str
    dma_shared_buffer: bool
    dmabuf_move_notify: bool


@record(frozen=True, kw_only=True)
class RdmaCore:
    release: str  # "50", "2410mlnx54"
    upstream: int | None  # the rdma-core release it is built on: 50, 54
    source: str  # the library file it was read from


@record(frozen=True, kw_only=True)
class NcclLibrary:
    version: str  # "2.21.5"
    path: str


@record(frozen=True, kw_only=True)
class GpuDirectStackFacts(FactSet):
    kernel_config: KernelConfig | None
    rdma_core: RdmaCore | None
    nccl: list[NcclLibrary] = field(default_factory=list)
    nccl_version: str | None = None  # the newest NCCL found


# -- pure parsing ----------------------------------------------------------------------------
def parse_kernel_config(text: str) -> dict[str, bool]:
    """`CONFIG_X=y|m` -> True for the options nodetune reads; absent or "is not set" -> False."""
    found = dict.fromkeys(CONFIG_OPTIONS, False)
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name in found:
            found[name] = value.strip() in ("y", "m")
    return found


def rdma_core_upstream(release: str) -> int | None:
    """The upstream rdma-core release of a library or package release: "50" -> 50,
    "2410mlnx54" -> 54, "58mlnx43" -> 43."""
    match = _RELEASE.match(release)
    if not match:
        return None
    return int(match.group(2) or match.group(1))


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


# -- reading -----------------------------------------------------------------------------------
def _kernel_config(root: HostRoot, unknown: dict[str, str]) -> KernelConfig | None:
    release = root.read_str("/proc/sys/kernel/osrelease", None)
    candidates = ([f"/boot/config-{release}"] if release else []) + ["/proc/config.gz"]
    for path in candidates:
        data = root.read_bytes(path, None)
        if data is None:
            continue
        if path.endswith(".gz"):
            import gzip  # deferred: only /proc/config.gz needs it, not every check's start

            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error):
                continue
        options = parse_kernel_config(data.decode("utf-8", "replace"))
        return KernelConfig(file=path, dma_shared_buffer=options["CONFIG_DMA_SHARED_BUFFER"],
                            dmabuf_move_notify=options["CONFIG_DMABUF_MOVE_NOTIFY"])
    unknown["kernel_config"] = (f"neither {' nor '.join(candidates)} is readable: the kernel's "
                                "DMA-BUF build options are unknown")
    return None


def soname_targets(root: HostRoot) -> dict[str, list[str]]:
    """{soname: the library files its links in LIB_DIRS point at ("dir/target")}."""
    found: dict[str, list[str]] = {name: [] for name in SONAMES}
    for directory in LIB_DIRS:
        for name in SONAMES:
            target = root.readlink(f"{directory}/{name}")
            if target:
                found[name].append(f"{directory}/{posixpath.basename(target)}")
    return found


def _rdma_core(libraries: list[str], unknown: dict[str, str]) -> RdmaCore | None:
    for path in libraries:
        match = _LIBIBVERBS.match(posixpath.basename(path))
        if match:
            release = match.group(1)
            return RdmaCore(release=release, upstream=rdma_core_upstream(release), source=path)
    unknown["rdma_core"] = ("no libibverbs.so.1 link to a libibverbs.so.1.*.*.0 in "
                            + ", ".join(LIB_DIRS))
    return None


def _nccl_wheels(root: HostRoot) -> list[NcclLibrary]:
    found = []
    for base in PYTHON_DIRS:
        for python in (n for n in root.listdir(base) if n.startswith("python3")):
            for packages in ("site-packages", "dist-packages"):
                directory = f"{base}/{python}/{packages}"
                for name in root.listdir(directory):
                    match = _NCCL_WHEEL.match(name)
                    if match:
                        found.append(NcclLibrary(version=match.group(1),
                                                 path=f"{directory}/{name}"))
    return found


def collect_stack(root: HostRoot) -> GpuDirectStackFacts:
    if not root.listdir(IB_DIR):
        raise NoData(f"no RDMA devices under {IB_DIR}: GPUDirect RDMA is not used here")
    unknown: dict[str, str] = {}
    libraries = soname_targets(root)
    nccl = [NcclLibrary(version=m.group(1), path=path) for path in libraries["libnccl.so.2"]
            if (m := _LIBNCCL.match(posixpath.basename(path)))] + _nccl_wheels(root)
    if not nccl:
        unknown["nccl_version"] = ("no libnccl.so.2 link to a libnccl.so.2.X.Y in the library "
                                   "directories and no nvidia-nccl wheel in site-packages "
                                   "(NCCL may live in the job's container image)")
    newest = max((lib.version for lib in nccl), key=version_key, default=None)
    return GpuDirectStackFacts(
        kernel_config=_kernel_config(root, unknown),
        rdma_core=_rdma_core(libraries["libibverbs.so.1"], unknown),
        nccl=nccl, nccl_version=newest,
        sources={"kernel_config": "/boot/config-<release>, /proc/config.gz",
                 "rdma_core": f"libibverbs.so.1 in {', '.join(LIB_DIRS)}",
                 "nccl": "libnccl.so.2 in the library directories; nvidia_nccl_cu*.dist-info"},
        unknown=unknown)


@register("gpudirect_stack")
class GpuDirectStackCollector:
    """GPUDirect RDMA software stack: kernel DMA-BUF options, rdma-core release, NCCL versions."""

    requires = (IB_DIR,)

    def collect(self, ctx: Context) -> GpuDirectStackFacts:
        return collect_stack(ctx.root)
