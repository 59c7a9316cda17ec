"""Findings as a JUnit XML report, the format CI systems (Jenkins, GitLab, GitHub) display.

One <testcase> per finding: a failed setting is a <failure> whose type is its severity; an
unknown or skipped one is <skipped> with the reason; a passing one is empty.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from nodetune.errors import NodetuneError
from nodetune.facts.model import Finding, Status


def to_xml(suite: str, findings: Sequence[Finding], seconds: float = 0.0) -> ET.ElementTree:
    failures = sum(1 for f in findings if f.status is Status.FAIL)
    skipped = sum(1 for f in findings if f.status in (Status.SKIPPED, Status.UNKNOWN))
    suites = ET.Element("testsuites", name="nodetune", tests=str(len(findings)),
                        failures=str(failures), errors="0", skipped=str(skipped),
                        time=f"{seconds:.3f}")
    root = ET.SubElement(suites, "testsuite", name=suite, tests=str(len(findings)),
                         failures=str(failures), errors="0", skipped=str(skipped),
                         time=f"{seconds:.3f}")
    for f in findings:
        name = f"{f.id}[{f.subject}]" if f.subject else f.id
        case = ET.SubElement(root, "testcase", classname=f"{suite}.{f.area}", name=name,
                             time="0")
        if f.status is Status.FAIL:
            failure = ET.SubElement(case, "failure", message=f.message, type=f.severity.value)
            failure.text = "\n".join(line for line in (
                f"expected: {f.expected}", f"actual: {f.actual}",
                f"persisted: {f.persisted}" if f.persisted is not None else "",
                "needs reboot" if f.needs_reboot else "",
                f"why: {f.why}" if f.why else "", f"fix: {f.fix}" if f.fix else "") if line)
        elif f.status in (Status.SKIPPED, Status.UNKNOWN):
            ET.SubElement(case, "skipped", message=f"{f.status.value}: {f.message}")
    ET.indent(suites)
    return ET.ElementTree(suites)


def write(path: str | Path, suite: str, findings: Sequence[Finding], seconds: float = 0.0) -> None:
    try:
        to_xml(suite, findings, seconds).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise NodetuneError(f"cannot write JUnit report {path}: {exc.strerror or exc}",
                            fix="give --junit a writable file path") from exc
