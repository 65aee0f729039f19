"""The evidence page: the data of :func:`pipeline.report.collect` as one static HTML file.

Why so strict about escaping: digests, references, reasons and commit messages come
from users (``--reason`` is free text recorded in git). Every value goes through
:func:`html.escape` with quotes; links are emitted only for ``http``, ``https`` and
``file`` URLs, so a hostile value can neither close a tag nor become a ``javascript:``
link. No script, no external resource: the page renders offline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import urlsplit

from pipeline.report.svg import plot

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%;margin:6px 0}
td,th{border:1px solid #ddd;padding:4px 7px;vertical-align:top;text-align:left}
th{background:#f4f4f4;font-weight:600}code,.d{font:12px ui-monospace,monospace;word-break:break-all}
.ok{color:#176f17;font-weight:600}.bad{color:#b21;font-weight:600}.warn{color:#a60;font-weight:600}
.gap{background:#fff4e5;border:1px solid #f0b86e;padding:6px 10px;margin:4px 0}
.proof{font-size:12px;color:#555}.plots{display:flex;flex-wrap:wrap;gap:10px}
.plot .t{font-size:12px;font-weight:600}.plot .a{font-size:10px;fill:#666}
.plot .th{font-size:10px;fill:#b21}.plot .v{font-size:10px;fill:#333}
"""


def e(value: Any) -> str:
    """Escaped text of ``value`` (None is an empty string; never a Python repr of data)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return escape(f"{value:g}")
    return escape(str(value), quote=True)


def safe_href(url: str) -> str:
    """``url`` if it is an http(s) or file URL, else "" (no javascript:, no data:)."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return ""
    return url if scheme in ("http", "https", "file") else ""


def _proof(proof: Mapping[str, Any] | None) -> str:
    if not proof:
        return ""
    parts = []
    href = safe_href(str(proof.get("href") or ""))
    if href:
        parts.append(f'<a href="{e(href)}">{e(href)}</a>')
    if proof.get("file"):
        parts.append(f"file <code>{e(proof['file'])}</code>")
    if proof.get("command"):
        parts.append(f"<code>{e(proof['command'])}</code>")
    return '<div class="proof">proof: ' + " · ".join(parts) + "</div>"


def _verdict(ok: bool, yes: str = "verified", no: str = "NOT verified") -> str:
    return f'<span class="{"ok" if ok else "bad"}">{e(yes if ok else no)}</span>'


def _row(what: str, value: str, proof: Mapping[str, Any] | None = None) -> str:
    return f"<tr><th>{e(what)}</th><td>{value}{_proof(proof)}</td></tr>"


def _chain(data: Mapping[str, Any]) -> list[str]:
    rec = data.get("record")
    proofs = data.get("proofs") or {}
    release = data["release"]
    rows: list[str] = []
    if rec is None:
        rows.append(_row("image digest", f'<span class="d">{e(release["image"])}</span>',
                         proofs.get("image")))
        rows.append(_row("sealed model digest",
                         f'<span class="d">{e(release["model"])}</span>', proofs.get("model")))
        return rows
    src, run, image, model = rec["source"], rec["run"], rec["image"], rec["model"]
    rows.append(_row("git commit", f'<span class="d">{e(src.get("revision"))}</span> of '
                                   f'<code>{e(src.get("repository"))}</code>',
                     proofs.get("source")))
    run_text = (f'{e(run.get("workflow"))} run <code>{e(run.get("name") or "-")}</code> '
                f'(uid <code>{e(run.get("uid") or "-")}</code>, {e(run.get("executor"))})')
    rows.append(_row("workflow run", run_text,
                     {"href": run.get("url") or "", "file": "", "command":
                      "pipeline workflow run release ... (record: WORKDIR/run.json)"
                      if run.get("executor") == "local" else
                      f"argo get {run.get('name') or ''}"}))
    rows.append(_row("image digest", f'<span class="d">{e(image["reference"])}</span>',
                     proofs.get("image")))
    sig = image.get("signature") or {}
    rows.append(_row("image signature",
                     f'{_verdict(bool(sig.get("verified")))} by '
                     f'{e(", ".join(sig.get("signers") or []) or "-")} '
                     f'(threshold {e(sig.get("threshold"))}); signature manifest '
                     f'<span class="d">{e(sig.get("manifest"))}</span>, tag '
                     f'<code>{e(sig.get("tag"))}</code>', proofs.get("signature")))
    att = "".join(f"<li>{e(a.get('type'))}: {_verdict(bool(a.get('verified')))} "
                  f"(<code>{e(a.get('predicate_type'))}</code>, "
                  f"{e(a.get('statements'))} statement(s))</li>"
                  for a in image.get("attestations") or [])
    rows.append(_row("attestations", f"<ul>{att}</ul>", proofs.get("attestations")))
    sbom = image.get("sbom") or {}
    types = ", ".join(f"{k}: {v}" for k, v in (sbom.get("types") or {}).items())
    rows.append(_row("SBOM", f'{e(sbom.get("format"))} {e(sbom.get("spec_version"))}: '
                             f'{e(sbom.get("components"))} component(s) ({e(types)}); e.g. '
                             f'{e(", ".join(sbom.get("sample") or []))}',
                     {"command": f"pipeline verify-attestation {image['reference']} "
                                 "--type cyclonedx --key release.pub"}))
    scan = image.get("scan") or {}
    counts = ", ".join(f"{k}: {v}" for k, v in (scan.get("counts") or {}).items()) or "none"
    status = (f'<span class="ok">{e(scan.get("status"))}</span>' if scan.get("scanned") else
              f'<span class="warn">vulnerabilities: {e(scan.get("status"))}</span>')
    notes = "".join(f"<li>{e(n)}</li>" for n in scan.get("notes") or [])
    rows.append(_row("scan", f"{status}; findings {e(scan.get('findings'))} ({e(counts)}); "
                             f"scanner {e(scan.get('scanner'))} {e(scan.get('version'))}"
                             + (f"<ul>{notes}</ul>" if notes else ""),
                     {"command": f"pipeline verify-attestation {image['reference']} "
                                 "--type vuln --key release.pub"}))
    prov = image.get("provenance") or {}
    rows.append(_row("provenance", f'builder <code>{e(prov.get("builder"))}</code>, source '
                                   f'<code>{e(prov.get("source"))}</code> at '
                                   f'<span class="d">{e(prov.get("revision") or "-")}</span>; '
                                   f'build type <code>{e(prov.get("build_type"))}</code>, '
                                   f'{e(prov.get("dependencies"))} resolved dependencies',
                     {"command": f"pipeline verify-attestation {image['reference']} "
                                 "--type slsaprovenance --key release.pub"}))
    rows.append(_row("sealed model digest", f'<span class="d">{e(model["reference"])}</span>',
                     proofs.get("model")))
    msig = model.get("signature") or {}
    rows.append(_row("model signature",
                     f'{_verdict(bool(msig.get("verified")))} ({e(msig.get("format"))}, '
                     f'<code>{e(msig.get("path"))}</code>, {e(msig.get("files"))} file(s), '
                     f'files checked: {e(msig.get("files_checked"))})', proofs.get("model")))
    seal = model.get("seal") or {}
    rows.append(_row("seal manifest",
                     f'{e(seal.get("format"))}: {e(seal.get("aead"))}, segment '
                     f'{e(seal.get("segment_size"))} B; key {e(seal.get("key_provider"))} '
                     f'<code>{e(seal.get("key_id"))}</code>; {e(seal.get("files"))} file(s), '
                     f'sealed: {e(", ".join(seal.get("sealed_files") or []))}',
                     proofs.get("record")))
    pol = rec.get("policy") or {}
    results = "".join(f"<tr><td>{e(r.get('rule'))}</td><td>{e(r.get('level'))}</td>"
                      f"<td>{e(r.get('message'))}</td><td><code>{e(r.get('location'))}</code>"
                      "</td></tr>" for r in pol.get("results") or [])
    table = (f"<table><tr><th>rule</th><th>level</th><th>message</th><th>where</th></tr>"
             f"{results}</table>") if results else ""
    rows.append(_row("policy results",
                     f'{_verdict(bool(pol.get("passed")), "passed", "FAILED")}: '
                     f'{e(pol.get("errors"))} error(s), {e(pol.get("warnings"))} warning(s), '
                     f'{e(pol.get("objects"))} object(s) checked{table}',
                     {"command": "pipeline policy check CHART --set-string image.digest=... "
                                 "--verify-images --image-policy POLICY"}))
    adm = rec.get("admission") or {}
    rows.append(_row("admission decision",
                     f'{_verdict(adm.get("decision") == "admitted", "admitted", "denied")}: '
                     f'{e(adm.get("basis"))}',
                     {"command": "pipeline admission serve ... (the same policies)"}))
    return rows


def _live_row(data: Mapping[str, Any]) -> list[str]:
    """The registry's answer now (``--verify-key``), when it was asked."""
    live = data.get("live")
    if not live:
        return []
    sig = live.get("signature") or {}
    said = (f" by {e(', '.join(sig.get('signers') or []))}" if sig.get("verified")
            else f": {e(sig.get('error'))}")
    items = [f"<li>image signature: {_verdict(bool(sig.get('verified')))}{said}</li>"]
    items += [f"<li>{e(a.get('type'))}: {_verdict(bool(a.get('verified')))}"
              f"{'' if a.get('verified') else ': ' + e(a.get('error'))}</li>"
              for a in live.get("attestations") or []]
    keys = " ".join(f"--key {k}" for k in live.get("keys") or [])
    return [_row("registry, checked now", f"<ul>{''.join(items)}</ul>",
                 {"command": f"pipeline verify {live.get('image')} {keys}"})]


def _measurement_cells(step: Mapping[str, Any]) -> str:
    lines = []
    for m in step.get("measurements") or []:
        numbers = "; ".join(
            f"{e(x['name'])} {e(_num(x['value'], x['unit']))} {e(x['comparison'])} "
            f"{e(_num(x['threshold'], x['unit']))}" for x in m.get("metrics") or [])
        mark = '<span class="ok">ok</span>' if m.get("ok") else '<span class="bad">FAIL</span>'
        lines.append(f"<li>#{e(m.get('number'))} {mark} {numbers or e(m.get('summary'))}</li>")
    return f"<ul>{''.join(lines)}</ul>" if lines else "-"


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "seconds":
        return f"{value * 1000:.1f} ms"
    if unit == "ratio":
        return f"{value:.3f}"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:g}"


def _plots(step: Mapping[str, Any]) -> str:
    by_name: dict[str, list[dict[str, Any]]] = {}
    for m in step.get("measurements") or []:
        for x in m.get("metrics") or []:
            by_name.setdefault(x["name"], []).append(x)
    shown = [n for n in by_name if not n.endswith("requests")] or list(by_name)
    svgs = [plot(n, by_name[n], title=f"stage {step.get('stage')} "
                                      f"({step.get('weight')}%): {n}") for n in shown]
    return f'<div class="plots">{"".join(svgs)}</div>' if svgs else ""


def _steps(steps: Iterable[Mapping[str, Any]], rollback: bool = False) -> str:
    rows = []
    for s in steps:
        extra = ""
        if s.get("forced"):
            extra += f"<br>forced: {e(s['forced'])}"
        if s.get("approved_by"):
            extra += f"<br>approved by {e(s['approved_by'])}"
        if rollback:
            reasons = "".join(f"<li>{e(r)}</li>" for r in s.get("reasons") or [])
            refused = (f"<span class='d'>{e(s.get('failed_image'))}</span> + "
                       f"<span class='d'>{e(s.get('failed_model'))}</span>"
                       if s.get("failed_image") else "-")
            what = (f"refused {refused}, back to <span class='d'>{e(s.get('image'))}</span> + "
                    f"<span class='d'>{e(s.get('model'))}</span><ul>{reasons}</ul>")
        else:
            what = f"{e(s.get('status'))}, analysis {e(s.get('analysis') or '-')}"
        rows.append(
            f"<tr><td><code>{e(str(s.get('commit'))[:12])}</code><br>{e(s.get('when'))}"
            f"<br>{e(s.get('who'))}</td><td>{e(s.get('stage'))}, {e(s.get('weight'))}%</td>"
            f"<td>{what}{extra}<br>{e(s.get('message'))}</td>"
            f"<td>{_measurement_cells(s)}{_plots(s)}{_proof(s.get('proof'))}</td></tr>")
    head = ("<tr><th>commit</th><th>stage</th><th>" + ("roll-back" if rollback else "step")
            + "</th><th>analysis (measurements against thresholds)</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def render_html(data: Mapping[str, Any]) -> str:
    """The page for ``data`` (from :func:`pipeline.report.collect`)."""
    release, state = data["release"], data["state"]
    gaps = "".join(f'<div class="gap">{e(g)}</div>' for g in data.get("gaps") or [])
    complete = ('<span class="ok">complete</span>' if data.get("complete") else
                '<span class="warn">incomplete: see the gaps below</span>')
    runs = ("runs now:" if data.get("runs", True) else
            '<span class="bad">does not run now</span>; the environment is')
    body = [
        f"<h1>Evidence: {e(release['label'])} in {e(data['environment'])}</h1>",
        f"<p>{runs} {e(state['status'])} at {e(state['weight'])}% (stage "
        f"{e(state['stage'])}, analysis {e(state['analysis'] or '-')}); chain {complete}. "
        "GitOps repository "
        f"<code>{e(data['gitops'])}</code> {e(data.get('gitops_remote') or '')}</p>",
        f'<p>image <span class="d" id="image">{e(release["image"])}</span><br>model '
        f'<span class="d" id="model">{e(release["model"])}</span></p>',
        _proof((data.get("proofs") or {}).get("state")), gaps,
        "<h2 id=\"chain\">Chain of evidence</h2>",
        "<table>" + "".join(_chain(data) + _live_row(data)) + "</table>",
        "<h2 id=\"steps\">Promotion steps</h2>",
        _steps(data.get("steps") or []) if data.get("steps") else "<p>none recorded</p>",
        "<h2 id=\"rollbacks\">Roll-backs</h2>",
        _steps(data.get("rollbacks") or [], rollback=True) if data.get("rollbacks")
        else "<p>none</p>",
    ]
    title = f"Evidence report: {release['label']} ({data['environment']})"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


__all__ = ["render_html", "safe_href"]
