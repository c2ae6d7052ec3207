package telemetry

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// scrape GETs /metrics from h and returns the sample lines by series
// ("name{labels}") with their values.
func scrape(t *testing.T, h http.Handler) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return parseExposition(t, rec.Body)
}

func parseExposition(t *testing.T, r io.Reader) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad exposition line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad value in %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// touch uses every metric once with representative label values.
func touch(m *Metrics, n float64) {
	s := ShardLabel(1)
	m.EventsReceived.WithLabelValues(s, "MERGE_MESSAGE").Add(n)
	m.EventsPublished.WithLabelValues(s, "MERGE_MESSAGE").Add(n)
	m.CheckpointEventID.WithLabelValues(s).Set(n * 1000)
	m.HubLagBlocks.WithLabelValues(s).Set(n)
	m.PublishLatency.Observe(0.003 * n)
	m.GapsDetected.WithLabelValues(s).Add(n)
	m.GapsRepaired.WithLabelValues(s).Add(n)
	m.Reconnects.WithLabelValues(s).Add(n)
	m.JetStreamPending.WithLabelValues("sink-p3").Set(n)
	m.SinkBatchSize.Observe(100 * n)
	m.SinkCopySeconds.Observe(0.02 * n)
	m.SinkCommitSeconds.Observe(0.04 * n)
	m.RowsWritten.WithLabelValues("casts").Add(n)
	m.DedupeCacheRequests.WithLabelValues(DedupeHit).Add(n)
	m.DedupeCacheRequests.WithLabelValues(DedupeMiss).Add(2 * n)
	m.DedupeCacheRequests.WithLabelValues(DedupeError).Add(3 * n)
	m.DeadLetters.WithLabelValues("sink", "bad_hash").Add(n)
	m.BackfillJobs.WithLabelValues("pending").Set(n)
	m.BackfillMessages.Add(n)
}

func TestMetricsNamesAndLabels(t *testing.T) {
	m := NewMetrics()
	touch(m, 1)
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	want := []struct {
		name   string
		typ    dto.MetricType
		labels []string
	}{
		{"waypoint_events_received_total", dto.MetricType_COUNTER, []string{"shard", "type"}},
		{"waypoint_events_published_total", dto.MetricType_COUNTER, []string{"shard", "type"}},
		{"waypoint_checkpoint_event_id", dto.MetricType_GAUGE, []string{"shard"}},
		{"waypoint_hub_lag_blocks", dto.MetricType_GAUGE, []string{"shard"}},
		{"waypoint_publish_latency_seconds", dto.MetricType_HISTOGRAM, nil},
		{"waypoint_jetstream_pending", dto.MetricType_GAUGE, []string{"consumer"}},
		{"waypoint_sink_batch_size", dto.MetricType_HISTOGRAM, nil},
		{"waypoint_sink_copy_seconds", dto.MetricType_HISTOGRAM, nil},
		{"waypoint_sink_commit_seconds", dto.MetricType_HISTOGRAM, nil},
		{"waypoint_rows_written_total", dto.MetricType_COUNTER, []string{"table"}},
		{"waypoint_dedupe_cache_requests_total", dto.MetricType_COUNTER, []string{"result"}},
		{"waypoint_dedupe_cache_entries", dto.MetricType_GAUGE, nil},
		{"waypoint_dead_letters_total", dto.MetricType_COUNTER, []string{"reason", "source"}},
		{"waypoint_backfill_jobs", dto.MetricType_GAUGE, []string{"state"}},
		{"waypoint_backfill_messages_total", dto.MetricType_COUNTER, nil},
		{"waypoint_gaps_detected_total", dto.MetricType_COUNTER, []string{"shard"}},
		{"waypoint_gaps_repaired_total", dto.MetricType_COUNTER, []string{"shard"}},
		{"waypoint_reconnects_total", dto.MetricType_COUNTER, []string{"shard"}},
		{"go_goroutines", dto.MetricType_GAUGE, nil},
		{"process_resident_memory_bytes", dto.MetricType_GAUGE, nil},
	}
	for _, w := range want {
		f := byName[w.name]
		if f == nil {
			t.Errorf("%s missing from the registry", w.name)
			continue
		}
		if f.GetType() != w.typ {
			t.Errorf("%s is a %v, want %v", w.name, f.GetType(), w.typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no help text", w.name)
		}
		for _, metric := range f.GetMetric() {
			var got []string
			for _, lp := range metric.GetLabel() {
				got = append(got, lp.GetName())
			}
			slices.Sort(got)
			if !slices.Equal(got, w.labels) {
				t.Errorf("%s labels = %v, want %v", w.name, got, w.labels)
			}
		}
	}
	var ours, listed int
	for name := range byName {
		if strings.HasPrefix(name, "waypoint_") {
			ours++
		}
	}
	for _, w := range want {
		if strings.HasPrefix(w.name, "waypoint_") {
			listed++
		}
	}
	if ours != listed {
		t.Errorf("registry has %d waypoint_ metrics, want the %d listed", ours, listed)
	}
}

func TestMetricsValuesMove(t *testing.T) {
	m := NewMetrics()
	s, err := NewServer("127.0.0.1:0", m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	touch(m, 1)
	before := scrape(t, s.Handler())
	touch(m, 2)
	after := scrape(t, s.Handler())

	tests := []struct {
		series        string
		before, after float64
	}{
		{`waypoint_events_received_total{shard="1",type="MERGE_MESSAGE"}`, 1, 3},
		{`waypoint_events_published_total{shard="1",type="MERGE_MESSAGE"}`, 1, 3},
		{`waypoint_checkpoint_event_id{shard="1"}`, 1000, 2000},
		{`waypoint_hub_lag_blocks{shard="1"}`, 1, 2},
		{`waypoint_publish_latency_seconds_count`, 1, 2},
		{`waypoint_publish_latency_seconds_bucket{le="0.005"}`, 1, 1}, // 0.003 then 0.006
		{`waypoint_publish_latency_seconds_bucket{le="0.01"}`, 1, 2},
		{`waypoint_publish_latency_seconds_bucket{le="0.0025"}`, 0, 0},
		{`waypoint_jetstream_pending{consumer="sink-p3"}`, 1, 2},
		{`waypoint_sink_batch_size_sum`, 100, 300},
		{`waypoint_sink_batch_size_bucket{le="100"}`, 1, 1},
		{`waypoint_sink_copy_seconds_count`, 1, 2},
		{`waypoint_sink_commit_seconds_count`, 1, 2},
		{`waypoint_rows_written_total{table="casts"}`, 1, 3},
		{`waypoint_dedupe_cache_requests_total{result="hit"}`, 1, 3},
		{`waypoint_dedupe_cache_requests_total{result="miss"}`, 2, 6},
		{`waypoint_dedupe_cache_requests_total{result="error"}`, 3, 9},
		{`waypoint_dead_letters_total{reason="bad_hash",source="sink"}`, 1, 3},
		{`waypoint_backfill_jobs{state="pending"}`, 1, 2},
		{`waypoint_backfill_messages_total`, 1, 3},
		{`waypoint_gaps_detected_total{shard="1"}`, 1, 3},
		{`waypoint_gaps_repaired_total{shard="1"}`, 1, 3},
		{`waypoint_reconnects_total{shard="1"}`, 1, 3},
	}
	for _, tt := range tests {
		b, okB := before[tt.series]
		a, okA := after[tt.series]
		if !okB || !okA {
			t.Errorf("%s not exposed (before %v, after %v)", tt.series, okB, okA)
			continue
		}
		if b != tt.before || a != tt.after {
			t.Errorf("%s = %v then %v, want %v then %v", tt.series, b, a, tt.before, tt.after)
		}
	}
}

// TestMetricsPrivateRegistries checks two metric sets in one process do
// not collide, as they would on the default registry.
func TestMetricsPrivateRegistries(t *testing.T) {
	a, b := NewMetrics(), NewMetrics()
	a.BackfillMessages.Add(5)
	s, err := NewServer("", b.Registry)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := scrape(t, s.Handler())["waypoint_backfill_messages_total"]; !ok || v != 0 {
		t.Errorf("second registry sees %v (%v), want 0", v, ok)
	}
}
