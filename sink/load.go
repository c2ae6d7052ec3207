package sink

import (
	"sync/atomic"
	"time"
)

// Load measures how busy the writers that share it are, so that background
// work on the same database (RunIndexer) gives way while they work through
// a backlog: HNSW insertion is CPU-bound and would otherwise take a core
// from them. A nil *Load reports idle writers.
type Load struct {
	busy atomic.Int64 // nanoseconds spent in Write, summed over writers
}

// NewLoad returns a Load for WithLoad and IndexerOptions.
func NewLoad() *Load { return &Load{} }

// WithLoad makes the writer account the time it spends in Write to l.
func WithLoad(l *Load) WriterOption { return func(w *Writer) { w.load = l } }

func (l *Load) add(d time.Duration) {
	if l != nil {
		l.busy.Add(int64(d))
	}
}

// busyTime returns the writing time accounted so far.
func (l *Load) busyTime() time.Duration {
	if l == nil {
		return 0
	}
	return time.Duration(l.busy.Load())
}

// loadSample tracks the writers' busy share between two readings.
type loadSample struct {
	load *Load
	busy time.Duration
	at   time.Time
}

// share returns the fraction of the wall time since the previous call that
// the writers spent writing (more than 1 with several writers busy at once),
// and starts the next interval.
func (s *loadSample) share(now time.Time) float64 {
	busy := s.load.busyTime()
	var f float64
	if wall := now.Sub(s.at); !s.at.IsZero() && wall > 0 {
		f = float64(busy-s.busy) / float64(wall)
	}
	s.busy, s.at = busy, now
	return f
}

// indexPause is how long the indexer waits after a batch that took d, so
// that it takes at most share of the time while the writers are busy
// (their busy fraction at least busyAbove); with idle writers it goes on
// at once.
func indexPause(d time.Duration, writersBusy, busyAbove, share float64) time.Duration {
	if writersBusy < busyAbove || share >= 1 || share <= 0 {
		return 0
	}
	return time.Duration(float64(d) * (1 - share) / share)
}
