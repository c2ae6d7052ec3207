package ingest

import (
	"context"
	"sync"
)

// limiter bounds the publishes awaiting acks, by count and by bytes, across
// every shard of an ingester. Waiting in acquire is the backpressure that
// stops the gRPC reads: while it blocks, no Recv is issued and flow
// control holds the rest of the stream on the node.
type limiter struct {
	mu       sync.Mutex
	n, bytes int
	maxN     int
	maxBytes int
	wake     chan struct{} // closed on release; nil while nobody waits
}

func newLimiter(maxN, maxBytes int) *limiter {
	return &limiter{maxN: maxN, maxBytes: maxBytes}
}

// acquire takes one slot of size bytes. A message larger than the byte
// bound still goes through once nothing else is in flight.
func (l *limiter) acquire(ctx context.Context, size int) error {
	for {
		l.mu.Lock()
		if l.n < l.maxN && (l.bytes+size <= l.maxBytes || l.n == 0) {
			l.n++
			l.bytes += size
			l.mu.Unlock()
			return nil
		}
		if l.wake == nil {
			l.wake = make(chan struct{})
		}
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

func (l *limiter) release(size int) {
	l.mu.Lock()
	l.n--
	l.bytes -= size
	if l.wake != nil {
		close(l.wake)
		l.wake = nil
	}
	l.mu.Unlock()
}

func (l *limiter) inFlight() (n, bytes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n, l.bytes
}
