package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// jaegerTrace is a trace as Jaeger's /api/traces answers it.
type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
}

type jaegerSpan struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []jaegerRef `json:"references"`
	Tags          []jaegerTag `json:"tags"`
	ProcessID     string      `json:"processID"`
	StartTime     int64       `json:"startTime"`
	Duration      int64       `json:"duration"`
}

type jaegerRef struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

type jaegerTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type jaegerProcess struct {
	ServiceName string `json:"serviceName"`
}

func (s jaegerSpan) tag(key string) (string, bool) {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value), true
		}
	}
	return "", false
}

func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

func jaegerGet(t *testing.T, base, path string, q url.Values) []jaegerTrace {
	t.Helper()
	resp, err := http.Get(strings.TrimRight(base, "/") + path + "?" + q.Encode())
	if err != nil {
		t.Fatalf("jaeger query: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("jaeger query %s: %s", path, resp.Status)
	}
	var body struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("jaeger query: decode: %v", err)
	}
	return body.Data
}

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestTraceInJaeger runs `waypoint start` against the simulator with every
// trace sampled and exported to Jaeger over OTLP/gRPC, then follows one
// stored message through Jaeger's query API: its trace must hold
// ingest.receive (the root, with the message's attributes), ingest.publish
// under it, sink.process under that in the sink's service, and a
// sink.commit span elsewhere linked to that sink.process span. `waypoint
// trace` must then find the message in Postgres and its trace in Jaeger.
func TestTraceInJaeger(t *testing.T) {
	otlp := testsupport.Env(t, "WAYPOINT_TEST_JAEGER_OTLP")
	query := testsupport.Env(t, "WAYPOINT_TEST_JAEGER_QUERY")
	// The OTEL_* path: the process environment, as in production.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+otlp)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "200")

	_, addr := testsupport.StartDevnet(t, devnet.Options{
		Seed: 17, FIDs: 12, Preload: 2000, Rate: 200, Duration: 2 * time.Second, BlockInterval: 50 * time.Millisecond,
	})
	env, pool := pipelineEnv(t, addr, "trace:")
	// The [tracing] path: configuration keys, here from the environment list.
	env = append(env, "WAYPOINT_TRACING__SAMPLER_RATIO=1", "WAYPOINT_METRICS__ADDR="+freeAddr(t))
	started := time.Now()
	stop := startCLI(t, env, "start")
	// A backfill through the same process: enqueue (its own command) ->
	// job -> page fetches -> writes.
	if code, out, errOut := runCLI(t, env, "backfill", "enqueue", "--fids", "3"); code != exitOK || !strings.Contains(out, "queued 1 jobs") {
		t.Fatalf("backfill enqueue: exit %d: %s %s", code, out, errOut)
	}

	ctx := context.Background()
	// Only ingest writes FIDs other than the backfilled one, and the
	// preload predates the subscription: the newest such cast came live.
	var hash []byte
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		err := pool.QueryRow(ctx, `SELECT hash FROM messages WHERE type = 1 AND fid <> 3 ORDER BY "timestamp" DESC LIMIT 1`).Scan(&hash)
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if hash == nil {
		_, errOut := stop()
		t.Fatalf("no cast reached the database within 20s; stderr: %s", errOut)
	}
	for end := time.Now().Add(20 * time.Second); ; {
		_, out, _ := runCLI(t, env, "backfill", "status")
		if strings.Contains(out, "done 1/1") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("backfill job not done within 20s: %s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Let the workload finish, then stop: shutdown flushes the exporters.
	time.Sleep(time.Second)
	if code, errOut := stop(); code != exitOK {
		t.Fatalf("waypoint start exited %d: %s", code, errOut)
	}
	hexHash := fmt.Sprintf("0x%x", hash)

	// Find the message's trace by the hash attribute, as an operator would.
	var tr jaegerTrace
	for wait := time.Now().Add(10 * time.Second); ; {
		traces := jaegerGet(t, query, "/api/traces", url.Values{
			"service": {serviceIngest},
			"tags":    {fmt.Sprintf(`{"farcaster.message.hash":%q}`, hexHash)},
			"start":   {fmt.Sprint(started.UnixMicro())},
			"end":     {fmt.Sprint(time.Now().Add(time.Minute).UnixMicro())},
			"limit":   {"20"},
		})
		for _, c := range traces {
			for _, s := range c.Spans {
				if typ, _ := s.tag("farcaster.event.type"); s.OperationName == "ingest.receive" && typ == "MERGE_MESSAGE" {
					tr = c
				}
			}
		}
		if tr.TraceID != "" || time.Now().After(wait) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if tr.TraceID == "" {
		t.Fatalf("jaeger has no trace with farcaster.message.hash=%s from %s", hexHash, serviceIngest)
	}

	byOp := map[string][]jaegerSpan{}
	for _, s := range tr.Spans {
		byOp[s.OperationName] = append(byOp[s.OperationName], s)
	}
	one := func(op, service string) jaegerSpan {
		t.Helper()
		if len(byOp[op]) != 1 {
			t.Fatalf("trace %s: %d %s spans, want 1 (spans: %v)", tr.TraceID, len(byOp[op]), op, byOp)
		}
		s := byOp[op][0]
		if got := tr.Processes[s.ProcessID].ServiceName; got != service {
			t.Fatalf("%s span is from service %q, want %q", op, got, service)
		}
		return s
	}
	recv := one("ingest.receive", serviceIngest)
	pub := one("ingest.publish", serviceIngest)
	proc := one("sink.process", serviceSink)
	if p := recv.parent(); p != "" {
		t.Errorf("ingest.receive has parent %s; it should start the trace", p)
	}
	if pub.parent() != recv.SpanID {
		t.Errorf("ingest.publish parent %q, want ingest.receive %s", pub.parent(), recv.SpanID)
	}
	if proc.parent() != pub.SpanID {
		t.Errorf("sink.process parent %q, want ingest.publish %s", proc.parent(), pub.SpanID)
	}
	for _, s := range []jaegerSpan{recv, proc} {
		for _, key := range []string{"farcaster.shard", "farcaster.event.id", "farcaster.event.type", "farcaster.fid", "farcaster.message.hash"} {
			if _, ok := s.tag(key); !ok {
				t.Errorf("%s lacks attribute %s", s.OperationName, key)
			}
		}
		if h, _ := s.tag("farcaster.message.hash"); h != hexHash {
			t.Errorf("%s farcaster.message.hash = %q, want %q", s.OperationName, h, hexHash)
		}
	}
	for _, key := range []string{"farcaster.shard", "farcaster.event.id", "farcaster.event.type", "farcaster.fid"} {
		if a, _ := recv.tag(key); a != func() string { b, _ := proc.tag(key); return b }() {
			t.Errorf("%s differs between ingest.receive (%q) and sink.process", key, a)
		}
	}
	if mt, _ := recv.tag("farcaster.message.type"); mt != "MESSAGE_TYPE_CAST_ADD" {
		t.Errorf("ingest.receive farcaster.message.type = %q, want MESSAGE_TYPE_CAST_ADD", mt)
	}
	if fid, _ := recv.tag("farcaster.fid"); fid == "" || fid == "0" {
		t.Errorf("ingest.receive farcaster.fid = %q", fid)
	}

	// The batch commit that wrote it is its own trace, linked to the
	// message's sink.process span.
	commits := jaegerGet(t, query, "/api/traces", url.Values{
		"service":   {serviceSink},
		"operation": {"sink.commit"},
		"start":     {fmt.Sprint(started.Add(-time.Minute).UnixMicro())},
		"end":       {fmt.Sprint(time.Now().Add(time.Minute).UnixMicro())},
		"limit":     {"5000"},
	})
	linked := 0
	for _, c := range commits {
		for _, s := range c.Spans {
			if s.OperationName != "sink.commit" {
				continue
			}
			for _, r := range s.References {
				if r.SpanID == proc.SpanID && r.TraceID == proc.TraceID {
					linked++
				}
			}
		}
	}
	if linked != 1 {
		t.Fatalf("%d sink.commit spans (of %d commit traces) link to sink.process %s, want 1", linked, len(commits), proc.SpanID)
	}

	// The backfill's trace: one enqueue, the job under it (through the
	// Redis payload), the FID under the job, pages and writes under that.
	bf := jaegerGet(t, query, "/api/traces", url.Values{
		"service":   {serviceBackfill},
		"operation": {"backfill.enqueue"},
		"start":     {fmt.Sprint(started.UnixMicro())},
		"end":       {fmt.Sprint(time.Now().Add(time.Minute).UnixMicro())},
		"limit":     {"20"},
	})
	if len(bf) != 1 {
		t.Fatalf("%d backfill.enqueue traces since the test started, want 1", len(bf))
	}
	ops := map[string][]jaegerSpan{}
	for _, s := range bf[0].Spans {
		ops[s.OperationName] = append(ops[s.OperationName], s)
	}
	for _, op := range []string{"backfill.enqueue", "backfill.job", "backfill.fid"} {
		if len(ops[op]) != 1 {
			t.Fatalf("backfill trace: %d %s spans, want 1 (%v)", len(ops[op]), op, ops)
		}
	}
	if len(ops["backfill.fetch_page"]) == 0 || len(ops["backfill.write"]) == 0 {
		t.Fatalf("backfill trace lacks page fetches or writes: %v", ops)
	}
	enq, job, fidSpan := ops["backfill.enqueue"][0], ops["backfill.job"][0], ops["backfill.fid"][0]
	if enq.parent() != "" || job.parent() != enq.SpanID || fidSpan.parent() != job.SpanID {
		t.Errorf("backfill parents: enqueue %q, job %q (want %s), fid %q (want %s)", enq.parent(), job.parent(), enq.SpanID, fidSpan.parent(), job.SpanID)
	}
	for _, op := range []string{"backfill.fetch_page", "backfill.write"} {
		for _, s := range ops[op] {
			if s.parent() != fidSpan.SpanID {
				t.Errorf("%s parent %q, want backfill.fid %s", op, s.parent(), fidSpan.SpanID)
			}
		}
	}
	for _, s := range bf[0].Spans {
		if got := bf[0].Processes[s.ProcessID].ServiceName; got != serviceBackfill {
			t.Errorf("%s from service %q, want %s", s.OperationName, got, serviceBackfill)
		}
	}

	code, out, errOut := runCLI(t, env, "trace", hexHash, "--jaeger", query)
	if code != exitOK {
		t.Fatalf("waypoint trace: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"stored in messages: fid ", "MESSAGE_TYPE_CAST_ADD", tr.TraceID, "/search?service=waypoint-ingest&tags="} {
		if !strings.Contains(out, want) {
			t.Errorf("waypoint trace output lacks %q:\n%s", want, out)
		}
	}
}
