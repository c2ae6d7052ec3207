package sink

// Consumer groups
//
// Run drains the events stream into Postgres with any number of replicas,
// in one process or many, keeping each FID's events in stream order.
//
// Every partition has one durable pull consumer per group
// ("<group>-p<partition>", bus.GroupConsumer) with a pinned-client priority
// group: the server delivers a partition's messages to one pulling client
// at a time (the pinned one) and moves the pin only after that client sent
// no pull request for PinnedTTL or was unpinned explicitly. The consumer's
// MaxAckPending equals PullSize and a replica holds at most one pulled
// chunk per partition, so while a chunk is unacknowledged nobody, pinned or
// not, is given later messages of that partition: after a replica dies,
// its chunk is redelivered (after AckWait) before anything newer. Both
// together make processing per partition exclusive and in order, even
// while replicas disagree about who owns what.
//
// Pulls ask for one message more than MaxAckPending, so the server ends
// them by expiry (or bytes), never by count: on a replicated consumer the
// status that ends a count-filled pull overtakes the deliveries still
// waiting for replication, and the client drops those.
//
// Which replica pulls which partition is decided without coordination:
// every replica heartbeats into the key-value bucket
// waypoint_sink_members (key "<group>.<replica id>", entries expire after
// MemberTTL), watches it, and takes the partitions that rendezvous hashing
// of (replica id, partition) assigns it among the live members. A joining
// replica takes over about 1/N of the partitions, a leaving one hands its
// partitions on: on a graceful stop a replica finishes (or abandons,
// unacknowledged, after ShutdownTimeout) its current batch, acknowledges
// it, deletes its member key and unpins its consumers, so the new owners
// start at once.
//
// Failover time. Graceful leave: one batch plus a round trip. A replica
// that dies or stalls: its member key expires after MemberTTL (default 6s),
// the new owner's pulls are served once the pin expires, PinnedTTL
// (default 5s) after the last pull, and the unacknowledged batch comes
// back after AckWait (default 10s) from its delivery; so a partition
// resumes within max(MemberTTL, PinnedTTL, AckWait) ≈ 10s with the
// defaults. Long writes do not trigger redelivery: the held batch is
// marked in progress every AckWait/3.
//
// Each batch: every partition a replica owns is pulled by its own worker,
// up to PullSize messages (or MaxBatchBytes) waiting at most BatchTimeout,
// and the chunks pulled at about the same time are written together, up to
// BatchSize messages and MaxBatchBytes in all, so a transaction stays large
// when traffic is spread over many partitions. A worker pulls again only
// after its chunk was acknowledged: a partition has at most one chunk in
// flight and its messages are written in stream order. A replica gathers
// and prepares its next batch while the previous one is written (the two
// never share a partition). For a batch: skip
// what the Redis dedupe cache says is stored; decode and validate the rest
// (failures go to dead_letters and the dead-letter stream); write them in
// one transaction; record them in the cache; acknowledge every message. If
// Postgres fails, the write is retried with backoff while the batch and the
// chunks waiting for it stay in progress and nothing more is pulled.
// Memory is bounded by one chunk per held partition, MaxPulledBytes in all. On a graceful stop
// the chunks already pulled are still written, within ShutdownTimeout;
// what is left then is negatively acknowledged for the next owner.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/telemetry"
)

// Defaults for Options fields left zero.
const (
	DefaultGroup           = "sink"
	DefaultBatchSize       = 5000
	DefaultPullSize        = 1000
	DefaultBatchTimeout    = 100 * time.Millisecond
	DefaultMaxBatchBytes   = 32 << 20
	DefaultMaxPulledBytes  = 128 << 20
	DefaultAckWait         = 10 * time.Second
	DefaultPinnedTTL       = 5 * time.Second
	DefaultMemberTTL       = 6 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
	DefaultMemberBucket    = "waypoint_sink_members"
)

// New gives up creating the group's consumers, dead-letter stream and
// member bucket after setupTimeout, and retries a request that got no
// reply within setupAttemptTimeout.
const (
	setupTimeout        = time.Minute
	setupAttemptTimeout = 5 * time.Second
)

// Options configures Run. Zero values take the defaults above.
type Options struct {
	Bus  *bus.Bus
	Pool *pgxpool.Pool
	// Redis holds the dedupe cache; nil turns deduplication off (the
	// writer is idempotent, so this only costs redundant writes). An
	// event stays in the cache for DedupeTTL after its commit, and the
	// cache keeps at most the DedupeMaxEntries newest (DefaultDedupeTTL,
	// DefaultDedupeMaxEntries if zero). The cache is the sorted set
	// DedupePrefix (DefaultDedupePrefix if empty) followed by the
	// database's instance id.
	Redis            *redis.Client
	DedupeTTL        time.Duration
	DedupeMaxEntries int
	DedupePrefix     string

	// Replicas is the number of replicas this process runs; each has its
	// own Writer and writes one batch at a time.
	Replicas  int
	BatchSize int
	// PullSize is the most messages one pull of a partition takes, and
	// the partition consumer's MaxAckPending; at most BatchSize. A batch
	// gathers the chunks of several partitions, so a large BatchSize does
	// not make every partition hold that many messages pulled.
	PullSize      int
	BatchTimeout  time.Duration
	MaxBatchBytes int
	// MaxPulledBytes bounds the payload bytes of messages the process has
	// pulled and not yet acknowledged: each pull asks for at most
	// MaxPulledBytes divided by the partitions the process holds (and at
	// most MaxBatchBytes). A message larger than that share is pulled
	// alone.
	MaxPulledBytes int

	Validate message.Mode
	Network  pb.FarcasterNetwork

	WriterOptions []WriterOption
	Logger        *slog.Logger
	// Group names the consumer group; processes with the same group share
	// the partitions.
	Group string

	AckWait         time.Duration
	PinnedTTL       time.Duration
	MemberTTL       time.Duration
	ShutdownTimeout time.Duration
	// DeadLetterStream is the JetStream stream poison messages are
	// republished to (bus.DefaultDeadLetterStream).
	DeadLetterStream string
	MemberBucket     string

	// OnBatch, when set, is called after each batch committed and before
	// it is acknowledged, from the goroutine that processed it.
	OnBatch func(BatchInfo)

	// TracerProvider and Propagator trace each message (a sink.process
	// span continuing the trace in its headers) and each batch (a
	// sink.commit span linked to the process spans of the messages it
	// wrote). Nil TracerProvider turns tracing off; nil Propagator is
	// the W3C trace context.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Metrics, when set, receives the sink's batch, latency, rows,
	// dedupe, dead-letter and pending metrics.
	Metrics *telemetry.Metrics
}

// BatchInfo describes one committed batch.
type BatchInfo struct {
	Replica string
	// Partitions lists the batch's messages by partition.
	Partitions []PartitionSeqs
	// Written, Duplicates and DeadLetters count its messages by fate.
	Written, Duplicates, DeadLetters int
}

// PartitionSeqs are the stream sequences of one partition's messages in a
// batch, in order.
type PartitionSeqs struct {
	Partition int
	Seqs      []uint64
}

// Stats is a snapshot of a Sink's counters since it was created.
type Stats struct {
	Batches        int64
	Messages       int64 // acknowledged
	Written        int64 // events given to the writer
	DeadLetters    int64 // poison messages dead-lettered by the consumer
	WriterDead     int64 // records the writer dead-lettered
	WriteRetries   int64
	DedupeHits     int64
	DedupeMisses   int64
	DedupeErrors   int64
	Replicas       int64 // live replicas in this process
	PartitionsHeld int64 // partitions currently consumed by them
}

// Sink runs the replicas of one consumer group.
type Sink struct {
	opts   Options
	log    *slog.Logger
	dedup  *dedupe
	tracer trace.Tracer

	batches, messages, written, dead, writerDead, retries atomic.Int64
	replicas, held                                        atomic.Int64
}

// Run creates a Sink and runs it until ctx is done.
func Run(ctx context.Context, opts Options) error {
	s, err := New(ctx, opts)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// New checks opts and creates the group's consumers, the dead-letter
// stream and the member bucket.
func New(ctx context.Context, opts Options) (*Sink, error) {
	if opts.Bus == nil || opts.Pool == nil {
		return nil, errors.New("sink: options need a bus and a pool")
	}
	if opts.Group == "" {
		opts.Group = DefaultGroup
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.PullSize <= 0 {
		opts.PullSize = DefaultPullSize
	}
	opts.PullSize = min(opts.PullSize, opts.BatchSize)
	if opts.BatchTimeout <= 0 {
		opts.BatchTimeout = DefaultBatchTimeout
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if opts.MaxPulledBytes <= 0 {
		opts.MaxPulledBytes = DefaultMaxPulledBytes
	}
	if opts.AckWait <= 0 {
		opts.AckWait = DefaultAckWait
	}
	// A pull's messages are delivered when it starts and kept in progress
	// only once it ends, up to BatchTimeout later: by then AckWait must
	// not have run out, or the server redelivers them, out of order, to
	// whoever pulls next.
	if opts.BatchTimeout > opts.AckWait/3 {
		return nil, fmt.Errorf("sink: batch timeout %v is over a third of the ack wait %v: pulled messages would be redelivered before they are written", opts.BatchTimeout, opts.AckWait)
	}
	if opts.PinnedTTL <= 0 {
		opts.PinnedTTL = DefaultPinnedTTL
	}
	if opts.MemberTTL <= 0 {
		opts.MemberTTL = DefaultMemberTTL
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if opts.DeadLetterStream == "" {
		opts.DeadLetterStream = bus.DefaultDeadLetterStream
	}
	if opts.MemberBucket == "" {
		opts.MemberBucket = DefaultMemberBucket
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = noop.NewTracerProvider()
	}
	if opts.Propagator == nil {
		opts.Propagator = propagation.TraceContext{}
	}
	if !validKeyToken(opts.Group) {
		return nil, fmt.Errorf("sink: group %q may hold only letters, digits, '-' and '_'", opts.Group)
	}
	s := &Sink{opts: opts, log: opts.Logger.With("component", "sink", "group", opts.Group),
		tracer: opts.TracerProvider.Tracer("github.com/waypointhq/waypoint/sink")}
	if opts.Redis != nil {
		// The cache says "committed to this database": scope it to the
		// database's instance id so another database behind the same Redis
		// is never skipped into.
		var id string
		if err := opts.Pool.QueryRow(ctx, `SELECT id::text FROM waypoint_instance`).Scan(&id); err != nil {
			return nil, fmt.Errorf("sink: read database instance id (run migrations first): %w", err)
		}
		prefix := opts.DedupePrefix
		if prefix == "" {
			prefix = DefaultDedupePrefix
		}
		s.dedup = newDedupe(opts.Redis, prefix+id, opts.DedupeTTL, opts.DedupeMaxEntries)
		s.dedup.metrics = opts.Metrics
	}
	// Replicas starting together on a fresh cluster race to create the same
	// consumers, stream and bucket. The cluster answers some of those
	// requests with errors and some not at all: of two identical creates
	// of a replicated stream proposed together, the server may reply to
	// neither. So every attempt has its own timeout (a deadline on the
	// context turns the client's default request timeout off) and is
	// retried, with a warning each time, within an overall bound that keeps
	// a real misconfiguration from hanging start-up.
	sctx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()
	setup := func(what string, f func(ctx context.Context) error) error {
		var last error
		err := retry(sctx, s.log, what, func() error {
			actx, cancel := context.WithTimeout(sctx, setupAttemptTimeout)
			defer cancel()
			last = f(actx)
			if last != nil && actx.Err() != nil && sctx.Err() == nil {
				last = fmt.Errorf("no reply from the server within %v: %w", setupAttemptTimeout, last)
			}
			return last
		})
		if err != nil && last != nil {
			err = last
		}
		if err != nil {
			return fmt.Errorf("sink: %s: %w", what, err)
		}
		return nil
	}
	for p := 0; p < opts.Bus.Partitions(); p++ {
		err := setup(fmt.Sprintf("create consumer %s", bus.ConsumerName(opts.Group, p)), func(ctx context.Context) error {
			_, err := opts.Bus.GroupConsumer(ctx, opts.Group, p, bus.ConsumerOptions{
				AckWait:       opts.AckWait,
				MaxAckPending: opts.PullSize,
			}, opts.PinnedTTL)
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	if err := setup("create dead-letter stream", func(ctx context.Context) error {
		_, err := opts.Bus.DeadLetterStream(ctx, opts.DeadLetterStream)
		return err
	}); err != nil {
		return nil, err
	}
	if err := setup("create member bucket", func(ctx context.Context) error {
		_, err := opts.Bus.MemberBucket(ctx, opts.MemberBucket, opts.MemberTTL)
		return err
	}); err != nil {
		return nil, err
	}
	return s, nil
}

// Run runs opts.Replicas replicas until ctx is done, then stops them
// within about ShutdownTimeout.
func (s *Sink) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, s.opts.Replicas)
	for i := range s.opts.Replicas {
		wg.Go(func() {
			errs[i] = s.runReplica(ctx, s.opts.Bus.JetStream(), "")
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Stats returns a snapshot of the counters.
func (s *Sink) Stats() Stats {
	st := Stats{
		Batches:        s.batches.Load(),
		Messages:       s.messages.Load(),
		Written:        s.written.Load(),
		DeadLetters:    s.dead.Load(),
		WriterDead:     s.writerDead.Load(),
		WriteRetries:   s.retries.Load(),
		Replicas:       s.replicas.Load(),
		PartitionsHeld: s.held.Load(),
	}
	if s.dedup != nil {
		st.DedupeHits = s.dedup.hits.Load()
		st.DedupeMisses = s.dedup.misses.Load()
		st.DedupeErrors = s.dedup.errors.Load()
	}
	return st
}

func validKeyToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
		default:
			return false
		}
	}
	return true
}
