"""Linux CPU/node list strings ("0-3,8,10-11") to sorted ids and back."""

from __future__ import annotations

from collections.abc import Iterable


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
            ids.update(range(int(lo), int(hi) + 1, int(stride) if stride else 1))
        else:
            ids.add(int(part))
    return sorted(ids)


def parse_mask(text: str) -> list[int]:
    """Parse a sysfs hex CPU mask ("00000000,0000ffff")."""
    value = int(text.replace(",", "").replace("\x00", "").strip() or "0", 16)
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
