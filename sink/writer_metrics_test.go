package sink

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/telemetry"
)

// TestWriterMetrics checks that committed batches move
// waypoint_sink_copy_seconds and that the dead letters the writer makes,
// both from undecodable input and from rows the database rejects, are
// counted once each by reason, although the failing batch is bisected.
func TestWriterMetrics(t *testing.T) {
	pool := migratedPool(t)
	if _, err := pool.Exec(context.Background(), `ALTER TABLE casts ADD CONSTRAINT test_no_poison CHECK (text IS DISTINCT FROM 'poison')`); err != nil {
		t.Fatal(err)
	}
	m := telemetry.NewMetrics()
	w := newTestWriter(t, pool, WithMetrics(m, "backfill"))

	if n := histogramCount(t, m.SinkCopySeconds); n != 0 {
		t.Fatalf("copy seconds observed %d times before any write", n)
	}
	res := mustWrite(t, w, merge(castAdd(t, 21, 1, "ok", nil)))
	if res.DeadLetters != 0 {
		t.Fatalf("dead letters = %d on a clean batch", res.DeadLetters)
	}
	if n := histogramCount(t, m.SinkCopySeconds); n != 1 {
		t.Fatalf("copy seconds observed %d times after one batch, want 1", n)
	}

	evs := []*pb.HubEvent{merge(&pb.Message{Hash: []byte{1, 2, 3}})}
	for i := range 6 {
		text := "ok"
		if i == 4 {
			text = "poison"
		}
		evs = append(evs, merge(castAdd(t, 21, uint32(i+2), text, nil)))
	}
	res = mustWrite(t, w, evs...)
	if res.DeadLetters != 2 {
		t.Fatalf("dead letters = %d, want 2", res.DeadLetters)
	}
	for _, tc := range []struct {
		source, reason string
		want           float64
	}{
		{"backfill", "missing_data", 1},
		{"backfill", "store_failed", 1},
		{"sink", "store_failed", 0},
	} {
		if got := counterValue(t, m.DeadLetters.WithLabelValues(tc.source, tc.reason)); got != tc.want {
			t.Errorf("dead_letters_total{source=%q,reason=%q} = %v, want %v", tc.source, tc.reason, got, tc.want)
		}
	}
	// Every committed part of the bisected batch is observed; the failed
	// attempts are not.
	if n := histogramCount(t, m.SinkCopySeconds); n < 3 {
		t.Errorf("copy seconds observed %d times, want one per committed part (at least 3)", n)
	}
	if s := histogramSum(t, m.SinkCopySeconds); s <= 0 {
		t.Errorf("copy seconds sum = %v, want > 0", s)
	}
}

func metricValue(t *testing.T, c prometheus.Metric) *dto.Metric {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return &d
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	return metricValue(t, c).GetCounter().GetValue()
}

func histogram(t *testing.T, h prometheus.Histogram) *dto.Histogram {
	return metricValue(t, h).GetHistogram()
}

func histogramCount(t *testing.T, h prometheus.Histogram) uint64 {
	return histogram(t, h).GetSampleCount()
}
func histogramSum(t *testing.T, h prometheus.Histogram) float64 {
	return histogram(t, h).GetSampleSum()
}
