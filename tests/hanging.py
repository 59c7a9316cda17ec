"""nodetune with reads that block like a hung filesystem or driver, for the time-limit tests.

    subprocess.run([sys.executable, "-c", HANGING, "facts", "--root", DIR, ...])

/proc/meminfo reads (through HostRoot's real reader) sleep for an hour; with `--hang-nvml`
among the arguments the NVML recording's `dump` (the first NVML call) and `close` (as
nvmlShutdown would wait for a call in flight) do too.
"""

from __future__ import annotations

HANGING = """
import sys, time
from nodetune.node import hostroot, nvml
read = hostroot._read_fd
def hang(fd, hostpath, *args):
    if hostpath == "/proc/meminfo":
        time.sleep(3600)
    return read(fd, hostpath, *args)
hostroot._read_fd = hang
if "--hang-nvml" in sys.argv:
    sys.argv.remove("--hang-nvml")
    nvml.RecordedNvml.dump = lambda self: time.sleep(3600)
    nvml.RecordedNvml.close = lambda self: time.sleep(3600)
from nodetune.cli import main
main(sys.argv[1:])
"""
