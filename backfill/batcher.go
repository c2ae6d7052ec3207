package backfill

import (
	"context"
	"sync"
	"time"

	pb "github.com/waypointhq/waypoint/proto"
)

// batcher combines the pages that concurrent fetchers hand in within a short
// linger into one Write, because the cost of a write is mostly its
// transaction: a FID's families arrive as many small pages, and writing
// each alone would leave the backfill waiting on commits. Every contributor
// waits for the write that holds its page and gets its error, so a page is
// durable before its fetcher asks for the next one and before its job is
// acknowledged. Memory stays bounded by the pages in flight.
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
	timer  *time.Timer
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
		bt = &batch{ctx: context.WithoutCancel(ctx), done: make(chan struct{})}
		b.cur = bt
		bt.timer = time.AfterFunc(b.linger, func() { b.flush(bt) })
	}
	bt.events = append(bt.events, events...)
	full := len(bt.events) >= b.max
	if full {
		b.cur = nil
	}
	b.mu.Unlock()
	if full && bt.timer.Stop() {
		go b.run(bt)
	}
	select {
	case <-bt.done:
		return bt.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flush writes bt when its linger ends, unless it filled up first.
func (b *batcher) flush(bt *batch) {
	b.mu.Lock()
	if b.cur == bt {
		b.cur = nil
	}
	b.mu.Unlock()
	b.run(bt)
}

func (b *batcher) run(bt *batch) {
	b.sem <- struct{}{}
	defer func() { <-b.sem }()
	ctx, cancel := context.WithTimeout(bt.ctx, b.timeout)
	defer cancel()
	bt.err = b.w.Write(ctx, bt.events)
	close(bt.done)
}
