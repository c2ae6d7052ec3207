#!/usr/bin/env bash
# trace-screenshot.sh pictures one message's trace, as Jaeger stores it,
# with headless Chromium. It asks Jaeger's query API for the trace whose
# farcaster.message.hash is HASH. When the query service serves the built
# Jaeger UI (services.sh with WAYPOINT_JAEGER_UI_ASSETS; jaeger-ui.sh
# builds it), it screenshots the UI's own pages: the trace's timeline into
# OUT.png and the search that finds it by the hash tag into OUT-search.png.
# Otherwise (the Jaeger built from its Go module has only a placeholder
# page) it draws the timeline as HTML, adding the sink.commit span linked
# to the trace, and screenshots that into OUT.png; every bar and attribute
# comes from the API.
#
#   deploy/local/trace-screenshot.sh 0x<40 hex digits> [docs/trace.png]
#
# JAEGER (default http://127.0.0.1:16686) is the query address; CHROMIUM
# the browser binary (default: chromium); DRAW=1 draws even when the UI is
# served. Needs python3.
set -euo pipefail

hash=${1:?usage: trace-screenshot.sh HASH [OUT.png]}
out=${2:-docs/trace.png}
jaeger=${JAEGER:-http://127.0.0.1:16686}
chromium=${CHROMIUM:-chromium}

mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$jaeger" "$hash" "$work" <<'PY'
import html, json, sys, urllib.parse, urllib.request

base, want, work = sys.argv[1].rstrip("/"), sys.argv[2].lower(), sys.argv[3]

def get(path, **q):
    url = base + path + "?" + urllib.parse.urlencode(q)
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)["data"] or []

def tags(s):
    return {t["key"]: t["value"] for t in s.get("tags", [])}

search = dict(service="waypoint-ingest", lookback="168h", limit="20",
              tags=json.dumps({"farcaster.message.hash": want}))
traces = get("/api/traces", **search)
# The newest journey of a merge with that hash (a prune or revoke of the
# message carries the same hash).
trace, newest = None, -1
for t in traces:
    for s in t["spans"]:
        if s["operationName"] == "ingest.receive" and tags(s).get("farcaster.event.type") == "MERGE_MESSAGE" and s["startTime"] > newest:
            trace, newest = t, s["startTime"]
if trace is None:
    sys.exit(f"trace-screenshot: jaeger has no ingest trace with farcaster.message.hash={want}")
# The UI's pages for the trace and for the search that finds it.
open(work + "/trace.path", "w").write("/trace/" + trace["traceID"])
# (The UI's lookback menu has no 168h: it shows 2d.)
open(work + "/search.path", "w").write("/search?" + urllib.parse.urlencode(dict(search, lookback="2d")))

spans = trace["spans"]
procs = dict(trace["processes"])
ids = {s["spanID"] for s in spans}
t0 = min(s["startTime"] for s in spans)
t1 = max(s["startTime"] + s["duration"] for s in spans)
# The commit that wrote the message is its own trace, linked to sink.process.
commits = get("/api/traces", service="waypoint-sink", operation="sink.commit", limit="5000",
              start=str(t0 - 60_000_000), end=str(t1 + 60_000_000))
linked = []
for c in commits:
    for s in c["spans"]:
        if s["operationName"] == "sink.commit" and any(r["spanID"] in ids and r["refType"] == "FOLLOWS_FROM" for r in s["references"]):
            pid = "c-" + s["processID"]
            procs[pid] = c["processes"][s["processID"]]
            linked.append(dict(s, processID=pid, linkedTo=[r["spanID"] for r in s["references"]]))
all_spans = spans + linked
t0 = min(s["startTime"] for s in all_spans)
t1 = max(s["startTime"] + s["duration"] for s in all_spans)
span = max(t1 - t0, 1)

parent = {s["spanID"]: next((r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF"), None) for s in spans}
def depth(i):
    d = 0
    while parent.get(i):
        i, d = parent[i], d + 1
    return d

colors = {"waypoint-ingest": "#4c78a8", "waypoint-sink": "#f58518", "waypoint-backfill": "#54a24b"}
rows = []
for s in sorted(spans, key=lambda s: s["startTime"]) + linked:
    svc = procs[s["processID"]]["serviceName"]
    left = 100 * (s["startTime"] - t0) / span
    width = max(100 * s["duration"] / span, 0.3)
    tg = tags(s)
    keys = [k for k in ("farcaster.shard", "farcaster.event.id", "farcaster.event.type", "farcaster.fid", "farcaster.message.type",
                        "waypoint.batch.messages", "waypoint.rows.casts") if k in tg]
    detail = " ".join(f"{k.split('.', 1)[1]}={tg[k]}" for k in keys)
    ind = depth(s["spanID"]) if "linkedTo" not in s else 0
    name = s["operationName"] + (" (own trace, linked)" if "linkedTo" in s else "")
    rows.append(f"""<tr><td class=svc style="color:{colors.get(svc, '#666')}">{html.escape(svc)}</td>
<td class=op style="padding-left:{8 + 18 * ind}px">{html.escape(name)}<div class=tags>{html.escape(detail)}</div></td>
<td class=bar><div style="margin-left:{left:.2f}%;width:{width:.2f}%;background:{colors.get(svc, '#999')}"></div>
<span class=dur>{s['duration'] / 1000:.2f} ms</span></td></tr>""")

doc = f"""<!doctype html><meta charset=utf-8><style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222}} h1{{font-size:18px;margin:0 0 4px}}
.sub{{color:#666;margin-bottom:16px;font-family:monospace}} table{{border-collapse:collapse;width:100%}}
td{{border-bottom:1px solid #eee;padding:6px 8px;vertical-align:top}} .svc{{width:150px;font-weight:600}}
.op{{width:420px;font-family:monospace}} .tags{{color:#777;font-size:11px}} .bar div{{height:14px;border-radius:2px}}
.dur{{font-size:11px;color:#555}}</style>
<h1>Trace of message {html.escape(want)}</h1>
<div class=sub>trace {html.escape(trace['traceID'])} &middot; {len(spans)} spans + {len(linked)} linked commit &middot; {span / 1000:.1f} ms &middot; from Jaeger {html.escape(base)}</div>
<table>{''.join(rows)}</table>"""
open(work + "/trace.html", "w").write(doc)
PY

shoot() { # URL OUT HEIGHT
	"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
		--user-data-dir="$work/profile" --virtual-time-budget=15000 --screenshot="$2" --window-size="1400,$3" \
		"$1" >/dev/null 2>&1 || true
	[[ -s $2 ]] || { echo "trace-screenshot: $chromium wrote no $2" >&2; exit 1; }
	echo "wrote $2 ($(wc -c <"$2") bytes)"
}

# The built UI's page loads its bundle from static/; the placeholder's does not.
if [[ ${DRAW:-} != 1 ]] && curl -fsS "$jaeger/search" 2>/dev/null | grep -q 'static/index-'; then
	shoot "$jaeger$(cat "$work/trace.path")" "$out" 360
	shoot "$jaeger$(cat "$work/search.path")" "${out%.png}-search.png" 620
else
	shoot "file://$work/trace.html" "$out" 300
fi
