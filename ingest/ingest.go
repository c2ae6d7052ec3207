// Package ingest follows every data shard of a Snapchain node
// (HubService.Subscribe) and publishes each event, as the raw bytes the node
// sent, to the JetStream stream owned by package bus.
//
// Per shard, ingest keeps one subscription and publishes asynchronously in
// event order with a bounded number (and size) of unacknowledged publishes;
// when the bound is reached it stops reading, so memory stays flat however
// large the backlog. A shard's checkpoint only advances to the highest
// event id below which every publish was acknowledged, and a restart
// resumes at checkpoint+1. What was stored after the last saved checkpoint
// is found by reading the stream back from the sequence saved with it, and
// not published again; Nats-Msg-Id deduplication covers only what was still
// on its way to the server at that moment.
//
// Events are held per block until the block is complete against its
// BLOCK_CONFIRMED counts (BLOCK_CONFIRMED is the first event of its block),
// so a missed event is noticed before anything later is published; the
// missing events are fetched with GetEvents and published in order. What
// cannot be repaired, and events the node expired before ingest read them,
// are reported to a GapHandler (and logged and counted), never skipped
// silently.
//
// Subscriptions that end (UNAVAILABLE, a stall) are reopened right after
// the last event received, keeping held blocks and in-flight publishes. A
// rejected publish (the stream is full: DiscardNew, or the server is gone)
// instead discards everything after the checkpoint and replays from it
// with backoff. Per-shard order in the stream holds in every case but one:
// when a full stream rejects an event and a later, smaller one of the same
// in-flight window still fits, the rejected event lands after it on replay.
// Consumers apply events convergently, so this costs nothing but is worth
// knowing when reading the stream by hand.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/waypointhq/waypoint/bus"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/telemetry"
)

// EventTypes are the event types ingest subscribes to. MERGE_FAILURE is
// left out: it records a rejected message and changes no state.
var EventTypes = []pb.HubEventType{
	pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
	pb.HubEventType_HUB_EVENT_TYPE_PRUNE_MESSAGE,
	pb.HubEventType_HUB_EVENT_TYPE_REVOKE_MESSAGE,
	pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF,
	pb.HubEventType_HUB_EVENT_TYPE_MERGE_ON_CHAIN_EVENT,
	pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED,
}

// Options configures an Ingester. Zero values take the defaults noted.
type Options struct {
	// Hub is the node's HubService client.
	Hub pb.HubServiceClient
	// Bus is where events are published and checkpoints kept.
	Bus *bus.Bus
	// Shards lists the data shards to follow; empty asks the node
	// (GetInfo) for all of them.
	Shards []uint32
	// FromID is where a shard without a checkpoint starts; nil starts
	// live. A shard with a checkpoint always resumes after it.
	FromID *uint64
	// MaxInFlight bounds unacknowledged publishes across all shards
	// (default 8192, at most the bus's MaxPending).
	MaxInFlight int
	// MaxInFlightBytes bounds the payload bytes of unacknowledged
	// publishes (default 32 MiB).
	MaxInFlightBytes int
	// StallTimeout reconnects a shard whose subscription sent nothing,
	// not even a block confirmation, for this long (default 30s; blocks
	// come every second).
	StallTimeout time.Duration
	// CheckpointInterval is how often acknowledged progress is saved
	// (default 1s). A crash republishes at most this much.
	CheckpointInterval time.Duration
	// MinBackoff and MaxBackoff bound the jittered exponential backoff
	// between reconnects (defaults 100ms and 30s).
	MinBackoff, MaxBackoff time.Duration
	// ShutdownTimeout bounds the wait for in-flight acks, and then the
	// final checkpoint save, once the context is cancelled (default 10s).
	ShutdownTimeout time.Duration
	// MaxRepairBlocks is the most whole blocks fetched with GetEvents when
	// the subscription skips some; a longer jump reconnects from the
	// checkpoint instead (default 32).
	MaxRepairBlocks int
	// RepairPageSize is the GetEvents page size (default 1000).
	RepairPageSize int
	// GapHandler is told about gaps that ingest cannot repair.
	GapHandler GapHandler
	// Logger receives progress, reconnect and gap logs.
	Logger *slog.Logger
	// TracerProvider and Propagator trace each event (an ingest.receive
	// root span with an ingest.publish child lasting until the ack) and
	// put the publish span's context on its message, so the sink continues
	// the event's trace (defaults: the otel globals). Blocks get an
	// ingest.block span of their own.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Metrics, when set, receives the waypoint_events_*, checkpoint,
	// reconnect, gap and publish latency metrics.
	Metrics *telemetry.Metrics
}

func (o Options) withDefaults() (Options, error) {
	if o.Hub == nil {
		return o, errors.New("ingest: a hub client is required")
	}
	if o.Bus == nil {
		return o, errors.New("ingest: a bus is required")
	}
	for _, s := range o.Shards {
		if s == 0 {
			return o, errors.New("ingest: shard 0 is the block shard and has no user events; data shards are numbered from 1")
		}
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 8192
	}
	o.MaxInFlight = min(o.MaxInFlight, o.Bus.MaxPending())
	if o.MaxInFlightBytes <= 0 {
		o.MaxInFlightBytes = 32 << 20
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 30 * time.Second
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 10 * time.Second
	}
	if o.MaxRepairBlocks <= 0 {
		o.MaxRepairBlocks = 32
	}
	if o.RepairPageSize <= 0 {
		o.RepairPageSize = 1000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TracerProvider == nil {
		o.TracerProvider = otel.GetTracerProvider()
	}
	if o.Propagator == nil {
		o.Propagator = otel.GetTextMapPropagator()
	}
	return o, nil
}

// Ingester publishes the events of a node's shards to the bus.
type Ingester struct {
	opts   Options
	log    *slog.Logger
	lim    *limiter
	tracer trace.Tracer

	mu     sync.Mutex
	shards []*shard
}

// New checks opts and returns an Ingester ready to Run.
func New(opts Options) (*Ingester, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Ingester{
		opts:   opts,
		log:    opts.Logger,
		lim:    newLimiter(opts.MaxInFlight, opts.MaxInFlightBytes),
		tracer: opts.TracerProvider.Tracer("github.com/waypointhq/waypoint/ingest"),
	}, nil
}

// Run is New followed by Ingester.Run.
func Run(ctx context.Context, opts Options) error {
	in, err := New(opts)
	if err != nil {
		return err
	}
	return in.Run(ctx)
}

// Run follows every shard until ctx is cancelled, then stops reading,
// waits for in-flight acks, saves the checkpoints and returns nil, within
// twice ShutdownTimeout at most. Errors from the node or the server are
// retried with backoff, not returned; Run returns an error only when it
// cannot start (the node reports no shards), when the bus connection is
// closed under it, or when it cannot shut down cleanly (acks or the final
// checkpoint save did not complete in time).
func (in *Ingester) Run(ctx context.Context) error {
	shards, err := in.discover(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	in.mu.Lock()
	in.shards = make([]*shard, len(shards))
	for i, id := range shards {
		in.shards[i] = newShard(in, id)
	}
	list := in.shards
	in.mu.Unlock()
	in.log.Info("ingest starting", "shards", shards, "stream", in.opts.Bus.StreamName(), "partitions", in.opts.Bus.Partitions())

	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, s := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.run(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// discover returns the configured shards, or asks the node, retrying with
// backoff while it is unreachable.
func (in *Ingester) discover(ctx context.Context) ([]uint32, error) {
	if len(in.opts.Shards) > 0 {
		s := slices.Clone(in.opts.Shards)
		slices.Sort(s)
		return slices.Compact(s), nil
	}
	bo := newBackoff(in.opts.MinBackoff, in.opts.MaxBackoff)
	for {
		info, err := in.opts.Hub.GetInfo(ctx, &pb.GetInfoRequest{})
		if err == nil {
			var shards []uint32
			for _, si := range info.GetShardInfos() {
				if si.GetShardId() != 0 {
					shards = append(shards, si.GetShardId())
				}
			}
			if len(shards) == 0 {
				for i := uint32(1); i <= info.GetNumShards(); i++ {
					shards = append(shards, i)
				}
			}
			if len(shards) == 0 {
				return nil, errors.New("ingest: the node reports no data shards")
			}
			slices.Sort(shards)
			return slices.Compact(shards), nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d := bo.next()
		in.log.Warn("ingest: GetInfo failed, retrying", "err", err, "in", d)
		if !sleep(ctx, d) {
			return nil, fmt.Errorf("ingest: discover shards: %w", err)
		}
	}
}

// ShardStats is a snapshot of one shard's progress.
type ShardStats struct {
	Shard uint32
	// Received counts events read from the node (including repairs).
	Received uint64
	// Published counts events the server acknowledged or that were found
	// already in the stream; Duplicates is the part already stored
	// (recognised by the server's duplicate window or by the read back).
	Published  uint64
	Duplicates uint64
	// Checkpoint is the highest acknowledged event id (HasCheckpoint false
	// before the first); SavedCheckpoint is the last one written.
	Checkpoint      uint64
	HasCheckpoint   bool
	SavedCheckpoint uint64
	// Repaired counts events fetched with GetEvents to complete a block.
	Repaired uint64
	// Gaps counts gaps reported to the gap handler.
	Gaps uint64
	// Reconnects counts subscriptions ended by an error, a stall or a
	// failed publish.
	Reconnects uint64
	// LastEventID and LastEventAt describe the latest event received.
	LastEventID uint64
	LastEventAt time.Time
}

// Stats is a snapshot of an ingester's progress.
type Stats struct {
	Shards []ShardStats
	// InFlight and InFlightBytes are the publishes awaiting acks.
	InFlight      int
	InFlightBytes int
}

// Stats returns a snapshot; it is safe to call while Run runs.
func (in *Ingester) Stats() Stats {
	in.mu.Lock()
	list := in.shards
	in.mu.Unlock()
	var st Stats
	for _, s := range list {
		st.Shards = append(st.Shards, s.snapshot())
	}
	st.InFlight, st.InFlightBytes = in.lim.inFlight()
	return st
}
