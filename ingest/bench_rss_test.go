package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/config"
	"github.com/waypointhq/waypoint/hub"
)

// Environment of the ingest child process BenchmarkIngestBacklogRSS starts.
const rssChildEnv = "WAYPOINT_INGEST_BENCH_RSS_CHILD"

// rssJob is what the benchmark hands its child: where the simulator is,
// where the embedded server keeps its store, and the last event id of each
// shard, which ends the replay.
type rssJob struct {
	Hub         string            `json:"hub"`
	StoreDir    string            `json:"store_dir"`
	Last        map[uint32]uint64 `json:"last"`
	HeapProfile string            `json:"heap_profile,omitempty"`
}

// rssResult is the child's answer, one JSON line prefixed by "RESULT ".
type rssResult struct {
	Seconds float64 `json:"seconds"`
	VmHWM   uint64  `json:"vmhwm"`
	Heap    uint64  `json:"heap"`
	Stored  uint64  `json:"stored"`
	Bytes   uint64  `json:"bytes"`
}

// BenchmarkIngestBacklogRSS replays a backlog (1M events by default) from a
// simulator process into ingest with the embedded JetStream server, the
// way `waypoint ingest` runs without nats.url, in a child process of its
// own, and reports that process's peak RSS (its own VmHWM: a parent's
// rusage of a child would carry the test binary's peak over the exec).
// It runs twice: with the soft memory limit `waypoint ingest` sets by
// default (ingest.memory_limit_mb, given to the child as the GOMEMLIMIT it
// amounts to), and with none, the Go runtime's defaults.
//
// WAYPOINT_BENCH_RSS_EVENTS scales the backlog down for quick runs;
// WAYPOINT_BENCH_HEAPPROFILE=file writes the child's heap profile at the
// end of the replay.
func BenchmarkIngestBacklogRSS(b *testing.B) {
	addr, _, last, total := benchBacklog(b, benchEnvInt(b, "WAYPOINT_BENCH_RSS_EVENTS", 1000000))
	for _, limit := range []string{defaultMemLimit(), ""} {
		name := "no-memory-limit"
		if limit != "" {
			name = "default-memory-limit=" + limit
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				job := rssJob{Hub: addr, StoreDir: b.TempDir(), Last: last, HeapProfile: os.Getenv("WAYPOINT_BENCH_HEAPPROFILE")}
				res := runRSSChild(b, job, limit)
				if res.Stored != uint64(total) {
					b.Fatalf("stream holds %d messages after the replay, want %d", res.Stored, total)
				}
				b.ReportMetric(mb(res.VmHWM), "peak-rss-MB")
				b.ReportMetric(mb(res.Heap), "peak-heap-MB")
				b.ReportMetric(float64(total)/res.Seconds, "events/s")
				b.Logf("%d events (%.0f MB stored) replayed into the embedded server in %.1f s: peak RSS (VmHWM) %.1f MB, peak heap %.1f MB",
					total, mb(res.Bytes), res.Seconds, mb(res.VmHWM), mb(res.Heap))
			}
		})
	}
}

// defaultMemLimit is the soft memory limit of a `waypoint ingest` process
// with the default configuration, as GOMEMLIMIT spells it.
func defaultMemLimit() string {
	return fmt.Sprintf("%dMiB", config.Default().Ingest.MemoryLimitMB)
}

// runRSSChild runs the replay in a child process, with GOMEMLIMIT=limit
// unless limit is empty, and returns its result.
func runRSSChild(b *testing.B, job rssJob, limit string) rssResult {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	spec, err := json.Marshal(job)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			env = append(env, kv)
		}
	}
	if limit != "" {
		env = append(env, "GOMEMLIMIT="+limit)
	}
	cmd.Env = append(env, rssChildEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("ingest child: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
			var res rssResult
			if err := json.Unmarshal([]byte(v), &res); err != nil {
				b.Fatalf("ingest child result %q: %v", v, err)
			}
			return res
		}
	}
	b.Fatalf("ingest child printed no result: %q", out)
	return rssResult{}
}

// rssChildMain runs ingest with an embedded server until every shard's
// checkpoint reaches the job's last ids, then prints the result.
func rssChildMain(spec string) int {
	var job rssJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		fmt.Fprintln(os.Stderr, "rss child: job:", err)
		return 1
	}
	res, err := rssReplay(job)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rss child:", err)
		return 1
	}
	line, err := json.Marshal(res)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rss child:", err)
		return 1
	}
	fmt.Printf("RESULT %s\n", line)
	return 0
}

func rssReplay(job rssJob) (rssResult, error) {
	var res rssResult
	ctx := context.Background()
	hc, err := hub.Dial(ctx, job.Hub)
	if err != nil {
		return res, err
	}
	defer hc.Close()
	bs, err := bus.Open(ctx, bus.Options{StoreDir: job.StoreDir})
	if err != nil {
		return res, err
	}
	defer bs.Close()
	in, err := New(Options{Hub: hc.Raw(), Bus: bs, FromID: u64(0)})
	if err != nil {
		return res, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	stopSampling := sampleDuring()
	start := time.Now()
	go func() { done <- in.Run(rctx) }()
	deadline := start.Add(30 * time.Minute)
	for !reached(in.Stats(), job.Last) {
		if time.Now().After(deadline) {
			cancel()
			<-done
			return res, fmt.Errorf("checkpoints did not reach %v: %+v", job.Last, in.Stats().Shards)
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.Seconds = time.Since(start).Seconds()
	res.Heap = stopSampling().heap
	if job.HeapProfile != "" {
		if err := writeHeapProfile(job.HeapProfile); err != nil {
			cancel()
			<-done
			return res, err
		}
	}
	cancel()
	if err := <-done; err != nil {
		return res, err
	}
	info, err := bs.StreamInfo(ctx)
	if err != nil {
		return res, err
	}
	res.Stored, res.Bytes = info.State.Msgs, info.State.Bytes
	_, res.VmHWM = procStatus()
	return res, nil
}

func reached(st Stats, last map[uint32]uint64) bool {
	if len(st.Shards) != len(last) {
		return false
	}
	for _, s := range st.Shards {
		if !s.HasCheckpoint || s.Checkpoint < last[s.Shard] {
			return false
		}
	}
	return true
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		_ = f.Close()
		return fmt.Errorf("heap profile: %w", err)
	}
	return f.Close()
}
