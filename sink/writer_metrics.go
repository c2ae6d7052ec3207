package sink

import (
	"time"

	"github.com/waypointhq/waypoint/telemetry"
)

// WithMetrics makes the writer observe waypoint_sink_copy_seconds for each
// batch it commits and count the dead letters it writes itself (rows it
// cannot decode or the database rejects) in waypoint_dead_letters_total
// under source, the role running it ("sink" or "backfill").
func WithMetrics(m *telemetry.Metrics, source string) WriterOption {
	return func(w *Writer) { w.obs = writerMetrics{m: m, source: source} }
}

type writerMetrics struct {
	m      *telemetry.Metrics
	source string
}

// committed records a committed batch: copying is the time its COPYs and
// merge statements took, without the wait for embeddings or the commit.
func (o writerMetrics) committed(b *rows, copying time.Duration) {
	if o.m == nil {
		return
	}
	o.m.SinkCopySeconds.Observe(copying.Seconds())
	for i := range b.dead {
		o.m.DeadLetters.WithLabelValues(o.source, b.dead[i].reason).Inc()
	}
}

// stopwatch adds up the time between its start and stop calls.
type stopwatch struct {
	total time.Duration
	from  time.Time
}

func (s *stopwatch) start() { s.from = time.Now() }
func (s *stopwatch) stop()  { s.total += time.Since(s.from) }
