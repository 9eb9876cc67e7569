"""The operator's page as HTML, with each device's last day drawn as inline SVG on the server:
no JavaScript and nothing fetched from elsewhere (the Pi may have no internet).

Everything shown comes from traffic (a MAC, an address, a peer, a DHCP name one day) and is
attacker-controlled: every value goes through esc(), and only numbers are formatted without it.
"""
from __future__ import annotations

import html
import math
import time

from ..site.episodes import TIMELINE_BIN, TIMELINE_BINS

MAX_DEVICES_SHOWN = 2000  # the page stays bounded; the rest is counted
STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:3px 8px;border-bottom:1px solid #ddd;
text-align:left;vertical-align:middle}th{background:#f4f4f4}span.new{color:#a15c00;font-weight:600}
.open{color:#b00020;font-weight:600}.num{text-align:right}code{font-size:13px}
.muted{color:#777}h2{margin-top:1.2em}"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(t: float | None) -> str:
    """A flow time in UTC to the second (digits only: nothing to escape)."""
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def device_name(device: dict) -> str:
    return device.get("mac") or device.get("ip") or "?"


def timeline_svg(bins: dict[int, int], spans: list[tuple[float, float | None]], now: float,
                 width: int = 288, height: int = 28) -> str:
    """Flagged flows per quarter hour over the day before `now` (bars, log-scaled), incidents
    as red bands under them."""
    last = int(now // TIMELINE_BIN)
    first = last - TIMELINE_BINS + 1
    step = width / TIMELINE_BINS
    peak = max([n for b, n in bins.items() if b >= first] or [1])
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'role="img"><rect width="{width}" height="{height}" fill="#fafafa"/>')]
    start_of_day = first * TIMELINE_BIN
    for opened, closed in spans:
        x0 = max(0.0, (opened - start_of_day) / TIMELINE_BIN * step)
        x1 = min(float(width), ((closed or now) - start_of_day) / TIMELINE_BIN * step)
        if x1 > 0 and x0 < width:
            parts.append(f'<rect class="incident" x="{x0:.1f}" y="{height - 4}" '
                         f'width="{max(x1 - x0, 2):.1f}" height="4" fill="#b00020"/>')
    for slot, n in bins.items():
        if slot < first or slot > last:
            continue
        h = max(1.0, (height - 6) * math.log1p(n) / math.log1p(peak))
        parts.append(f'<rect class="flagged" x="{(slot - first) * step:.1f}" '
                     f'y="{height - 5 - h:.1f}" width="{max(step - 0.5, 1):.1f}" '
                     f'height="{h:.1f}" fill="#e07000"><title>{n} flagged</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _why(incident: dict) -> str:
    why = ", ".join(f"{esc(w['feature'])} {esc(w['direction'])} ({100 * w['share']:.0f} %)"
                    for w in incident.get("why") or [])
    peers = ", ".join(f"{esc(p['ip'])} ({int(p['flows'])})" for p in incident.get("peers") or [])
    ports = ", ".join(f"{esc(p['port'])} ({int(p['flows'])})" for p in incident.get("ports") or [])
    return (f"<div>why: {why or 'flows past the device’s own threshold'}</div>"
            f"<div class='muted'>peers: {peers or '-'}; services: {ports or '-'}</div>")


def _stage(device: dict) -> str:
    """Known (from the bundle), on probation, or learned on the device (when its normal last
    changed), new or not, muted."""
    stage = device.get("stage", "known")
    parts = ["<span class=new>new</span>"] if device["new"] else []
    parts.append({"probation": "on probation", "learned": "learned here"}.get(stage, "known"))
    if device.get("changed"):
        parts.append(f"<span class='muted'>normal changed {when(device['changed'])}</span>")
    if device.get("muted"):
        parts.append(f"<span class='muted'>muted until {when(device['muted'])}</span>")
    return " ".join(parts)


def render(state: dict) -> str:
    """state: from OperatorView.state(): the devices shown (at most MAX_DEVICES_SHOWN, in
    order), how many there are and how many are new, incidents, now, model."""
    now = state["now"]
    incidents = state["incidents"]
    spans: dict[str, list] = {}
    for inc in incidents:
        spans.setdefault(device_name(inc["device"]), []).append(
            (inc["opened"], inc.get("closed")))
    open_ = [i for i in incidents if i["state"] != "closed"]
    shown = state["devices"][:MAX_DEVICES_SHOWN]
    count = state.get("device_count", len(state["devices"]))
    new = state.get("new_count", sum(1 for d in state["devices"] if d["new"]))
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width'>",
           f"<title>edge-ids: {len(open_)} open incident{'' if len(open_) == 1 else 's'}</title><style>{STYLE}</style></head>",
           "<body><h1>edge-ids</h1>",
           (f"<p class='muted'>{esc(state['model'])}; {count} devices, "
            f"{new} new; {len(open_)} open; "
            f"last flow {when(now if count else None)} UTC; page made "
            f"{when(time.time())} UTC</p>"),
           "<h2>Incidents</h2>"]
    if not incidents:
        out.append("<p class='muted'>none yet</p>")
    else:
        out.append("<table id='incidents'><tr><th>#</th><th>device</th><th>state</th>"
                   "<th>opened</th><th>last flow</th><th class='num'>flagged / seen</th>"
                   "<th>what it looks like</th></tr>")
        for inc in incidents:
            state_class = "open" if inc["state"] != "closed" else "muted"
            new = " <span class='new'>new device</span>" if inc.get("new_device") else ""
            out.append(
                f"<tr class='incident {state_class}' data-device='{esc(device_name(inc['device']))}'>"
                f"<td>{int(inc['id'])}</td><td><code>{esc(device_name(inc['device']))}</code> "
                f"{esc(inc['device'].get('ip'))}{new}</td><td class='{state_class}'>"
                f"{'closed' if inc['state'] == 'closed' else 'open'}</td>"
                f"<td>{when(inc['opened'])}</td>"
                f"<td>{when(inc.get('last_flow'))}</td><td class='num'>"
                f"{int(inc['flows_flagged'])} / {int(inc['flows_seen'])}</td>"
                f"<td>{_why(inc)}</td></tr>")
        out.append("</table>")
    out.append("<h2>Devices</h2><table id='devices'><tr><th>device</th><th>address</th>"
               "<th></th><th>first seen</th><th>last seen</th><th class='num'>flows</th>"
               "<th class='num'>flagged</th><th>incident</th><th>last day</th></tr>")
    for d in shown:
        name = device_name(d["device"])
        flagged = 100 * d["flagged"] / d["flows"] if d["flows"] else 0.0
        incident = (f"<span class='open'>#{int(d['incident'])} open</span>"
                    if d["incident"] is not None else "-")
        out.append(
            f"<tr class='device{' new' if d['new'] else ''}' data-device='{esc(name)}'>"
            f"<td><code>{esc(name)}</code></td><td>{esc(d['device'].get('ip'))}</td>"
            f"<td>{_stage(d)}</td>"
            f"<td>{when(d['first_seen'])}</td><td>{when(d['last_seen'])}</td>"
            f"<td class='num'>{int(d['flows']):,}</td><td class='num'>{flagged:.1f} %</td>"
            f"<td>{incident}</td>"
            f"<td>{timeline_svg(d.get('timeline') or {}, spans.get(name, []), now)}</td></tr>")
    out.append("</table>")
    if count > len(shown):
        out.append(f"<p class='muted'>{count - len(shown):,} more devices not shown "
                   "(least recently seen)</p>")
    out.append("<p class='muted'>Read-only. Times are the flows' own (UTC). Bars: flagged "
               "flows per quarter hour; red: incidents.</p></body></html>")
    return "\n".join(out)
