package backfill

import (
	"context"
	"fmt"
	"iter"
	"log/slog"
	"sync"
	"time"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/ingest"
	"github.com/waypointhq/waypoint/sink"
)

const (
	// DefaultGapDrainTimeout bounds how long a gap's reconciliation waits
	// for the sink to apply what was published before the gap.
	DefaultGapDrainTimeout = 30 * time.Minute
	// DefaultGapPollInterval is how often the sink's progress is read
	// while waiting.
	DefaultGapPollInterval = time.Second
	// gapMaxRetryDelay caps the backoff between attempts to queue a
	// reconciliation while Redis or the hub is unreachable.
	gapMaxRetryDelay = 30 * time.Second
)

// GapOption configures GapReconciler.
type GapOption func(*gapReconciler)

// WithGapLogger sets the logger; the default is slog.Default().
func WithGapLogger(l *slog.Logger) GapOption { return func(r *gapReconciler) { r.log = l } }

// WithGapDrainTimeout sets how long to wait for the sink before
// reconciling anyway, and how long to keep retrying the enqueue
// (DefaultGapDrainTimeout).
func WithGapDrainTimeout(d time.Duration) GapOption {
	return func(r *gapReconciler) { r.drainTimeout = d }
}

// WithGapPollInterval sets how often the sink's progress is read, and the
// first delay between enqueue attempts (DefaultGapPollInterval).
func WithGapPollInterval(d time.Duration) GapOption {
	return func(r *gapReconciler) { r.poll = d }
}

// WithGapPageSize sets the FIDs read per GetFids request when a gap's
// shard is listed (DefaultPageSize).
func WithGapPageSize(n uint32) GapOption { return func(r *gapReconciler) { r.pageSize = n } }

// WithGapBatchSize sets the FIDs per reconcile job (DefaultBatchSize).
func WithGapBatchSize(n int) GapOption { return func(r *gapReconciler) { r.batchSize = n } }

// GapReconciler returns the handler that repairs, through q, what an
// ingest gap lost: a priority KindReconcile job for the gap's FIDs, or for
// every FID of its shard (GetFids on hub) when the gap names none. A
// reconciliation rather than a backfill, because a backfill only adds:
// what was deleted, pruned or revoked on the node while its events were
// lost would stay live.
//
// Every kind of gap is reconciled the same way, because in each the sink
// will never see some of the node's events and the node's current state is
// the only place left to read them from:
//   - GapMissingEvents, GapSkipped, GapRetention: the node emitted events
//     that never reached the bus; their FIDs are usually unknown, so the
//     whole shard is reconciled.
//   - GapUnpublishable: the event reached ingest but cannot go on the bus.
//     One over the server's payload limit names its FID, and a
//     reconciliation reads that FID's messages from the hub and writes them
//     straight into Postgres without passing through NATS, so it restores
//     exactly what the event carried. One whose bytes do not parse names
//     nothing, so its shard is reconciled.
//   - Kinds this build does not know are treated as lost events too.
//
// HandleGap never blocks ingest: it records the gap and returns. One
// goroutine at a time works through the recorded gaps: it reads the
// stream's last sequence, which is after every event the server stored
// before those gaps were reported, waits until the sink's consumer group
// (sink.DefaultGroup) has acknowledged everything up to it on every
// partition, then queues the reconciliations. Reconciling earlier could
// let an add published before the gap be applied after the comparison and
// revive a row whose removal was among the lost events, with nothing left
// to delete it. If the sink has not caught up within the drain timeout the
// reconciliations are queued anyway: a repair with that risk beats none.
// Failures to queue (Redis or the hub unreachable) are retried with
// backoff for the drain timeout, then logged as errors naming the FIDs to
// queue by hand. A reconciliation still waiting when the process exits is
// not queued; ingest has logged its gap as an error.
func GapReconciler(q *Queue, hub FIDLister, b *bus.Bus, opts ...GapOption) ingest.GapHandler {
	r := &gapReconciler{q: q, hub: hub, bus: b, log: slog.Default(),
		drainTimeout: DefaultGapDrainTimeout, poll: DefaultGapPollInterval, pageSize: DefaultPageSize, batchSize: DefaultBatchSize}
	for _, o := range opts {
		o(r)
	}
	return r
}

type gapReconciler struct {
	q            *Queue
	hub          FIDLister
	bus          *bus.Bus
	log          *slog.Logger
	drainTimeout time.Duration
	poll         time.Duration
	pageSize     uint32
	batchSize    int

	mu      sync.Mutex
	pending []ingest.Gap // reported, not yet taken by the running goroutine
	running bool
}

// HandleGap records g for the background goroutine, starting it when none
// runs.
func (r *gapReconciler) HandleGap(ctx context.Context, g ingest.Gap) error {
	r.mu.Lock()
	r.pending = append(r.pending, g)
	start := !r.running
	r.running = true
	r.mu.Unlock()
	if start {
		go r.run(context.WithoutCancel(ctx))
	}
	return nil
}

// run reconciles the recorded gaps, a group at a time: one wait for the
// sink covers every gap reported before it began.
func (r *gapReconciler) run(ctx context.Context) {
	for {
		r.mu.Lock()
		gaps := r.pending
		r.pending = nil
		if len(gaps) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		if err := r.waitSink(ctx); err != nil {
			r.log.Warn("gap in the event stream: the sink did not catch up; reconciling anyway", "gaps", len(gaps), "err", err)
		}
		for _, g := range gaps {
			r.enqueue(ctx, g)
		}
	}
}

// waitSink waits until the sink has acknowledged every event stored in
// the stream now.
func (r *gapReconciler) waitSink(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.drainTimeout)
	defer cancel()
	seq, err := r.bus.LastSequence(ctx)
	for err != nil {
		if !sleep(ctx, r.poll) {
			return fmt.Errorf("read the stream's last sequence: %w", err)
		}
		seq, err = r.bus.LastSequence(ctx)
	}
	if seq == 0 {
		return nil
	}
	return r.bus.WaitConsumed(ctx, sink.DefaultGroup, seq, r.poll)
}

// enqueue queues g's reconciliation, retrying until it succeeds or the
// drain timeout passes. A retry does not queue twice what an earlier
// attempt got in: FIDs with a pending job are skipped.
func (r *gapReconciler) enqueue(ctx context.Context, g ingest.Gap) {
	ctx, cancel := context.WithTimeout(ctx, r.drainTimeout)
	defer cancel()
	attrs := []any{"shard", g.Shard, "kind", g.Kind.String(), "from_id", g.FromID, "to_id", g.ToID}
	if len(g.FIDs) > 0 {
		attrs = append(attrs, "fids", g.FIDs)
	}
	req := EnqueueRequest{Kind: KindReconcile, Priority: true, BatchSize: r.batchSize}
	delay := r.poll
	for {
		res, err := r.q.Enqueue(ctx, r.fids(ctx, g), req)
		if err == nil {
			r.log.Warn("gap in the event stream: queued a reconciliation", append(attrs, "jobs", res.Jobs, "fids_queued", res.FIDs+res.Skipped)...)
			return
		}
		if !sleep(ctx, delay) {
			r.log.Error("gap in the event stream: could not queue its reconciliation; queue it with backfill enqueue --reconcile --priority",
				append(attrs, "err", fmt.Errorf("reconcile gap on shard %d: %w", g.Shard, err))...)
			return
		}
		r.log.Warn("gap in the event stream: queue its reconciliation; retrying", append(attrs, "err", err)...)
		delay = min(2*delay, gapMaxRetryDelay)
	}
}

// fids yields the FIDs g affects: its own, or every FID of its shard.
func (r *gapReconciler) fids(ctx context.Context, g ingest.Gap) iter.Seq2[uint64, error] {
	if len(g.FIDs) > 0 {
		return FIDList(g.FIDs...)
	}
	return shardFIDs(ctx, r.hub, g.Shard, r.pageSize)
}
