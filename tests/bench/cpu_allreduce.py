#!/usr/bin/env python3
"""A CPU stand-in for nccl-tests' all_reduce_perf, for tests of the multi-node launch: each rank
(SLURM_PROCID / OMPI_COMM_WORLD_RANK) meets rank 0 at MASTER_ADDR:MASTER_PORT over TCP, the
ranks sum a float32 array of each size (rank 0 gathers, adds, sends the sum back), check it,
and rank 0 prints an nccl-tests table with busbw = algbw x 2(n-1)/n.

    cpu_allreduce.py -b MIN -e MAX -f 2 -g 1 -n ITERS -w WARMUP -c 1
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
from nodetune.bench.torchdist import launcher_ranks


def _recv(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def main() -> int:
    p = argparse.ArgumentParser()
    for flag in ("-b", "-e", "-f", "-g", "-n", "-w", "-c"):
        p.add_argument(flag, type=int, default=1)
    a = p.parse_args()
    ranks = launcher_ranks(os.environ)
    assert ranks is not None, "no launcher rank variables"
    rank, world, _ = ranks
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if rank == 0:
        server = socket.create_server(("0.0.0.0", port), reuse_port=False)
        peers = []
        for _ in range(world - 1):
            conn, _ = server.accept()
            peers.append(conn)
    else:
        for _ in range(100):
            try:
                peer = socket.create_connection((addr, port))
                break
            except OSError:
                time.sleep(0.1)
    rows = []
    size = a.b
    while size <= a.e:
        n = size // 4
        data = np.full(n, rank + 1, dtype=np.float32)
        start = time.perf_counter()
        for _ in range(a.n):
            if rank == 0:
                total = data.copy()
                for conn in peers:
                    total += np.frombuffer(_recv(conn, size), dtype=np.float32)
                for conn in peers:
                    conn.sendall(total.tobytes())
            else:
                peer.sendall(data.tobytes())
                total = np.frombuffer(_recv(peer, size), dtype=np.float32)
        took_us = (time.perf_counter() - start) / a.n * 1e6
        wrong = int((total != world * (world + 1) / 2).sum())
        algbw = size / took_us / 1e3
        rows.append((size, n, took_us, algbw, algbw * 2 * (world - 1) / world, wrong))
        size *= a.f
    if rank == 0:
        print(f"# nThread 1 nGpus 1 minBytes {a.b} maxBytes {a.e} step: {a.f}(factor) "
              f"warmup iters: {a.w} iters: {a.n} validation: {a.c}")
        print("#       size         count      type   redop    root     time   algbw   busbw "
              "#wrong     time   algbw   busbw #wrong")
        for size, n, us, alg, bus, wrong in rows:
            print(f"{size:12d} {n:12d}     float     sum      -1 {us:8.1f} {alg:7.2f} {bus:7.2f}"
                  f" {wrong:6d} {us:8.1f} {alg:7.2f} {bus:7.2f} {wrong:6d}")
        print(f"# Avg bus bandwidth    : {sum(r[4] for r in rows) / len(rows):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
