#!/usr/bin/env bash
# Runs every benchmark of the project in one go on this machine and prints
# one Markdown table (also written to bin/bench.md): each benchmark with the
# throughput, ratio and memory metrics it reports. Ratios (ours against a
# ceiling measured in the same benchmark) are what to compare across
# machines; absolute rates depend on the machine and its load.
#
# BENCH_FILTER=regexp runs only the matching rows of the plan below.
# BENCH_README=1 also puts the table into README.md, between the
# <!-- bench:begin --> and <!-- bench:end --> lines of its Performance
# section (only after a run of the whole plan).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
eval "$(deploy/local/services.sh env)"
# The big-FID benchmark reports against the issue's target at a million
# messages (about 3 minutes on 2 cores); a smaller size set in the
# environment shows in its fid-msgs column.
export WAYPOINT_BENCH_BIG_FID_MESSAGES=${WAYPOINT_BENCH_BIG_FID_MESSAGES:-1000000}
# The process-per-stage pipeline benchmark drains a backlog with one sink
# replica and a tenth of it with two and four. At the issue's 1M events
# it takes about 14 minutes on 2 cores (the sink's rate falls as the
# database grows), so it runs at 250k here (under 3 minutes); set
# WAYPOINT_BENCH_PIPELINE_EVENTS=1000000 for the target's size. The size
# shows in its backlog-msgs column.
export WAYPOINT_BENCH_PIPELINE_EVENTS=${WAYPOINT_BENCH_PIPELINE_EVENTS:-250000}
# Tracing on vs off alternates rounds; three per side keep it near a minute.
export WAYPOINT_BENCH_ROUNDS=${WAYPOINT_BENCH_ROUNDS:-3}

# package | benchmark regexp | -benchtime | what it measures
plan=(
	"./devnet|BenchmarkReplay|3x|simulator replay to one gRPC subscriber"
	"./devnet|BenchmarkGenerate|3x|simulator live generation (signing included)"
	"./devnet|BenchmarkLoad|1x|simulator bulk load of one account: Submit (verifies again) vs Load (signed by the simulator)"
	"./message|BenchmarkValidate|20000x|message validation per mode"
	"./embedding|BenchmarkLocalEmbedInto|20000x|built-in embedder"
	"./ingest|BenchmarkIngest$|1x|ingest vs bare async publish (same run)"
	"./ingest|BenchmarkIngestBacklogRSS|1x|ingest + embedded JetStream replaying a 1M-event backlog: peak RSS with the default ingest.memory_limit_mb and with none (target <= 150 MB)"
	"./ingest|BenchmarkReceive|20000x|raw-bytes codec vs decode and re-encode"
	"./sink|BenchmarkWriterVsCeiling|3x|writer vs raw COPY ceiling (same run)"
	"./sink|BenchmarkCopyIndexCost|3x|COPY into the indexed live tables vs the ceiling (same run)"
	"./sink|BenchmarkIndexer|3x|HNSW indexer"
	"./sink|BenchmarkSinkEndToEnd|2x|JetStream -> sink -> Postgres, by replicas and on a 3-node cluster"
	"./sink|BenchmarkSinkLatency|1x|publish-to-commit latency at a steady 1,000 events/s"
	"./cmd/waypoint|BenchmarkPipelineProcesses|1x|simulator -> ingest -> nats-server -> sink -> Postgres, one process each: rates and peak RSS per process, by sink replicas"
	"./ingest|BenchmarkIngestTracing|1x|ingest with tracing on at default sampling vs off (same run)"
	"./backfill|BenchmarkBackfillSimulatorToPostgres|1x|simulator -> backfill workers -> Postgres (vs the writer alone)"
	"./backfill|BenchmarkBackfillBigFID|1x|one FID with 1M casts: worker peak RSS (target <= 200 MB) and rate"
	"./backfill|BenchmarkQueue|2000x|Redis queue operations"
	"./telemetry|BenchmarkSpan|200000x|span cost with tracing off and on"
)

mkdir -p bin
raw=bin/bench.raw
: >"$raw"
filter=${BENCH_FILTER:-.}
start=$SECONDS
for row in "${plan[@]}"; do
	IFS='|' read -r pkg re benchtime what <<<"$row"
	[[ $row =~ $filter ]] || continue
	echo "==> $pkg $re ($what)" >&2
	echo "#what $what" >>"$raw"
	if ! go test -run '^$' -bench "$re" -benchtime "$benchtime" -benchmem -timeout 20m "$pkg" 2>&1 | tee -a "$raw" | grep -E '^(Benchmark|FAIL|---)' >&2; then
		echo "bench: $pkg $re failed (output in $raw)" >&2
		exit 1
	fi
done

{
	echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB, Go $(go env GOVERSION | sed 's/^go//'), in $((SECONDS - start)) s."
	echo
	echo "| what | benchmark | metrics |"
	echo "|---|---|---|"
	awk '
		/^#what / { sub(/^#what /, ""); what = $0; next }
		/^Benchmark/ && NF >= 4 {
			name = $1; sub(/-[0-9]+$/, "", name)
			m = ""
			for (i = 3; i + 1 <= NF; i += 2) {
				unit = $(i + 1)
				if (unit == "ns/op" || unit == "B/op" || unit == "allocs/op") continue
				m = m (m == "" ? "" : ", ") $i " " unit
			}
			if (m == "") m = $3 " ns/op"
			printf "| %s | `%s` | %s |\n", what, name, m
			what = ""
		}' "$raw"
} | tee bin/bench.md

if [[ ${BENCH_README:-} == 1 ]]; then
	if [[ $filter != . ]]; then
		echo "bench: BENCH_README needs a run of the whole plan, not BENCH_FILTER=$filter" >&2
		exit 1
	fi
	# The markers stay; what is between them is replaced.
	awk -v table=bin/bench.md '
		/^<!-- bench:begin -->$/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
		/^<!-- bench:end -->$/ { skip = 0 }
		!skip' README.md >bin/README.md.new
	if ! grep -q '^<!-- bench:end -->$' bin/README.md.new; then
		echo "bench: README.md lacks the bench markers" >&2
		exit 1
	fi
	mv bin/README.md.new README.md
	echo "bench: README.md updated" >&2
fi
