package backfill_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/backfill"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/migrations"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/sink"
)

// BenchmarkBackfillSimulatorToPostgres measures messages per second from
// the simulator over gRPC, through full validation and the sink's writer,
// into a fresh Postgres database, with 50 and 100 FIDs in flight.
func BenchmarkBackfillSimulatorToPostgres(b *testing.B) {
	const fids = 300
	p := newPipeline(b, devnet.Options{Seed: 3, FIDs: fids, Preload: 40000})
	for _, conc := range []int{50, 100} {
		b.Run("concurrency="+strconv.Itoa(conc), func(b *testing.B) {
			var msgs, events int64
			var elapsed time.Duration
			for range b.N {
				b.StopTimer()
				ctx := context.Background()
				pool, err := pgxpool.New(ctx, testsupport.PostgresURL(b)+"&pool_max_conns=16")
				if err != nil {
					b.Fatal(err)
				}
				if err := migrations.Up(ctx, pool); err != nil {
					b.Fatal(err)
				}
				sw, err := sink.NewWriter(ctx, pool, sink.WithLogger(quiet()))
				if err != nil {
					b.Fatal(err)
				}
				r := testsupport.NewRedis(b)
				p.queue = backfill.NewQueue(r.Client, backfill.WithPrefix(r.Prefix))
				p.writer = backfill.WriterFunc(func(ctx context.Context, ev []*pb.HubEvent) error {
					_, err := sw.Write(ctx, ev)
					return err
				})
				if _, err := p.queue.Enqueue(ctx, backfill.FIDRange(1, fids), backfill.EnqueueRequest{}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				ws := p.run(b, 1, conc, nil)
				elapsed += time.Since(start)
				b.StopTimer()
				msgs += ws[0].Stats().Messages
				events += ws[0].Stats().Events
				pool.Close()
			}
			b.ReportMetric(float64(msgs)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(msgs+events)/elapsed.Seconds(), "items/s")
		})
	}
}
