"""Show what `nodetune apply --as tuned DIR` wrote: a JSON document (nodetune.tuned-profile/1)
or lines naming each TuneD option, what could not be expressed, and how to activate it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nodetune.schemas import TUNED_PROFILE_SCHEMA
from nodetune.views.output import console, emit_json

if TYPE_CHECKING:
    from nodetune.apply.tuned_profile import TunedProfile


def to_json(result: TunedProfile) -> dict[str, Any]:
    return {
        "name": result.name, "directory": str(result.directory), "file": str(result.file),
        "profile": result.profile, "include": result.include or None,
        "include_reason": result.include_reason,
        "settings": [{"section": e.option.plugin, "option": e.option.option,
                      "value": e.option.value, "setting": e.setting, "current": e.current,
                      "wanted": e.wanted, "disruption": e.disruption, "origin": e.origin}
                     for e in result.entries],
        "not_expressible": [{"setting": n.setting, "current": n.current, "wanted": n.wanted,
                             "reason": n.reason} for n in result.left_out],
        "manual": [{"id": f.id, "subject": f.subject, "current": f.actual,
                    "wanted": f.expected, "fix": f.fix} for f in result.manual],
        "tuned_overrides": [{"setting": f.subject, "status": f.status.value, "tuned": f.actual,
                             "nodetune": f.expected or None, "message": f.message}
                            for f in result.warnings],
        "host_changed": False,
        "activate": result.activate,
    }


def show(result: TunedProfile, *, as_json: bool) -> None:
    if as_json:
        emit_json(to_json(result), TUNED_PROFILE_SCHEMA)
        return
    out = console()

    def line(text: str) -> None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)

    include = f"include={result.include} ({result.include_reason})" if result.include \
        else f"nothing included ({result.include_reason})"
    line(f"wrote {result.file}: TuneD profile {result.name}, {include}, "
         f"{len(result.entries)} option(s) from nodetune profile {result.profile}")
    width = max((len(e.option.text) for e in result.entries), default=0)
    for e in result.entries:
        line(f"  {e.option.text:<{width}}  {result.describe(e)}")
    if result.left_out:
        line("not expressible in TuneD (nodetune apply --only ID makes them through Ansible):")
        for n in result.left_out:
            line(f"  {n.setting}: {n.current} -> {n.wanted}: {n.reason}")
    for finding in result.manual:
        subject = f" [{finding.subject}]" if finding.subject else ""
        line(f"manual fix {finding.id}{subject}: {finding.fix}")
    if any(e.disruption == "reboot" for e in result.entries):
        line("kernel arguments ([bootloader]) take effect at the next boot after activation")
    line(f"nothing on this host was changed. To activate: {result.activate}")
