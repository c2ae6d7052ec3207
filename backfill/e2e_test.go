package backfill_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/backfill"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/message"
	"github.com/waypointhq/waypoint/migrations"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/sink"
)

// pipeline is a simulator, a migrated database with the sink's writer on
// it, and a queue: everything `enqueue` plus `worker` run against.
type pipeline struct {
	sim    *devnet.Sim
	hub    *hub.Client
	pool   *pgxpool.Pool
	writer backfill.Writer
	queue  *backfill.Queue
	redis  *testsupport.Redis
	truth  *devnet.State
	// validation is the workers' check; CheckFull when unset, the
	// strictest, which the correctness tests want.
	validation message.Mode
}

func newPipeline(t testing.TB, opts devnet.Options) *pipeline {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	// The live workload stops right after the preload, so the ground truth
	// holds still while the backfill runs.
	opts.Duration = time.Nanosecond
	sim, addr := testsupport.StartDevnet(t, opts)
	hc, err := hub.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Close() })
	pool, err := pgxpool.New(ctx, testsupport.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := migrations.Up(ctx, pool); err != nil {
		t.Fatal(err)
	}
	sw, err := sink.NewWriter(ctx, pool, sink.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	r := testsupport.NewRedis(t)
	p := &pipeline{
		sim: sim, hub: hc, pool: pool,
		writer: backfill.WriterFunc(func(ctx context.Context, ev []*pb.HubEvent) error {
			_, err := sw.Write(ctx, ev)
			return err
		}),
		queue: backfill.NewQueue(r.Client, backfill.WithPrefix(r.Prefix)),
		redis: r,
	}
	p.truth = testsupport.SettledState(t, sim)
	return p
}

// settledState waits until the simulator stops producing and returns its
// state.
func (p *pipeline) run(t testing.TB, workers, concurrency int, deadLetters *[]backfill.DeadLetter) []*backfill.Worker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	ws := make([]*backfill.Worker, workers)
	var wg sync.WaitGroup
	validation := p.validation
	if validation == message.CheckNone {
		validation = message.CheckFull
	}
	for i := range ws {
		ws[i] = backfill.NewWorker(p.queue, p.hub.Raw(), p.writer, backfill.WorkerOptions{
			Concurrency: concurrency, Validation: validation, Network: p.sim.Network(),
			MaxRate: 1e6, InitialRate: 1e6, Logger: quiet(),
			DeadLetter: func(_ context.Context, d backfill.DeadLetter) {
				mu.Lock()
				defer mu.Unlock()
				if deadLetters != nil {
					*deadLetters = append(*deadLetters, d)
				}
			},
		})
		wg.Add(1)
		go func() { defer wg.Done(); ws[i].Run(ctx) }()
	}
	deadline := time.Now().Add(4 * time.Minute)
	for {
		st, err := p.queue.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Queued.Jobs+st.Retrying.Jobs+st.InProgress.Jobs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backfill did not finish: %v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	return ws
}

func assertMatchesTruth(t testing.TB, p *pipeline, maxFID int) {
	t.Helper()
	testsupport.AssertMatchesTruth(t, p.pool, p.truth, maxFID)
}

func TestBackfillMatchesSimulator(t *testing.T) {
	const fids = 40
	p := newPipeline(t, devnet.Options{Seed: 11, FIDs: fids + 10, Preload: 6000})
	res, err := p.queue.Enqueue(context.Background(), backfill.FIDRange(1, fids), backfill.EnqueueRequest{BatchSize: 7})
	if err != nil || res.FIDs != fids {
		t.Fatalf("enqueue --max-fid %d = %+v, %v", fids, res, err)
	}
	var dead []backfill.DeadLetter
	p.run(t, 2, 16, &dead)
	if len(dead) > 0 {
		t.Fatalf("%d dead letters, first: %+v", len(dead), dead[0])
	}
	st, _ := p.queue.Status(context.Background())
	if st.Done.FIDs != fids || st.Failed.Jobs != 0 {
		t.Fatalf("status = %v", st)
	}
	assertMatchesTruth(t, p, fids)

	// FIDs beyond --max-fid were left alone.
	var other int
	if err := p.pool.QueryRow(context.Background(), `SELECT count(*) FROM casts WHERE fid > $1`, fids).Scan(&other); err != nil {
		t.Fatal(err)
	}
	if other != 0 {
		t.Fatalf("%d casts of fids above %d were written", other, fids)
	}

	// Reconciliation against the same hub finds nothing to repair.
	w := backfill.NewWorker(nil, p.hub.Raw(), p.writer, backfill.WorkerOptions{Store: backfill.NewPostgresStore(p.pool), Logger: quiet()})
	for fid := uint64(1); fid <= fids; fid++ {
		r, err := w.Reconcile(context.Background(), fid)
		if err != nil || r != (backfill.ReconcileResult{}) {
			t.Fatalf("reconcile fid %d after backfill = %+v, %v", fid, r, err)
		}
	}
}

func TestReconcileRepairsDriftAgainstSimulator(t *testing.T) {
	const fids = 10
	p := newPipeline(t, devnet.Options{Seed: 5, FIDs: fids, Preload: 1500})
	if _, err := p.queue.Enqueue(context.Background(), backfill.FIDRange(1, fids), backfill.EnqueueRequest{}); err != nil {
		t.Fatal(err)
	}
	p.run(t, 1, 10, nil)
	ctx := context.Background()
	// Drift: live rows lost (deleted here, live on the hub) and rows that
	// should be gone (a copy of a live link row under a hash the hub never
	// had).
	lost, err := p.pool.Exec(ctx, `DELETE FROM casts WHERE fid = 3 AND deleted_at IS NULL AND hash IN (SELECT hash FROM casts WHERE fid = 3 AND deleted_at IS NULL LIMIT 2)`)
	if err != nil || lost.RowsAffected() == 0 {
		t.Fatalf("drop casts: %v (%d rows)", err, lost.RowsAffected())
	}
	ghost := []byte("ghost-hash-000000000")
	if _, err := p.pool.Exec(ctx, `INSERT INTO reactions (hash, fid, type, target_url, "timestamp") VALUES ($1, 4, 1, 'https://ghost.example', now())`, ghost); err != nil {
		t.Fatal(err)
	}
	q := backfill.NewQueue(p.redis.Client, backfill.WithPrefix(p.redis.Prefix+"reconcile:"))
	if _, err := q.Enqueue(ctx, backfill.FIDRange(1, fids), backfill.EnqueueRequest{Kind: backfill.KindReconcile}); err != nil {
		t.Fatal(err)
	}
	p.queue = q
	ws := p.runReconcile(t)
	if s := ws.Stats(); s.Deleted != 1 || s.Messages != lost.RowsAffected() {
		t.Fatalf("reconcile stats = %+v, want 1 deleted and %d written", s, lost.RowsAffected())
	}
	assertMatchesTruth(t, p, fids)
	var del bool
	if err := p.pool.QueryRow(ctx, `SELECT deleted_at IS NOT NULL FROM reactions WHERE hash = $1`, ghost).Scan(&del); err != nil || !del {
		t.Fatalf("ghost reaction deleted = %v, %v", del, err)
	}
}

func (p *pipeline) runReconcile(t testing.TB) *backfill.Worker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := backfill.NewWorker(p.queue, p.hub.Raw(), p.writer, backfill.WorkerOptions{
		Store: backfill.NewPostgresStore(p.pool), Validation: message.CheckFull, Network: p.sim.Network(), Logger: quiet()})
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	for {
		st, err := p.queue.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Queued.Jobs+st.Retrying.Jobs+st.InProgress.Jobs == 0 {
			if st.Failed.Jobs != 0 {
				failed, _ := p.queue.Failed(ctx, 1)
				t.Fatalf("reconcile jobs failed: %+v", failed)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	return w
}
