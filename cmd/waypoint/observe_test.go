package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// tcpProxy forwards a loopback port to target until taken down, so a test
// can make Postgres unreachable for one process without touching the
// shared server.
type tcpProxy struct {
	t      *testing.T
	addr   string
	target string

	mu    sync.Mutex
	l     net.Listener
	conns []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{t: t, target: target, addr: freeAddr(t)}
	p.up()
	t.Cleanup(p.down)
	return p
}

func (p *tcpProxy) up() {
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy listen %s: %v", p.addr, err)
	}
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

// down stops accepting and cuts every open connection.
func (p *tcpProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// scrape returns the samples of /metrics as "name{labels}" -> value.
func scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	out, err := readMetrics(addr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readMetrics is scrape for callers that wait for the endpoint to come up.
func readMetrics(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	return out, nil
}

type readyz struct {
	code   int
	failed []string
}

func getReady(t *testing.T, addr string) readyz {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Failed []string `json:"failed"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return readyz{resp.StatusCode, body.Failed}
}

// waitFor polls cond every 100ms for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); ; {
		if cond() {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMetricsHealthAndReadiness runs `waypoint start` with its telemetry
// server on, checks the waypoint_* series of every stage appear with the
// documented labels and move while events flow, and that /readyz turns
// 503 naming postgres while the database is unreachable and 200 again
// once it is back. `waypoint status` is then checked against the same
// deployment.
func TestMetricsHealthAndReadiness(t *testing.T) {
	_, addr := testsupport.StartDevnet(t, devnet.Options{
		Seed: 23, FIDs: 15, Preload: 1000, Rate: 100, Duration: 30 * time.Second, BlockInterval: 50 * time.Millisecond,
	})
	env, _ := pipelineEnv(t, addr, "metrics:")
	nats := testsupport.StartNATSServer(t)
	// Route this deployment's database connections through a proxy the
	// test can cut.
	var proxy *tcpProxy
	for i, kv := range env {
		if v, ok := strings.CutPrefix(kv, "WAYPOINT_DATABASE__URL="); ok {
			u, err := url.Parse(v)
			if err != nil {
				t.Fatal(err)
			}
			proxy = newTCPProxy(t, u.Host)
			u.Host = proxy.addr
			env[i] = "WAYPOINT_DATABASE__URL=" + u.String()
		}
	}
	if proxy == nil {
		t.Fatal("pipelineEnv has no database URL")
	}
	maddr := freeAddr(t)
	env = append(env, "WAYPOINT_METRICS__ADDR="+maddr, "WAYPOINT_NATS__URL="+nats.URL, "WAYPOINT_NATS__PARTITIONS=4")
	stop := startCLI(t, env, "start", "--replicas", "2")

	waitFor(t, 15*time.Second, "the telemetry server", func() bool {
		resp, err := http.Get("http://" + maddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	const (
		received  = `waypoint_events_received_total{shard="1",type="MERGE_MESSAGE"}`
		published = `waypoint_events_published_total{shard="1",type="MERGE_MESSAGE"}`
		casts     = `waypoint_rows_written_total{table="casts"}`
		batches   = `waypoint_sink_batch_size_count`
		commit    = `waypoint_sink_commit_seconds_count`
		miss      = `waypoint_dedupe_cache_requests_total{result="miss"}`
		cp        = `waypoint_checkpoint_event_id{shard="1"}`
		lag       = `waypoint_hub_lag_blocks{shard="1"}`
		pending   = `waypoint_jetstream_pending{consumer="sink-p0"}`
	)
	var first map[string]float64
	waitFor(t, 20*time.Second, "metrics of every stage", func() bool {
		first = scrape(t, maddr)
		for _, k := range []string{received, published, casts, batches, commit, miss, cp} {
			if first[k] <= 0 {
				return false
			}
		}
		_, hasLag := first[lag]
		_, hasPending := first[pending]
		return hasLag && hasPending
	})
	waitFor(t, 10*time.Second, "counters to move", func() bool {
		now := scrape(t, maddr)
		return now[received] > first[received] && now[published] > first[published] &&
			now[casts] > first[casts] && now[batches] > first[batches] && now[cp] > first[cp]
	})
	if m := scrape(t, maddr); m[published] > m[received] {
		t.Errorf("published %v > received %v", m[published], m[received])
	}

	// A backfill through the sink process's worker.
	if code, out, errOut := runCLI(t, env, "backfill", "enqueue", "--fids", "2"); code != exitOK {
		t.Fatalf("backfill enqueue: exit %d: %s %s", code, out, errOut)
	}
	waitFor(t, 15*time.Second, "backfill metrics", func() bool {
		m := scrape(t, maddr)
		return m[`waypoint_backfill_messages_total`] > 0 && m[`waypoint_backfill_jobs{state="done"}`] >= 1 &&
			m[`waypoint_backfill_jobs{state="queued"}`] == 0
	})

	waitFor(t, 15*time.Second, "ready", func() bool { return getReady(t, maddr).code == http.StatusOK })

	proxy.down()
	waitFor(t, 10*time.Second, "not ready while postgres is unreachable", func() bool {
		r := getReady(t, maddr)
		return r.code == http.StatusServiceUnavailable && len(r.failed) == 1 && r.failed[0] == "postgres"
	})
	proxy.up()
	waitFor(t, 15*time.Second, "ready again once postgres is back", func() bool { return getReady(t, maddr).code == http.StatusOK })

	// Status while the deployment runs: every part answers.
	code, out, errOut := runCLI(t, env, "status", "--json")
	if code != exitOK {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var st pipelineStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if len(st.Shards.Shards) != 2 || st.Shards.Shards[0].HubHeight == 0 {
		t.Errorf("status shards: %+v", st.Shards)
	}
	if st.Sink.Unavailable != "" || len(st.Sink.Replicas) != 2 {
		t.Errorf("status sink replicas: %+v", st.Sink)
	}
	if st.Backfill.Unavailable != "" || st.Database.Unavailable != "" || st.Database.DeadLetters == nil || *st.Database.DeadLetters != 0 {
		t.Errorf("status backfill %+v, database %+v", st.Backfill, st.Database)
	}
	if st.Stream.Unavailable != "" || st.Stream.Messages == 0 || len(st.Stream.Consumers) != 4 {
		t.Errorf("status stream: %+v", st.Stream)
	}
	for _, c := range st.Stream.Consumers {
		if c.Unavailable != "" {
			t.Errorf("status consumer %s: %s", c.Name, c.Unavailable)
		}
	}
	for _, s := range st.Shards.Shards {
		if s.Checkpoint == nil || s.LagBlocks == nil || *s.LagBlocks > hubLagThreshold || s.Unavailable != "" {
			t.Errorf("status shard %d: %+v", s.Shard, s)
		}
	}
	if st.Database.Rows["casts"] < 0 {
		t.Errorf("status rows: %v", st.Database.Rows)
	}
	code, out, _ = runCLI(t, env, "status")
	for _, want := range []string{"shard 1 ", "lag ", "sink-p0", "2 replica(s) live", "queued ", "dead letters: 0"} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("status text lacks %q (exit %d):\n%s", want, code, out)
		}
	}

	if code, errOut := stop(); code != exitOK {
		t.Fatalf("waypoint start exited %d: %s", code, errOut)
	}

	// Nothing configured but the defaults' unreachable services: every
	// part says why it is missing, and the command still succeeds.
	code, out, errOut = runCLI(t, []string{"WAYPOINT_HUB__URL=" + freeAddr(t)}, "status")
	if code != exitOK {
		t.Fatalf("status without services: exit %d: %s", code, errOut)
	}
	if n := strings.Count(out, "unavailable: "); n < 5 {
		t.Errorf("status without services: %d parts unavailable, want at least 5:\n%s", n, out)
	}
}
