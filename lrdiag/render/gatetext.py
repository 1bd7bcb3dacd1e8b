"""Terminal output of `lrdiag gate`: each check with its verdict, then the gate's."""

from __future__ import annotations

from lrdiag.render.view import inert_doc

_MARK = {"passed": "PASS", "failed": "FAIL", "skipped": "skip"}


def render(doc: dict) -> str:
    doc = inert_doc(doc)  # names from logs may hold newlines and terminal codes
    out = [f"baselines: {', '.join(doc['baselines'])}  (tolerance {doc['tolerance']}; new findings at or above "
           f"{doc['fail_on']} fail)", ""]
    total = failed = 0
    for gate in doc["gates"]:
        out.append(f"{gate['run']}  ({gate['source']}): {'passed' if gate['passed'] else 'REGRESSED'}")
        width = max(len(check["name"]) for check in gate["checks"])
        for check in gate["checks"]:
            out.append(f"  {_MARK[check['status']]}  {check['name'].ljust(width)}  {check['message']}")
            total += 1
            failed += check["status"] == "failed"
        out.append("")
    runs = len(doc["gates"])
    out.append(f"gate {'passed' if doc['passed'] else 'FAILED'}: {failed} of {total} checks failed in {runs} "
               f"run{'s' if runs != 1 else ''}")
    return "\n".join(out)
