#!/usr/bin/env bash
# Runs the whole pipeline on this machine against the bundled Snapchain
# simulator and prints what landed in Postgres:
#
#   waypoint devnet   (a simulated network with history and live traffic)
#     -> waypoint start (ingest -> embedded JetStream -> sink)
#     -> waypoint backfill enqueue --all (history, imported by the sink)
#     -> Postgres: row counts, profiles, recent casts, a semantic search
#
# `make demo` runs it after starting the local services. It uses its own
# database (waypoint_demo) and its own Redis key prefix, and stops
# everything it started when it ends.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
BIN=${BIN:-bin/waypoint}
SECONDS_LIVE=${DEMO_SECONDS:-20}
HUB_ADDR=${DEMO_HUB_ADDR:-127.0.0.1:3383}
work=$(mktemp -d /tmp/waypoint-demo.XXXXXX)
pids=()

cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	echo "logs kept in $work"
}
trap cleanup EXIT

eval "$(deploy/local/services.sh env)"
base_url=$WAYPOINT_DATABASE__URL
db_url=${base_url/\/waypoint\?/\/waypoint_demo?}
psql_base() { psql "$base_url" -v ON_ERROR_STOP=1 -qAt "$@"; }
psql_demo() { psql "$db_url" -v ON_ERROR_STOP=1 -P pager=off "$@"; }

psql_base -c "DROP DATABASE IF EXISTS waypoint_demo WITH (FORCE)" -c "CREATE DATABASE waypoint_demo"

export WAYPOINT_DATABASE__URL=$db_url
export WAYPOINT_HUB__URL=$HUB_ADDR
export WAYPOINT_HUB__NETWORK=devnet
export WAYPOINT_REDIS__KEY_PREFIX="waypoint-demo-$$:"
export WAYPOINT_NATS__STORE_DIR=$work/nats
export WAYPOINT_METRICS__ADDR=${DEMO_METRICS_ADDR:-}
export WAYPOINT_LOG__LEVEL=${WAYPOINT_LOG__LEVEL:-warn}

echo "==> simulator: 200 users, 20000 events of history, then ${SECONDS_LIVE}s of live traffic on $HUB_ADDR"
"$BIN" devnet --listen "$HUB_ADDR" --fids 200 --preload 20000 --rate 300 \
	--block-interval 250ms --duration "${SECONDS_LIVE}s" --dump-state "$work/state.jsonl" \
	>"$work/devnet.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
	grep -q "devnet serving" "$work/devnet.log" 2>/dev/null && break
	sleep 0.1
done

echo "==> waypoint start --replicas 2 (ingest + sink, embedded JetStream)"
"$BIN" start --replicas 2 >"$work/start.log" 2>&1 &
pids+=($!)
sleep 2
if ! kill -0 "${pids[-1]}" 2>/dev/null; then
	cat "$work/start.log" >&2
	echo "demo: waypoint start exited" >&2
	exit 1
fi

echo "==> waypoint backfill enqueue --all (the history before ingest started)"
"$BIN" backfill enqueue --all

end=$((SECONDS + SECONDS_LIVE + 10))
while ((SECONDS < end)); do
	sleep 5
	printf '    %s | casts %s\n' "$("$BIN" backfill status)" \
		"$(psql_demo -qAt -c 'SELECT count(*) FROM casts WHERE deleted_at IS NULL')"
done

echo
echo "==> what landed in Postgres (live rows: deleted_at IS NULL)"
psql_demo -c "
SELECT 'casts' AS table, count(*) FILTER (WHERE deleted_at IS NULL) AS live, count(*) AS stored FROM casts
UNION ALL SELECT 'reactions', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM reactions
UNION ALL SELECT 'links', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM links
UNION ALL SELECT 'verifications', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM verifications
UNION ALL SELECT 'user_data', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM user_data
UNION ALL SELECT 'username_proofs', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM username_proofs
UNION ALL SELECT 'onchain_events', count(*), count(*) FROM onchain_events
UNION ALL SELECT 'messages', count(*) FILTER (WHERE deleted_at IS NULL), count(*) FROM messages
UNION ALL SELECT 'dead_letters', count(*), count(*) FROM dead_letters"

echo "==> a few profiles"
psql_demo -c "SELECT fid, username, display_name, left(bio, 40) AS bio FROM profiles WHERE username IS NOT NULL ORDER BY fid LIMIT 5"

echo "==> the latest casts"
psql_demo -c "SELECT c.fid, p.username, left(c.text, 60) AS text, c.timestamp FROM casts c LEFT JOIN profiles p USING (fid)
	WHERE c.deleted_at IS NULL ORDER BY c.timestamp DESC, c.hash LIMIT 5"

echo "==> waypoint search \"coffee\" --limit 3"
"$BIN" search "protocol shipping today" --limit 3 || true
