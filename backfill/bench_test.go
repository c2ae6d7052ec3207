package backfill

import (
	"context"
	"strconv"
	"testing"

	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

// BenchmarkQueueEnqueue measures FIDs queued per second in jobs of 50.
func BenchmarkQueueEnqueue(b *testing.B) {
	r := testsupport.NewRedis(b)
	q := NewQueue(r.Client, WithPrefix(r.Prefix))
	ctx := context.Background()
	b.ResetTimer()
	res, err := q.Enqueue(ctx, FIDRange(1, uint64(b.N)), EnqueueRequest{})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if res.FIDs != b.N {
		b.Fatalf("queued %d of %d", res.FIDs, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "fids/s")
}

// BenchmarkQueueClaimComplete measures claim + complete round trips per
// second from 16 concurrent clients.
func BenchmarkQueueClaimComplete(b *testing.B) {
	r := testsupport.NewRedis(b)
	q := NewQueue(r.Client, WithPrefix(r.Prefix))
	ctx := context.Background()
	if _, err := q.Enqueue(ctx, FIDRange(1, uint64(b.N)), EnqueueRequest{BatchSize: 1}); err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			j, err := q.Claim(ctx, "bench")
			if err != nil || j == nil {
				b.Errorf("claim: %v, %v", j, err)
				return
			}
			if err := q.Complete(ctx, j); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkBackfillFromTestHub measures the worker's own overhead: messages
// per second from an in-process gRPC hub into a writer that discards, with
// full validation.
func BenchmarkBackfillFromTestHub(b *testing.B) {
	hub := newTestHub()
	f := newFixture()
	const fids = 200
	for fid := uint64(1); fid <= fids; fid++ {
		hub.addFID(b, f, fid, sizes{casts: 60, reactions: 60, links: 60})
	}
	client, _ := hub.serve(b)
	discard := WriterFunc(func(context.Context, []*pb.HubEvent) error { return nil })
	for _, conc := range []int{50, 100} {
		b.Run("concurrency="+strconv.Itoa(conc), func(b *testing.B) {
			var msgs int64
			for range b.N {
				r := testsupport.NewRedis(b)
				q := NewQueue(r.Client, WithPrefix(r.Prefix))
				if _, err := q.Enqueue(context.Background(), FIDRange(1, fids), EnqueueRequest{}); err != nil {
					b.Fatal(err)
				}
				w := runBenchWorker(b, q, client, discard, conc)
				msgs += w.Stats().Messages
			}
			b.ReportMetric(float64(msgs)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func runBenchWorker(b *testing.B, q *Queue, hub Hub, wr Writer, conc int) *Worker {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := NewWorker(q, hub, wr, WorkerOptions{Concurrency: conc, MaxRate: 1e6, InitialRate: 1e6, Logger: discardLogger()})
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	for {
		st, err := q.Status(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if st.Queued.Jobs+st.InProgress.Jobs+st.Retrying.Jobs == 0 {
			break
		}
		if !sleep(ctx, 5e6) {
			break
		}
	}
	cancel()
	<-done
	return w
}
