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
// for at least the linger and then until a writer slot is free, so while
// every slot is busy the next batch grows with everything that arrives
// meanwhile, and the batch size follows the load instead of the linger.
// Every contributor waits for the write that holds its page and gets its
// error, so a page is durable before its fetcher asks for the next one and
// before its job is acknowledged. Memory stays bounded by the pages in
// flight.
type batcher struct {
	w       Writer
	max     int
	linger  time.Duration
	timeout time.Duration
	sem     chan struct{}

	mu  sync.Mutex
	cur *batch
}

type batch struct {
	ctx    context.Context
	events []*pb.HubEvent
	full   chan struct{} // closed when the batch reached max and was sealed
	done   chan struct{}
	err    error
}

func newBatcher(w Writer, max int, linger, timeout time.Duration, concurrency int) *batcher {
	return &batcher{w: w, max: max, linger: linger, timeout: timeout, sem: make(chan struct{}, concurrency)}
}

// Write adds events to the open batch and waits until that batch is
// written.
func (b *batcher) Write(ctx context.Context, events []*pb.HubEvent) error {
	b.mu.Lock()
	bt := b.cur
	if bt == nil {
		// The combined write serves several jobs: one of them ending must
		// not abort the others' pages, so it runs detached, with a bound.
		bt = &batch{ctx: context.WithoutCancel(ctx), full: make(chan struct{}), done: make(chan struct{})}
		b.cur = bt
		go b.run(bt)
	}
	bt.events = append(bt.events, events...)
	if len(bt.events) >= b.max {
		b.cur = nil
		close(bt.full)
	}
	b.mu.Unlock()
	select {
	case <-bt.done:
		return bt.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run writes bt once its linger ended (or it filled up) and a writer slot
// is free, sealing it only then.
func (b *batcher) run(bt *batch) {
	t := time.NewTimer(b.linger)
	select {
	case <-t.C:
	case <-bt.full:
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
