package sink

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/embedding"
	pb "github.com/waypointhq/waypoint/proto"
)

func TestIndexPause(t *testing.T) {
	for _, c := range []struct {
		name        string
		d           time.Duration
		busy, share float64
		want        time.Duration
	}{
		{"idle writers", 100 * time.Millisecond, 0.2, 0.1, 0},
		{"busy writers, a tenth", 100 * time.Millisecond, 0.9, 0.1, 900 * time.Millisecond},
		{"busy writers, a quarter", 100 * time.Millisecond, 1.7, 0.25, 300 * time.Millisecond},
		{"at the threshold", 100 * time.Millisecond, 0.5, 0.5, 100 * time.Millisecond},
		{"share of all", 100 * time.Millisecond, 2, 1, 0},
	} {
		if got := indexPause(c.d, c.busy, busyAbove, c.share); got != c.want {
			t.Errorf("%s: indexPause(%v, %v, %v, %v) = %v, want %v", c.name, c.d, c.busy, busyAbove, c.share, got, c.want)
		}
	}
}

func TestLoadShare(t *testing.T) {
	l := NewLoad()
	s := loadSample{load: l}
	t0 := time.Unix(1000, 0)
	if f := s.share(t0); f != 0 {
		t.Fatalf("first share = %v, want 0 (no interval yet)", f)
	}
	l.add(300 * time.Millisecond)
	l.add(500 * time.Millisecond) // two writers at once
	if f := s.share(t0.Add(time.Second)); f != 0.8 {
		t.Fatalf("share = %v, want 0.8", f)
	}
	if f := s.share(t0.Add(2 * time.Second)); f != 0 {
		t.Fatalf("share of an idle second = %v, want 0", f)
	}
	var none loadSample // no Load: writers count as idle
	none.share(t0)
	if f := none.share(t0.Add(time.Second)); f != 0 {
		t.Fatalf("share without a Load = %v, want 0", f)
	}
}

// TestIndexerUnderBusyWriters checks that writers accounting their time to
// a Load are measured, and that an indexer giving way to them still
// indexes every queued embedding while they stay busy.
func TestIndexerUnderBusyWriters(t *testing.T) {
	pool := migratedPool(t)
	load := NewLoad()
	w := newTestWriter(t, pool, WithEmbedder(embedding.NewLocal(256)), WithLoad(load))
	var evs []*pb.HubEvent
	for i := range 40 {
		evs = append(evs, merge(castAdd(t, 57, uint32(i+1), fmt.Sprintf("cast %d queued behind a backlog", i), nil)))
	}
	mustWrite(t, w, evs...)
	if load.busyTime() <= 0 {
		t.Fatal("the writer accounted no time to its Load")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Writers busy all the time: twice the wall clock, as two would be.
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				load.add(10 * time.Millisecond)
			}
		}
	}()
	done := make(chan error, 1)
	go func() {
		done <- RunIndexer(ctx, pool, IndexerOptions{BatchSize: 4, Interval: 5 * time.Millisecond, Load: load, BusyShare: 0.5})
	}()
	deadline := time.Now().Add(time.Minute)
	for count(t, w, `SELECT count(*) FROM cast_embeddings`) != 40 {
		if time.Now().After(deadline) {
			t.Fatalf("indexed %d of 40 embeddings in a minute beside busy writers", count(t, w, `SELECT count(*) FROM cast_embeddings`))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunIndexer returned %v after cancel, want nil", err)
	}
}
