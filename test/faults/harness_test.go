//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/waypointhq/waypoint/backfill"
	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/ingest"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/message"
	"github.com/waypointhq/waypoint/migrations"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/sink"
)

// Timings shorter than the production defaults, so that a dead sink's
// partitions move on within about two seconds instead of ten.
const (
	sinkAckWait   = 2 * time.Second
	sinkPinnedTTL = time.Second
	sinkMemberTTL = 1500 * time.Millisecond
	partitions    = 8
)

// pipeline is one deployment under test: a simulator, a database, a Redis
// key space and the NATS servers the components connect to. Components are
// started and killed one by one; each has its own connections, so killing
// one leaves the others untouched.
type pipeline struct {
	t        *testing.T
	sim      *devnet.Sim
	hubAddr  string
	fids     int
	replicas int
	// stableFor is how long converge waits on an unchanging difference
	// before it gives up (default 15s).
	stableFor time.Duration
	dbURL     string
	pool      *pgxpool.Pool
	redisURL  string
	rdb       *redis.Client
	prefix    string
	queue     *backfill.Queue

	mu    sync.Mutex
	gaps  []ingest.Gap
	exits []string
}

// exited records a component that returned an error on its own and was
// restarted.
func (pl *pipeline) exited(name string, err error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.exits = append(pl.exits, name+": "+err.Error())
}

// newPipeline starts a simulator with opts and prepares a migrated
// database and a Redis key space. redisURL empty uses the shared test
// Redis under a fresh prefix.
func newPipeline(t *testing.T, opts devnet.Options, redisURL string) *pipeline {
	t.Helper()
	sim, addr := testsupport.StartDevnet(t, opts)
	p := &pipeline{t: t, sim: sim, hubAddr: addr, fids: opts.FIDs, replicas: 1}
	p.dbURL = testsupport.PostgresURL(t)
	pool, err := pgxpool.New(context.Background(), p.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := migrations.Up(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	p.pool = pool
	if redisURL == "" {
		r := testsupport.NewRedis(t)
		p.redisURL, p.rdb, p.prefix = r.URL, r.Client, r.Prefix
	} else {
		opt, err := redis.ParseURL(redisURL)
		if err != nil {
			t.Fatal(err)
		}
		p.redisURL, p.rdb, p.prefix = redisURL, redis.NewClient(opt), "wpfaults:"
		t.Cleanup(func() { _ = p.rdb.Close() })
	}
	p.queue = newQueue(p.rdb, p.prefix)
	return p
}

func newQueue(rdb redis.UniversalClient, prefix string) *backfill.Queue {
	return backfill.NewQueue(rdb, backfill.WithPrefix(prefix+"backfill:"), backfill.WithVisibilityTimeout(3*time.Second),
		backfill.WithBackoff(100*time.Millisecond, time.Second), backfill.WithMaxAttempts(50))
}

func logger() *slog.Logger {
	if os.Getenv("WAYPOINT_FAULTS_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// openBus connects to url, retrying while the servers elect leaders or
// restart, as a freshly deployed process would.
func openBus(ctx context.Context, url, name string, replicas int) (*bus.Bus, error) {
	var last error
	for ctx.Err() == nil {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		b, err := bus.Open(octx, bus.Options{URL: url, Name: name, Partitions: partitions, Replicas: replicas,
			ConnectTimeout: 2 * time.Second, PublishTimeout: 5 * time.Second, Logger: logger()})
		cancel()
		if err == nil {
			return b, nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return nil, fmt.Errorf("open bus at %s: %w", url, errors.Join(ctx.Err(), last))
}

// proc is a running component. kill ends it as a crash would: its
// context is cancelled and, at the same moment, its connections are
// closed, so buffered and in-flight work is lost.
type proc struct {
	name   string
	cancel context.CancelFunc
	done   chan error
	closer []func()
	once   sync.Once
	err    error
}

func (p *proc) kill() {
	p.once.Do(func() {
		for _, c := range p.closer {
			go c()
		}
		p.cancel()
		select {
		case p.err = <-p.done:
		case <-time.After(20 * time.Second):
			p.err = fmt.Errorf("%s did not return within 20s of being killed", p.name)
		}
	})
}

func (p *proc) stop() error {
	p.once.Do(func() {
		p.cancel()
		select {
		case p.err = <-p.done:
		case <-time.After(30 * time.Second):
			p.err = fmt.Errorf("%s did not stop within 30s", p.name)
		}
		for _, c := range p.closer {
			c()
		}
	})
	return p.err
}

func (pl *pipeline) launch(name string, run func(ctx context.Context) error, closers ...func()) *proc {
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{name: name, cancel: cancel, done: make(chan error, 1), closer: closers}
	go func() {
		err := run(ctx)
		if err != nil && ctx.Err() == nil {
			// Components run until stopped; one that returns on its own
			// is a failure the test must see even if it never stops it.
			fmt.Fprintf(os.Stderr, "faults: %s exited: %v\n", name, err)
		}
		p.done <- err
	}()
	pl.t.Cleanup(func() {
		p.kill()
		if p.err != nil {
			pl.t.Errorf("%s: %v", name, p.err)
		}
	})
	return p
}

func (pl *pipeline) dialHub() *hub.Client {
	pl.t.Helper()
	h, err := hub.Dial(context.Background(), pl.hubAddr, hub.WithRetry(3, 50*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		pl.t.Fatal(err)
	}
	return h
}

// gapHandler records every gap for the scenario's own checks and hands it
// to the reconciler `waypoint ingest` uses.
func (pl *pipeline) gapHandler(h *hub.Client, b *bus.Bus) ingest.GapHandler {
	rec := backfill.GapReconciler(pl.queue, h.Raw(), b, backfill.WithGapLogger(logger().With("component", "ingest")),
		backfill.WithGapDrainTimeout(time.Minute), backfill.WithGapPollInterval(100*time.Millisecond), backfill.WithGapBatchSize(10))
	return ingest.GapHandlerFunc(func(ctx context.Context, g ingest.Gap) error {
		pl.mu.Lock()
		pl.gaps = append(pl.gaps, g)
		pl.mu.Unlock()
		return rec.HandleGap(ctx, g)
	})
}

func (pl *pipeline) gapList() []ingest.Gap {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return append([]ingest.Gap(nil), pl.gaps...)
}

// startIngest runs ingest against the NATS servers at url from the start
// of the hub's event log.
func (pl *pipeline) startIngest(url string) *proc {
	pl.t.Helper()
	b, err := openBus(context.Background(), url, "ingest", pl.replicas)
	if err != nil {
		pl.t.Fatal(err)
	}
	h := pl.dialHub()
	from := uint64(0)
	return pl.launch("ingest", func(ctx context.Context) error {
		err := ingest.Run(ctx, ingest.Options{
			Hub: h.Raw(), Bus: b, FromID: &from, GapHandler: pl.gapHandler(h, b),
			CheckpointInterval: 100 * time.Millisecond, StallTimeout: 5 * time.Second,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, ShutdownTimeout: 3 * time.Second,
			Logger: logger().With("component", "ingest"),
		})
		if ctx.Err() != nil {
			return nil
		}
		return err
	}, func() { b.Conn().Close() }, func() { _ = h.Close() })
}

func sinkOptions(b *bus.Bus, pool *pgxpool.Pool, rdb *redis.Client, prefix string, replicas int) sink.Options {
	return sink.Options{
		Bus: b, Pool: pool, Redis: rdb, DedupePrefix: prefix + "sink:seen:",
		Replicas: replicas, BatchSize: 200, BatchTimeout: 50 * time.Millisecond,
		Validate: message.CheckFull, Network: pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET,
		AckWait: sinkAckWait, PinnedTTL: sinkPinnedTTL, MemberTTL: sinkMemberTTL, ShutdownTimeout: 3 * time.Second,
		Logger: logger(), // the sink names itself as a component
	}
}

// startSink runs a sink process with n replicas against url.
func (pl *pipeline) startSink(url string, n int) *proc {
	pl.t.Helper()
	b, err := openBus(context.Background(), url, "sink", pl.replicas)
	if err != nil {
		pl.t.Fatal(err)
	}
	pool, err := pgxpool.New(context.Background(), pl.dbURL)
	if err != nil {
		pl.t.Fatal(err)
	}
	o := sinkOptions(b, pool, pl.rdb, pl.prefix, n)
	return pl.launch("sink", func(ctx context.Context) error {
		// Restarted when it exits with an error, as its supervisor
		// (Kubernetes, systemd) would; every such exit is recorded.
		for {
			err := sink.Run(ctx, o)
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintf(os.Stderr, "faults: sink exited, restarting: %v\n", err)
			pl.exited("sink", err)
			time.Sleep(500 * time.Millisecond)
		}
	}, func() { b.Conn().Close() }, pool.Close)
}

// startBackfill runs a backfill worker on the pipeline's queue.
func (pl *pipeline) startBackfill() *proc {
	pl.t.Helper()
	pool, err := pgxpool.New(context.Background(), pl.dbURL)
	if err != nil {
		pl.t.Fatal(err)
	}
	h := pl.dialHub()
	w, err := newWorker(context.Background(), pool, h, pl.queue)
	if err != nil {
		pl.t.Fatal(err)
	}
	return pl.launch("backfill", func(ctx context.Context) error {
		err := w.Run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		return err
	}, pool.Close, func() { _ = h.Close() })
}

func newWorker(ctx context.Context, pool *pgxpool.Pool, h *hub.Client, q *backfill.Queue) (*backfill.Worker, error) {
	w, err := sink.NewWriter(ctx, pool, sink.WithLogger(logger()))
	if err != nil {
		return nil, err
	}
	return backfill.NewWorker(q, h.Raw(), backfill.WriterFunc(func(ctx context.Context, evs []*pb.HubEvent) error {
		_, err := w.Write(ctx, evs)
		return err
	}), backfill.WorkerOptions{
		Concurrency: 4, PageSize: 200, Validation: message.CheckFull, Network: pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET,
		Store: backfill.NewPostgresStore(pool), PollInterval: 100 * time.Millisecond, RequestTimeout: 5 * time.Second,
		Logger: logger().With("component", "backfill"),
	}), nil
}

// enqueueAll queues a backfill of every simulated FID.
func (pl *pipeline) enqueueAll() {
	pl.t.Helper()
	if _, err := pl.queue.Enqueue(context.Background(), backfill.FIDRange(1, uint64(pl.fids)), backfill.EnqueueRequest{BatchSize: 5}); err != nil {
		pl.t.Fatal(err)
	}
}

// converge waits for the workload to settle, then until Postgres equals
// the ground truth or timeout passes, and records the scenario's line:
// recovery is measured from healed (the moment the last fault ended),
// or from the moment the workload settled when healed is zero.
func (pl *pipeline) converge(scenario string, healed time.Time, timeout time.Duration, streamURL string) testsupport.Comparison {
	pl.t.Helper()
	truth := testsupport.SettledState(pl.t, pl.sim)
	if healed.IsZero() {
		healed = time.Now()
	}
	deadline := time.Now().Add(timeout)
	var c testsupport.Comparison
	var err error
	// A difference that has not changed for stableFor, long after every
	// failover timeout, will not go away: stop waiting for it.
	stableFor := pl.stableFor
	if stableFor == 0 {
		stableFor = 15 * time.Second
	}
	var last string
	var lastChange time.Time
	for {
		c, err = testsupport.Compare(context.Background(), pl.pool, truth, pl.fids)
		if err == nil && len(c.Mismatches) == 0 || time.Now().After(deadline) {
			break
		}
		if diff := strings.Join(c.Mismatches, "\n"); diff != last || err != nil {
			last, lastChange = diff, time.Now()
		} else if time.Since(lastChange) > stableFor {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	recovery := time.Since(healed)
	pl.mu.Lock()
	for _, e := range pl.exits {
		pl.t.Logf("component exited with an error and was restarted: %s", e)
	}
	pl.mu.Unlock()
	final := testsupport.AssertMatchesTruth(pl.t, pl.pool, truth, pl.fids)
	events := pl.streamEvents(streamURL)
	classes := map[string]int{}
	if len(final.Mismatches) > 0 {
		if classes, err = classify(context.Background(), pl.pool, truth, pl.fids); err != nil {
			pl.t.Error(err)
		}
	}
	scoreboard.add(row{scenario: scenario, events: events, compared: final.Compared, mismatches: len(final.Mismatches),
		classes: classes, recovery: recovery, converged: len(c.Mismatches) == 0})
	pl.t.Logf("%s: %s events in the stream, %d items compared, %d mismatches %v, recovered in %v", scenario, events, final.Compared, len(final.Mismatches), classes, recovery.Round(time.Millisecond))
	return final
}

// streamEvents counts the messages in the events stream.
func (pl *pipeline) streamEvents(url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := openBus(ctx, url, "audit", pl.replicas)
	if err != nil {
		pl.t.Errorf("count stream events: %v", err)
		return "?"
	}
	defer b.Close()
	si, err := b.StreamInfo(ctx)
	if err != nil {
		pl.t.Errorf("count stream events: %v", err)
		return "?"
	}
	return strconv.FormatUint(si.State.Msgs, 10)
}

// row is one line of the summary table.
type row struct {
	scenario   string
	events     string
	compared   int
	mismatches int
	classes    map[string]int // differing items per classify class
	recovery   time.Duration
	converged  bool
}

type board struct {
	mu   sync.Mutex
	rows []row
}

// scoreboard collects the summary table that TestMain prints after the
// suite; it is the only state the tests share.
var scoreboard = &board{}

func (b *board) add(r row) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rows = append(b.rows, r)
}

func (b *board) print(w io.Writer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.rows) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%-44s %7s %9s %10s  %-30s %s\n", "scenario", "events", "compared", "mismatches", "differing items by class", "recovery")
	fmt.Fprintln(w, strings.Repeat("-", 120))
	for _, r := range b.rows {
		rec := r.recovery.Round(10 * time.Millisecond).String()
		if !r.converged {
			rec = "never (gave up after " + rec + ")"
		}
		var cl []string
		for _, k := range slices.Sorted(maps.Keys(r.classes)) {
			cl = append(cl, fmt.Sprintf("%s=%d", k, r.classes[k]))
		}
		fmt.Fprintf(w, "%-44s %7s %9d %10d  %-30s %s\n", r.scenario, r.events, r.compared, r.mismatches, strings.Join(cl, " "), rec)
	}
	fmt.Fprintln(w)
}

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role))
	}
	code := m.Run()
	scoreboard.print(os.Stdout)
	os.Exit(code)
}

// waitQueueDrained waits until every backfill job is done, and fails the
// test if one was parked as failed or is still pending at the timeout.
func (pl *pipeline) waitQueueDrained(timeout time.Duration) backfill.Status {
	pl.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := pl.queue.Status(context.Background())
		if err != nil {
			pl.t.Fatalf("backfill queue status: %v", err)
		}
		if st.Failed.Jobs > 0 {
			pl.t.Fatalf("backfill jobs failed: %v", st)
		}
		if st.Queued.Jobs+st.Retrying.Jobs+st.InProgress.Jobs == 0 {
			return st
		}
		if time.Now().After(deadline) {
			pl.t.Fatalf("backfill queue not drained after %v: %v", timeout, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitWriting waits until the sink has stored some casts, so that a fault
// injected next hits a pipeline that is moving data.
func (pl *pipeline) waitWriting(timeout time.Duration) {
	pl.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var n int
		if err := pl.pool.QueryRow(context.Background(), `SELECT count(*) FROM casts`).Scan(&n); err == nil && n > 0 {
			return
		}
		if time.Now().After(deadline) {
			pl.t.Fatalf("the sink stored nothing within %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
