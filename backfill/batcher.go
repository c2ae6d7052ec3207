package backfill

import (
	"context"
	"sync"
	"time"

	pb "github.com/waypointhq/waypoint/proto"
)

// batcher combines the pages that concurrent fetchers hand in into few large
// Writes, because the cost of a write is mostly its transaction: a FID's
// families arrive as many small pages, and writing each alone would leave
// the backfill waiting on commits. It commits in groups: a batch stays open
// for the linger, or until it holds ready events (a full page), and then
// until a writer slot is free, so while every slot is busy the next batch
// grows with everything that arrives meanwhile, up to max, and the batch
// size follows the load instead of the linger. A lone fetcher of a large
// FID's full pages thus never waits for the linger.
// Every contributor waits for the write that holds its page and gets its
// error, so a page is durable before its fetcher asks for the next one and
// before its job is acknowledged. Memory stays bounded by the pages in
// flight.
type batcher struct {
	w       Writer
	max     int
	ready   int
	linger  time.Duration
	timeout time.Duration
	sem     chan struct{}

	mu  sync.Mutex
	cur *batch
}

type batch struct {
	ctx    context.Context
	events []*pb.HubEvent
	filled chan struct{} // closed when the batch reached ready events
	done   chan struct{}
	err    error
}

func newBatcher(w Writer, max, ready int, linger, timeout time.Duration, concurrency int) *batcher {
	if ready <= 0 || ready > max {
		ready = max
	}
	return &batcher{w: w, max: max, ready: ready, linger: linger, timeout: timeout, sem: make(chan struct{}, concurrency)}
}

// Write adds events to the open batch and waits until that batch is
// written.
func (b *batcher) Write(ctx context.Context, events []*pb.HubEvent) error {
	b.mu.Lock()
	bt := b.cur
	if bt == nil {
		// The combined write serves several jobs: one of them ending must
		// not abort the others' pages, so it runs detached, with a bound.
		bt = &batch{ctx: context.WithoutCancel(ctx), filled: make(chan struct{}), done: make(chan struct{})}
		b.cur = bt
		go b.run(bt)
	}
	n := len(bt.events)
	bt.events = append(bt.events, events...)
	if n < b.ready && len(bt.events) >= b.ready {
		close(bt.filled)
	}
	if len(bt.events) >= b.max {
		b.cur = nil // sealed: the next page starts a batch
	}
	b.mu.Unlock()
	select {
	case <-bt.done:
		return bt.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run writes bt once its linger ended (or it held ready events) and a
// writer slot is free, sealing it only then.
func (b *batcher) run(bt *batch) {
	t := time.NewTimer(b.linger)
	select {
	case <-t.C:
	case <-bt.filled:
		t.Stop()
	}
	b.sem <- struct{}{}
	defer func() { <-b.sem }()
	b.mu.Lock()
	if b.cur == bt {
		b.cur = nil
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(bt.ctx, b.timeout)
	defer cancel()
	bt.err = b.w.Write(ctx, bt.events)
	close(bt.done)
}
