"""JUnit XML: one testsuite a run (analyze) or a gate; one testcase an incident (its headline finding, the others
named in it) or a check."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from lrdiag.render.view import inert_doc, suites

# XML 1.0 cannot hold these even escaped; a log name may contain them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text) -> str:
    return _NOT_XML.sub("?", str(text))


def render(doc: dict, fail_on: str = "error") -> str:
    doc = inert_doc(doc)  # names from logs may hold newlines and terminal codes
    root = ET.Element("testsuites", name="lrdiag gate" if doc.get("kind") == "lrdiag-gate" else "lrdiag analyze")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for suite in suites(doc, fail_on):
        counts = {"tests": len(suite["cases"]),
                  "failures": sum(case["status"] == "failed" for case in suite["cases"]),
                  "skipped": sum(case["status"] == "skipped" for case in suite["cases"])}
        element = ET.SubElement(root, "testsuite", name=_clean(suite["name"]), errors="0", time="0",
                                **{key: str(value) for key, value in counts.items()})
        for case in suite["cases"]:
            testcase = ET.SubElement(element, "testcase", classname=_clean(case["classname"]), name=_clean(case["name"]),
                                     time="0", file=_clean(case["file"]))
            message = _clean(case["message"])
            if case["status"] == "failed":
                ET.SubElement(testcase, "failure", message=message.splitlines()[0] if message else "",
                              type=case["level"] or "failure").text = message
            elif case["status"] == "skipped":
                ET.SubElement(testcase, "skipped", message=message)
            elif case["level"]:
                ET.SubElement(testcase, "system-out").text = message
        for key in totals:
            totals[key] += counts[key]
    root.attrib.update({key: str(value) for key, value in totals.items()}, errors="0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
