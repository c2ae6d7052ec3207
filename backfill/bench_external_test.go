package backfill_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/backfill"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/message"
	"github.com/waypointhq/waypoint/migrations"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/sink"
)

// BenchmarkBackfillSimulatorToPostgres measures messages and FIDs per
// second from the simulator over gRPC, through validation and the sink's
// writer, into a fresh Postgres database, with 50 and 100 FIDs in flight
// at the default validation (hash), and at 100 with full validation
// (Ed25519 on every message). The ceiling is the sink's writer alone
// writing the same events into another fresh database in batches of the
// worker's WriteBatch, in the same run; the ratio says how much of the
// writer's capacity the backfill uses.
// Where the two cores go while the backfill runs: process-, postgres- and
// redis-cpu-us/msg, the CPU time this process (the simulator, the workers
// and the writer), every Postgres process and Redis used per message read;
// cpu-share, their sum over the run's time on all cores.
//
// The history is 1,000 FIDs and 400k events, of which about 90k are
// messages the backfill reads. A backfill runs for hours; a third of that
// (about 30k messages in 1.5 s) measured mostly the start and the end, each
// of the writer's connections planning its statements on its first batches
// and the last FIDs finishing with most workers idle, and ran about a fifth
// slower.
func BenchmarkBackfillSimulatorToPostgres(b *testing.B) {
	const fids = 1000
	p := newPipeline(b, devnet.Options{Seed: 3, FIDs: fids, Preload: 400000})
	for _, c := range []struct {
		validation message.Mode
		conc       int
	}{{message.CheckHash, 50}, {message.CheckHash, 100}, {message.CheckFull, 100}} {
		b.Run(fmt.Sprintf("validate=%s/concurrency=%d", c.validation, c.conc), func(b *testing.B) {
			p.validation = c.validation
			var msgs, events, ceilingEvents int64
			var elapsed, ceilingTook time.Duration
			cpu := map[string]time.Duration{}
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
				var mu sync.Mutex
				var written []*pb.HubEvent
				p.writer = backfill.WriterFunc(func(ctx context.Context, ev []*pb.HubEvent) error {
					_, err := sw.Write(ctx, ev)
					mu.Lock()
					written = append(written, ev...)
					mu.Unlock()
					return err
				})
				if _, err := p.queue.Enqueue(ctx, backfill.FIDRange(1, fids), backfill.EnqueueRequest{}); err != nil {
					b.Fatal(err)
				}
				self := map[string]int{"process": os.Getpid()}
				cpuBefore := testsupport.ReadCPU(b, self)
				b.StartTimer()
				start := time.Now()
				ws := p.run(b, 1, c.conc, nil)
				elapsed += time.Since(start)
				b.StopTimer()
				for part, t := range testsupport.ReadCPU(b, self).Since(cpuBefore) {
					cpu[part] += t
				}
				msgs += ws[0].Stats().Messages
				events += ws[0].Stats().Events
				pool.Close()
				took, err := writeAlone(ctx, testsupport.PostgresURL(b), written, backfill.DefaultWriteBatch)
				if err != nil {
					b.Fatal(err)
				}
				ceilingEvents += int64(len(written))
				ceilingTook += took
			}
			b.ReportMetric(float64(msgs)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(fids*b.N)/elapsed.Seconds(), "fids/s")
			b.ReportMetric(float64(msgs+events)/elapsed.Seconds(), "items/s")
			ceiling := float64(ceilingEvents) / ceilingTook.Seconds()
			b.ReportMetric(ceiling, "ceiling-items/s")
			b.ReportMetric(float64(msgs+events)/elapsed.Seconds()/ceiling, "ratio")
			testsupport.ReportCPU(b, cpu, []string{"process", "postgres", "redis"}, float64(msgs), elapsed)
		})
	}
}

// writeAlone writes events with the sink's writer into a fresh database at
// url, batch events at a time, and returns how long that took.
func writeAlone(ctx context.Context, url string, events []*pb.HubEvent, batch int) (time.Duration, error) {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	if err := migrations.Up(ctx, pool); err != nil {
		return 0, err
	}
	sw, err := sink.NewWriter(ctx, pool, sink.WithLogger(quiet()))
	if err != nil {
		return 0, err
	}
	start := time.Now()
	for i := 0; i < len(events); i += batch {
		if _, err := sw.Write(ctx, events[i:min(i+batch, len(events))]); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}
