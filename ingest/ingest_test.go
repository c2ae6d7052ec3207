package ingest

import (
	"context"
	"encoding/binary"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/devnet"
	pb "github.com/waypointhq/waypoint/proto"
)

func truthAll(t testing.TB, e *env, shards ...uint32) map[uint32][]*pb.HubEvent {
	m := map[uint32][]*pb.HubEvent{}
	for _, s := range shards {
		m[s] = e.truth(t, s)
	}
	return m
}

// TestHistoryAndLive replays a preloaded history and follows live traffic:
// every event reaches the stream once, in order, on its partition subject,
// and a clean shutdown saves the final checkpoints.
func TestHistoryAndLive(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 7, FIDs: 300, Preload: 20000, Rate: 2000, Duration: 1500 * time.Millisecond}, bus.Options{Partitions: 8})
	o := e.options(e.srv)
	o.FromID = u64(0)
	gaps := &gapRecorder{}
	o.GapHandler = gaps
	in, stop := startIngest(t, o)

	e.waitWorkload(t, 1, 2)
	truth := truthAll(t, e, 1, 2)
	waitCheckpoints(t, in, lastIDs(truth), 60*time.Second)
	if err := stop(); err != nil {
		t.Fatalf("clean shutdown: %v", err)
	}
	checkExactlyOnce(t, readStream(t, e.srv), truth, nil)

	st := in.Stats()
	for _, s := range st.Shards {
		if s.Received != uint64(len(truth[s.Shard])) || s.Published != s.Received || s.Duplicates != 0 || s.Gaps != 0 {
			t.Errorf("shard %d stats: %+v (node has %d events)", s.Shard, s, len(truth[s.Shard]))
		}
		cp, ok, err := e.srv.LoadCheckpoint(context.Background(), s.Shard)
		if err != nil || !ok || cp != lastIDs(truth)[s.Shard] || s.SavedCheckpoint != cp {
			t.Errorf("shard %d saved checkpoint %d %v %v, want %d", s.Shard, cp, ok, err, lastIDs(truth)[s.Shard])
		}
	}
	if st.InFlight != 0 {
		t.Errorf("%d publishes in flight after shutdown", st.InFlight)
	}
	if g := gaps.list(); len(g) != 0 {
		t.Errorf("gaps reported: %+v", g)
	}

	// A restart resumes after the checkpoint: nothing is published twice.
	in2, stop2 := startIngest(t, o)
	time.Sleep(300 * time.Millisecond)
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	for _, s := range in2.Stats().Shards {
		if s.Published != 0 {
			t.Errorf("restart republished %d events on shard %d", s.Published, s.Shard)
		}
	}
}

// countingTracer hands out a new valid span context per span, so the
// trace context on messages can be checked without an SDK.
type countingTracer struct {
	noop.TracerProvider
	n atomic.Uint64
}

func (c *countingTracer) Tracer(string, ...trace.TracerOption) trace.Tracer {
	return countingSpans{c: c}
}

type countingSpans struct {
	noop.Tracer
	c *countingTracer
}

func (s countingSpans) Start(ctx context.Context, _ string, _ ...trace.SpanStartOption) (context.Context, trace.Span) {
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], s.c.n.Add(1))
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xaa, 1}, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx = trace.ContextWithSpanContext(ctx, sc)
	return ctx, trace.SpanFromContext(ctx)
}

// TestTraceContext: each event starts its own trace (receive, then
// publish), and its message carries the publish span's W3C trace context
// in a lowercase traceparent header, so no two messages share a span.
func TestTraceContext(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 61, FIDs: 50, Preload: 3000, Duration: time.Nanosecond}, bus.Options{})
	o := e.options(e.srv)
	o.FromID = u64(0)
	tr := &countingTracer{}
	o.TracerProvider = tr
	o.Propagator = propagation.TraceContext{}
	in, stop := startIngest(t, o)
	truth := truthAll(t, e, 1, 2)
	waitCheckpoints(t, in, lastIDs(truth), 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	stream := readStream(t, e.srv)
	spans := map[string]uint64{} // span id -> event id
	n := 0
	for _, msgs := range stream {
		for _, m := range msgs {
			tp := m.header.Get("traceparent")
			parts := strings.Split(tp, "-")
			if len(parts) != 4 || parts[1] != "aa010000000000000000000000000000" || parts[3] != "01" {
				t.Fatalf("event %d: traceparent %q", m.ev.ID, tp)
			}
			if prev, ok := spans[parts[2]]; ok {
				t.Fatalf("events %d and %d carry the same span %s", prev, m.ev.ID, parts[2])
			}
			spans[parts[2]] = m.ev.ID
			n++
		}
	}
	if n == 0 {
		t.Fatal("no messages in the stream")
	}
}
