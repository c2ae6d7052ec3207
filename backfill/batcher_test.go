package backfill

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	pb "github.com/waypointhq/waypoint/proto"
)

func events(n int) []*pb.HubEvent {
	out := make([]*pb.HubEvent, n)
	for i := range out {
		out[i] = &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE}
	}
	return out
}

type recordingWriter struct {
	mu     sync.Mutex
	sizes  []int
	err    error
	block  chan struct{}
	called chan struct{}
}

func (r *recordingWriter) Write(ctx context.Context, ev []*pb.HubEvent) error {
	if r.called != nil {
		r.called <- struct{}{}
	}
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sizes = append(r.sizes, len(ev))
	return r.err
}

func TestBatcherCombinesPages(t *testing.T) {
	rw := &recordingWriter{}
	b := newBatcher(rw, 100, 100, 50*time.Millisecond, time.Minute, 2)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Write(context.Background(), events(3)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, n := range rw.sizes {
		total += n
	}
	if total != 30 || len(rw.sizes) >= 10 {
		t.Fatalf("writes %v: want 30 events in fewer than 10 writes", rw.sizes)
	}
}

func TestBatcherFlushesFullBatchAtOnce(t *testing.T) {
	rw := &recordingWriter{}
	b := newBatcher(rw, 10, 10, time.Hour, time.Minute, 1)
	done := make(chan error)
	go func() { done <- b.Write(context.Background(), events(4)) }()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	if err := b.Write(context.Background(), events(6)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 5*time.Second || len(rw.sizes) != 1 || rw.sizes[0] != 10 {
		t.Fatalf("writes %v after %v: want one write of 10 without waiting for the linger", rw.sizes, time.Since(start))
	}
}

func TestBatcherErrorReachesEveryContributor(t *testing.T) {
	boom := errors.New("commit failed")
	rw := &recordingWriter{err: boom}
	b := newBatcher(rw, 1000, 1000, 30*time.Millisecond, time.Minute, 1)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- b.Write(context.Background(), events(1)) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, boom) {
			t.Fatalf("contributor got %v, want the write's error", err)
		}
	}
}

func TestBatcherCancelledContributorDoesNotAbortOthers(t *testing.T) {
	rw := &recordingWriter{block: make(chan struct{}), called: make(chan struct{}, 1)}
	b := newBatcher(rw, 1000, 1000, 10*time.Millisecond, time.Minute, 1)
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error)
	stay := make(chan error)
	go func() { gone <- b.Write(ctx, events(1)) }()
	go func() { stay <- b.Write(context.Background(), events(1)) }()
	<-rw.called
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled contributor got %v", err)
	}
	close(rw.block)
	if err := <-stay; err != nil {
		t.Fatalf("the other contributor got %v", err)
	}
}

// TestBatcherGrowsBatchesWhileWritersAreBusy holds the only writer slot and
// hands in pages meanwhile: they must all go out in the next single write,
// not in one write per linger.
func TestBatcherGrowsBatchesWhileWritersAreBusy(t *testing.T) {
	rw, b, wg := holdSlot(t, 1000, 1000, time.Millisecond, 2)
	for range 20 {
		handIn(t, b, wg, 2)
		time.Sleep(5 * time.Millisecond) // several lingers apart
	}
	close(rw.block)
	wg.Wait()
	if len(rw.sizes) != 2 || rw.sizes[0] != 2 || rw.sizes[1] != 40 {
		t.Fatalf("writes %v: want the first page alone, then the 20 pages that waited in one write", rw.sizes)
	}
}

// TestBatcherWritesAFullPageAtOnce: a batch holding a full page goes out
// as soon as a writer slot is free, without the linger, so a lone fetcher
// of a large FID's pages does not wait for it on every page.
func TestBatcherWritesAFullPageAtOnce(t *testing.T) {
	rw := &recordingWriter{}
	b := newBatcher(rw, 5000, 1000, time.Hour, time.Minute, 2)
	done := make(chan error, 1)
	go func() { done <- b.Write(context.Background(), events(1000)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a full page waited for the hour-long linger")
	}
	if len(rw.sizes) != 1 || rw.sizes[0] != 1000 {
		t.Fatalf("writes %v: want one write of the page", rw.sizes)
	}
}

// TestBatcherGrowsPastAPageWhileWritersAreBusy: with the only writer slot
// held, full pages keep joining the open batch up to its maximum, which is
// then sealed; the rest start the next batch.
func TestBatcherGrowsPastAPageWhileWritersAreBusy(t *testing.T) {
	rw, b, wg := holdSlot(t, 5000, 1000, time.Hour, 1000)
	for range 6 {
		handIn(t, b, wg, 1000)
	}
	// Let all six join before the slot frees.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		b.mu.Lock()
		n := 0
		if b.cur != nil {
			n = len(b.cur.events)
		}
		b.mu.Unlock()
		if n == 1000 { // five sealed at 5000, the sixth open
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the open batch holds %d events, want the sixth page alone", n)
		}
	}
	close(rw.block)
	wg.Wait()
	if len(rw.sizes) != 3 || rw.sizes[0] != 1000 || rw.sizes[1] != 5000 || rw.sizes[2] != 1000 {
		t.Fatalf("writes %v: want the first page, then five pages in one write of 5000, then the sixth", rw.sizes)
	}
}

// holdSlot returns a batcher with one writer slot, batches of up to max
// events and pages of ready, whose writer blocks until rw.block is closed,
// once a first page of n events holds that slot; wg tracks the page.
func holdSlot(t *testing.T, max, ready int, linger time.Duration, n int) (*recordingWriter, *batcher, *sync.WaitGroup) {
	rw := &recordingWriter{block: make(chan struct{}), called: make(chan struct{}, 100)}
	b := newBatcher(rw, max, ready, linger, time.Minute, 1)
	var wg sync.WaitGroup
	handIn(t, b, &wg, n)
	<-rw.called
	return rw, b, &wg
}

// handIn writes a page of n events through b in a goroutine that wg
// tracks, as a fetcher does.
func handIn(t *testing.T, b *batcher, wg *sync.WaitGroup, n int) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := b.Write(context.Background(), events(n)); err != nil {
			t.Error(err)
		}
	}()
}
