"""All-reduce bus bandwidth with torch.distributed (NCCL backend), printed as an nccl-tests table.

    python -m nodetune.bench.torchdist [--sizes 1M,1G] [--iters 20] [--warmup 5] [--repeat 1]

Alone it spawns one process per visible GPU. Under a launcher that sets RANK/WORLD_SIZE/
LOCAL_RANK (torchrun, or srun/mpirun with those exported) every process is one rank, across
nodes too:

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m nodetune.bench.torchdist > allreduce.txt
    nodetune bench import allreduce.txt

Rank 0 prints the table (`nodetune bench import` reads it like nccl-tests' output). Times come
from CUDA events around `iters` back-to-back all-reduces, the slowest rank's time counting;
busbw = algbw x 2(n-1)/n as in nccl-tests. torch's all_reduce works in place, so the table has
only the out-of-place columns. Result check: one all-reduce of rank-dependent values, compared
elementwise with their exact sum.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

DEFAULT_SIZES = "1M,2M,4M,8M,16M,32M,64M,128M,256M,512M,1G"


def parse_sizes(text: str) -> list[int]:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    out = []
    for part in text.split(","):
        part = part.strip().upper().removesuffix("IB").removesuffix("B")
        unit = part[-1] if part and part[-1] in units else ""
        out.append(int(float(part[: len(part) - len(unit)]) * units[unit]))
    return out


def _bench(rank: int, world: int, local_rank: int, args: argparse.Namespace) -> None:
    # deferred: optional: PyTorch where the node has it
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    try:
        dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
    except TypeError:  # torch < 2.3 has no device_id
        dist.init_process_group("nccl", rank=rank, world_size=world)
    info = (socket.gethostname(), os.getpid(), local_rank,
            torch.cuda.get_device_properties(local_rank).name, _bus_id(torch, local_rank))
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, info)
    sizes = parse_sizes(args.sizes)
    header = {"min": min(sizes), "max": max(sizes), "warmup": args.warmup, "iters": args.iters,
              "versions": f"torch {torch.__version__} NCCL version {_nccl_version(torch)}"}
    for _ in range(args.repeat):
        rows = []
        for size in sizes:
            count = size // 4
            wrong = _check(torch, dist, count, rank, world, device)
            data = torch.zeros(count, dtype=torch.float32, device=device)
            for _ in range(args.warmup):
                dist.all_reduce(data)
            torch.cuda.synchronize()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            dist.barrier()
            start.record()
            for _ in range(args.iters):
                dist.all_reduce(data)
            stop.record()
            stop.synchronize()
            elapsed = torch.tensor([start.elapsed_time(stop)], device=device)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            rows.append((count * 4, elapsed.item() * 1000 / args.iters, wrong))
            del data
        if rank == 0:
            print(format_table(header, everyone, rows), flush=True)
    dist.destroy_process_group()


def format_table(header: dict[str, Any], ranks: list[Any],
                 rows: list[tuple[int, float, int]]) -> str:
    """An nccl-tests all_reduce_perf table: rows are (bytes, time in us, wrong elements)."""
    world = len(ranks)
    lines = ["# Collective test starting: all_reduce_perf",
             f"# nThread 1 nGpus 1 minBytes {header['min']} maxBytes {header['max']} step: "
             f"2(factor) warmup iters: {header['warmup']} iters: {header['iters']} agg iters: 1 "
             "validation: 1", f"# {header['versions']}", "#", "# Using devices"]
    for r, (host, pid, dev, name, bus) in enumerate(ranks):
        lines.append(f"#  Rank {r:2d} Group  0 Pid {pid:6d} on {host:>10} device {dev:2d} "
                     f"[{bus}] {name}")
    lines += ["#", "#       size         count      type   redop    root     time   algbw"
              "   busbw #wrong", "#        (B)    (elements)                               "
              "(us)  (GB/s)  (GB/s)"]
    busbws, wrong_total = [], 0
    for size, time_us, wrong in rows:
        algbw = size / time_us / 1e3
        busbw = algbw * 2 * (world - 1) / world
        busbws.append(busbw)
        wrong_total += wrong
        lines.append(f"{size:12d}  {size // 4:12d}     float     sum      -1  "
                     f"{time_us:7.1f}  {algbw:6.2f}  {busbw:6.2f}  {wrong:5d}")
    verdict = "OK" if wrong_total == 0 else "FAILED"
    lines += [f"# Out of bounds values : {wrong_total} {verdict}",
              f"# Avg bus bandwidth    : {sum(busbws) / len(busbws):.4f}", "#"]
    return "\n".join(lines)


def _nccl_version(torch: Any) -> str:
    version = torch.cuda.nccl.version()
    return ".".join(str(v) for v in version) if isinstance(version, tuple) else str(version)


def _bus_id(torch: Any, dev: int) -> str:
    props = torch.cuda.get_device_properties(dev)
    bus = getattr(props, "pci_bus_id", None)
    domain = getattr(props, "pci_domain_id", 0)
    device = getattr(props, "pci_device_id", 0)
    return f"{domain:04x}:{bus:02x}:{device:02x}" if bus is not None else "0x00"


def _check(torch: Any, dist: Any, count: int, rank: int, world: int, device: Any) -> int:
    """Elements that differ from the exact sum after one all-reduce of (k % 64) + rank + 1."""
    pattern = torch.arange(count, device=device, dtype=torch.int64).remainder_(64)
    data = (pattern + rank + 1).to(torch.float32)
    dist.all_reduce(data)
    expected = (pattern * world + world * (world + 1) // 2).to(torch.float32)
    wrong = torch.tensor([int((data != expected).sum().item())], device=device)
    dist.all_reduce(wrong)
    return int(wrong.item())


def _spawned(local_rank: int, world: int, args: argparse.Namespace) -> None:
    _bench(local_rank, world, local_rank, args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodetune.bench.torchdist")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="message sizes, e.g. 1M,64M,1G")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="tables to print")
    parser.add_argument("--nprocs", type=int, default=0, help="processes (default: every GPU)")
    args = parser.parse_args(argv)
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    ranks = launcher_ranks(os.environ)
    if ranks is not None:
        rank, world, local_rank = ranks
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        _bench(rank, world, local_rank, args)
        return 0
    # deferred: optional: PyTorch where the node has it
    import torch
    import torch.multiprocessing as mp

    world = args.nprocs or torch.cuda.device_count()
    if world < 1:
        print("torchdist: no CUDA device visible", file=sys.stderr)
        return 3
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    mp.spawn(_spawned, args=(world, args), nprocs=world, join=True)
    return 0


# (rank, world size, local rank) variables of each launcher, in the order they are tried
LAUNCHER_VARS = (("RANK", "WORLD_SIZE", "LOCAL_RANK"),
                 ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
                 ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
                 ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"))


def launcher_ranks(env: Any) -> tuple[int, int, int] | None:
    """This process's (rank, world size, local rank) from torchrun, Open MPI, Slurm or MPICH;
    None when no launcher started several ranks (a single-task Slurm job, say: then one
    process per GPU is spawned here)."""
    for rank, world, local in LAUNCHER_VARS:
        if rank in env and world in env and (world == "WORLD_SIZE" or int(env[world]) > 1):
            return int(env[rank]), int(env[world]), int(env.get(local, "0"))
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
