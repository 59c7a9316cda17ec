"""Linux CPU/node list strings ("0-3,8,10-11") to sorted ids and back.

`parse` raises ValueError on anything the kernel does not write ("-", "-5-3", "3-1", binary
bytes, ids beyond MAX_ID); collectors reading an optional file use `parse_or_none`, so one
corrupt file makes one fact unknown instead of failing the whole collector.
"""

from __future__ import annotations

from collections.abc import Iterable

# Linux's NR_CPUS is at most 8192 (x86 MAXSMP, include/linux/threads.h); ids past this bound
# are garbage, and a range up to them would allocate without limit.
MAX_ID = 1 << 16


def parse_or_none(text: str | None, *, mask: bool = False) -> list[int] | None:
    """`parse(text)` (`parse_mask` with mask=True), or None when the text is not one."""
    if text is None:
        return None
    try:
        return parse_mask(text) if mask else parse(text)
    except ValueError:
        return None


def parse(text: str | None) -> list[int]:
    """Parse a kernel list ("0-3,8"); "" gives []. Also takes the hex mask form ("ff,00000000")."""
    if text is None:
        return []
    text = text.replace("\x00", "").strip()  # some gathered trees keep the file's NUL padding
    if not text:
        return []
    if "-" not in text and all(c in "0123456789abcdefABCDEF," for c in text) and (
        "," in text and all(len(p) == 8 for p in text.split(","))
    ):
        return parse_mask(text)
    ids: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, _, hi = part.partition("-")
            hi, _, stride = hi.partition(":")
            first, last, step = _id(lo), _id(hi), _id(stride) if stride else 1
            if last < first or step < 1:
                raise ValueError(f"bad CPU range {part!r}")
            ids.update(range(first, last + 1, step))
        else:
            ids.add(_id(part))
    return sorted(ids)


def _id(text: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"not a CPU id: {text!r}")
    value = int(text)
    if value > MAX_ID:
        raise ValueError(f"CPU id {value} is beyond {MAX_ID}")
    return value


def parse_mask(text: str) -> list[int]:
    """Parse a sysfs hex CPU mask ("00000000,0000ffff")."""
    digits = text.replace(",", "").replace("\x00", "").strip() or "0"
    if len(digits) > MAX_ID // 4:
        raise ValueError("CPU mask longer than MAX_ID bits")
    value = int(digits, 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


def format(ids: Iterable[int]) -> str:  # the kernel's cpulist format
    """Sorted ids to the kernel's compact form: [0,1,2,3,8] -> "0-3,8"."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(set(ids)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)
