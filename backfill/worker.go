package backfill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/telemetry"
)

// Defaults of WorkerOptions.
const (
	DefaultConcurrency = 50
	DefaultPageSize    = 1000
	DefaultMaxRate     = 500.0 // requests/s to the hub
	// A few large writes at a time cost the database far less per message
	// than many small ones at once: with 2 writes of up to 5,000 events,
	// Postgres spent 28-36 µs of CPU per message of a benchmark backfill,
	// against 41-46 µs with 8 writes of up to 1,000, and the backfill at
	// concurrency 100 went from 18-26k to 30-37k msgs/s on two cores.
	// While both writes run, the next batch grows with the pages arriving.
	DefaultWriteBatch       = 5000
	DefaultWriteConcurrency = 2
)

// Writer stores events; backfill pages arrive as synthetic merge events
// with id 0. The sink's writer, adapted, is the production implementation.
type Writer interface {
	Write(ctx context.Context, events []*pb.HubEvent) error
}

// WriterFunc adapts a function to Writer.
type WriterFunc func(ctx context.Context, events []*pb.HubEvent) error

// Write calls f.
func (f WriterFunc) Write(ctx context.Context, events []*pb.HubEvent) error { return f(ctx, events) }

// Hub is the part of the HubService client the workers use;
// pb.HubServiceClient implements it. The client should allow responses of
// PageSize messages (raise gRPC's 4 MiB default receive limit).
type Hub interface {
	GetAllCastMessagesByFid(ctx context.Context, in *pb.FidTimestampRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetAllReactionMessagesByFid(ctx context.Context, in *pb.FidTimestampRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetAllLinkMessagesByFid(ctx context.Context, in *pb.FidTimestampRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetAllVerificationMessagesByFid(ctx context.Context, in *pb.FidTimestampRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetAllUserDataMessagesByFid(ctx context.Context, in *pb.FidTimestampRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetAllLendStorageMessagesByFid(ctx context.Context, in *pb.FidTimestampRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetLinkCompactStateMessageByFid(ctx context.Context, in *pb.FidRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetOnChainEvents(ctx context.Context, in *pb.OnChainEventRequest, opts ...grpc.CallOption) (*pb.OnChainEventResponse, error)
	GetUserNameProofsByFid(ctx context.Context, in *pb.FidRequest, opts ...grpc.CallOption) (*pb.UsernameProofsResponse, error)

	// Live adds only, for reconciliation.
	GetCastsByFid(ctx context.Context, in *pb.FidRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetReactionsByFid(ctx context.Context, in *pb.ReactionsByFidRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetLinksByFid(ctx context.Context, in *pb.LinksByFidRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetVerificationsByFid(ctx context.Context, in *pb.FidRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
	GetUserDataByFid(ctx context.Context, in *pb.FidRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)
}

// ReasonWrongFID is the dead-letter reason of a message the hub returned
// for a FID it does not belong to.
const ReasonWrongFID message.Reason = "wrong_fid"

// DeadLetter is a message a worker refused to write.
type DeadLetter struct {
	FID     uint64
	Type    DataType
	Message *pb.Message
	Reason  message.Reason
	Err     error
}

// WorkerOptions configures a Worker. The zero value is usable.
type WorkerOptions struct {
	// Name identifies the worker in the queue (who holds a job); default
	// host-pid-random.
	Name string
	// Concurrency is the number of FIDs in flight; DefaultConcurrency when 0.
	Concurrency int
	// PageSize is the number of messages requested per page;
	// DefaultPageSize when 0.
	PageSize uint32
	// Validation is how much of each message is checked before writing
	// (message.Validate); Network is the network CheckFull requires
	// (FARCASTER_NETWORK_NONE accepts any).
	Validation message.Mode
	Network    pb.FarcasterNetwork
	// DeadLetter receives every message that failed validation, with the
	// reason; nil logs them at warning level.
	DeadLetter func(ctx context.Context, d DeadLetter)
	// MaxRate is the ceiling of requests per second to the hub;
	// DefaultMaxRate when 0. MinRate (default MaxRate/100) is the floor the
	// adaptive limiter backs off to, InitialRate (default MaxRate/2) where
	// it starts.
	MaxRate, MinRate, InitialRate float64
	// RequestTimeout bounds one hub request; default 30s.
	RequestTimeout time.Duration
	// RequestRetries is how often a request failing with a transient code
	// (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED) is sent again
	// before the FID fails; default 5, negative for none.
	RequestRetries int
	// WriteBatch is the number of events at which pages handed in by
	// concurrent fetchers are combined into one Write; a page waits at most
	// WriteLinger (default 50ms) for others to join it, and at most
	// WriteConcurrency (default DefaultWriteConcurrency; give the writer's
	// pool as many connections) combined writes run at once, each bounded
	// by WriteTimeout (default 2m). Default DefaultWriteBatch, or PageSize
	// if larger, so that a full page goes out at once; negative writes
	// every page on its own.
	WriteBatch       int
	WriteLinger      time.Duration
	WriteConcurrency int
	WriteTimeout     time.Duration
	// PollInterval is the longest pause between claims on an empty queue;
	// default 1s.
	PollInterval time.Duration
	// Store is the Postgres side of reconciliation; reconcile jobs fail
	// without it.
	Store Store
	// Logger defaults to slog.Default(); TracerProvider to the global one.
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// Metrics, when set, counts the messages fetched and the dead letters.
	Metrics *telemetry.Metrics
}

// Worker claims jobs from a Queue and copies their FIDs from the hub to the
// writer.
type Worker struct {
	q      *Queue
	hub    Hub
	w      Writer
	o      WorkerOptions
	lim    *aimd
	log    *slog.Logger
	tracer trace.Tracer
	stats  workerCounters
}

type workerCounters struct {
	jobsDone, jobsFailed, fidsDone, fidsFailed atomic.Int64
	messages, events, pages, requests          atomic.Int64
	deadLetters, retries, deleted              atomic.Int64
}

// WorkerStats are a worker's counters since it was created.
type WorkerStats struct {
	JobsDone, JobsFailed int64
	FIDsDone, FIDsFailed int64
	Messages             int64 // messages written
	Events               int64 // on-chain events and username proofs written
	Pages, Requests      int64
	Retries              int64 // requests sent again after a transient error
	DeadLetters          int64
	Deleted              int64 // rows reconciliation marked deleted
	Rate                 float64
}

// NewWorker returns a worker taking jobs from q (nil for a worker used only
// through Backfill and Reconcile), reading from hub and writing to w.
func NewWorker(q *Queue, hub Hub, w Writer, o WorkerOptions) *Worker {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.PageSize == 0 {
		o.PageSize = DefaultPageSize
	}
	if o.MaxRate <= 0 {
		o.MaxRate = DefaultMaxRate
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.RequestRetries == 0 {
		o.RequestRetries = 5
	}
	if o.WriteBatch == 0 {
		o.WriteBatch = max(DefaultWriteBatch, int(o.PageSize))
	}
	if o.WriteLinger <= 0 {
		o.WriteLinger = 50 * time.Millisecond
	}
	if o.WriteConcurrency <= 0 {
		o.WriteConcurrency = DefaultWriteConcurrency
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 2 * time.Minute
	}
	if o.PollInterval <= 0 {
		o.PollInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.TracerProvider == nil {
		o.TracerProvider = otel.GetTracerProvider()
	}
	if o.Name == "" {
		host, _ := os.Hostname()
		o.Name = host + "-" + strconv.Itoa(os.Getpid()) + "-" + newToken()[:6]
	}
	if o.WriteBatch > 0 {
		w = newBatcher(w, o.WriteBatch, int(o.PageSize), o.WriteLinger, o.WriteTimeout, o.WriteConcurrency)
	}
	return &Worker{
		q: q, hub: hub, w: w, o: o,
		lim:    newAIMD(o.InitialRate, o.MinRate, o.MaxRate),
		log:    o.Logger.With("component", "backfill", "worker", o.Name),
		tracer: o.TracerProvider.Tracer("github.com/waypointhq/waypoint/backfill"),
	}
}

// Stats returns the worker's counters.
func (w *Worker) Stats() WorkerStats {
	s := &w.stats
	return WorkerStats{
		JobsDone: s.jobsDone.Load(), JobsFailed: s.jobsFailed.Load(),
		FIDsDone: s.fidsDone.Load(), FIDsFailed: s.fidsFailed.Load(),
		Messages: s.messages.Load(), Events: s.events.Load(), Pages: s.pages.Load(), Requests: s.requests.Load(),
		Retries: s.retries.Load(), DeadLetters: s.deadLetters.Load(), Deleted: s.deleted.Load(), Rate: w.lim.Rate(),
	}
}

// Run claims and processes jobs until ctx is done. At most Concurrency FIDs
// are in flight, and at most one claimed job waits for free slots, so a
// worker does not hoard jobs other workers could run. When ctx ends, the
// jobs in hand are released back to the queue unfinished, and Run returns
// nil.
func (w *Worker) Run(ctx context.Context) error {
	if w.q == nil {
		return errors.New("run backfill worker: no queue")
	}
	slots := make(chan struct{}, w.o.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	idle := 20 * time.Millisecond
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		j, err := w.q.Claim(ctx, w.o.Name)
		if err != nil || j == nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				w.log.Warn("claim backfill job", "err", err)
			}
			if !sleep(ctx, idle) {
				return nil
			}
			idle = min(idle*2, w.o.PollInterval)
			continue
		}
		idle = 20 * time.Millisecond
		started := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.runJob(ctx, j, slots, started)
		}()
		select {
		case <-started:
		case <-ctx.Done():
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// runJob processes j's FIDs, each in a slot; it holds one slot on entry and
// closes started once every FID has a slot. It renews the lease until the
// FIDs finish, then completes, fails or (when ctx ended) releases the job.
func (w *Worker) runJob(ctx context.Context, j *Job, slots chan struct{}, started chan struct{}) {
	jctx, span := w.tracer.Start(j.Context(ctx), telemetry.SpanBackfillJob, trace.WithAttributes(
		attribute.String("backfill.job.id", j.ID),
		attribute.String("backfill.job.kind", string(j.Kind)),
		attribute.Int("backfill.job.fids", len(j.FIDs)),
		attribute.Int("backfill.job.attempt", j.Attempt),
	))
	defer span.End()
	jctx, cancel := context.WithCancelCause(jctx)
	defer cancel(nil)

	hbDone := make(chan struct{})
	go w.heartbeat(jctx, j, cancel, hbDone)

	var (
		mu     sync.Mutex
		failed = map[uint64]error{}
		fwg    sync.WaitGroup
	)
	first := true
start:
	for _, fid := range j.FIDs {
		if !first {
			select {
			case slots <- struct{}{}:
			case <-jctx.Done():
				break start
			}
		}
		first = false
		fwg.Add(1)
		go func() {
			defer fwg.Done()
			defer func() { <-slots }()
			if err := w.processFID(jctx, j, fid); err != nil {
				mu.Lock()
				failed[fid] = err
				mu.Unlock()
			}
		}()
	}
	if first { // a job without FIDs never took its slot
		<-slots
	}
	close(started)
	fwg.Wait()
	cancel(nil)
	<-hbDone

	// Acknowledge even when ctx is done: the outcome is known and the
	// context of the acknowledgement must outlive the worker's.
	actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer acancel()
	switch {
	case errors.Is(context.Cause(jctx), ErrLeaseLost):
		w.log.Warn("backfill job lease lost; another worker took it over", "job", j.ID)
		span.SetStatus(codes.Error, "lease lost")
	case ctx.Err() != nil:
		if err := w.q.Release(actx, j); err != nil {
			w.log.Warn("release backfill job on shutdown", "job", j.ID, "err", err)
		}
	case len(failed) == 0:
		if err := w.q.Complete(actx, j); err != nil {
			w.log.Warn("complete backfill job", "job", j.ID, "err", err)
			return
		}
		w.stats.jobsDone.Add(1)
		w.stats.fidsDone.Add(int64(len(j.FIDs)))
	default:
		fids := make([]uint64, 0, len(failed))
		msgs := make([]string, 0, len(failed))
		for _, fid := range j.FIDs {
			if err, ok := failed[fid]; ok {
				fids = append(fids, fid)
				msgs = append(msgs, err.Error())
			}
		}
		cause := fmt.Errorf("%d of %d fids failed: %s", len(fids), len(j.FIDs), strings.Join(msgs, "; "))
		span.RecordError(cause)
		span.SetStatus(codes.Error, "fids failed")
		retry, err := w.q.Fail(actx, j, cause, fids...)
		if err != nil {
			w.log.Warn("record failed backfill job", "job", j.ID, "err", err)
			return
		}
		w.stats.fidsDone.Add(int64(len(j.FIDs) - len(fids)))
		w.stats.fidsFailed.Add(int64(len(fids)))
		if !retry {
			w.stats.jobsFailed.Add(1)
		}
		w.log.Warn("backfill job failed", "job", j.ID, "attempt", j.Attempt, "will_retry", retry, "err", cause)
	}
}

// heartbeat renews j's lease every third of the visibility timeout and
// cancels the job with ErrLeaseLost if the queue says another worker has it.
func (w *Worker) heartbeat(ctx context.Context, j *Job, cancel context.CancelCauseFunc, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(w.q.VisibilityTimeout() / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			err := w.q.Extend(ctx, j)
			if errors.Is(err, ErrLeaseLost) {
				cancel(ErrLeaseLost)
				return
			}
			if err != nil && ctx.Err() == nil {
				w.log.Warn("renew backfill job lease", "job", j.ID, "err", err)
			}
		}
	}
}

func (w *Worker) processFID(ctx context.Context, j *Job, fid uint64) error {
	ctx, span := w.tracer.Start(ctx, "backfill.fid", trace.WithAttributes(attribute.Int64("farcaster.fid", int64(fid))))
	defer span.End()
	var err error
	switch j.Kind {
	case KindBackfill, KindUserData:
		err = w.Backfill(ctx, fid, j.types()...)
	case KindReconcile:
		_, err = w.Reconcile(ctx, fid, j.types()...)
	default:
		err = fmt.Errorf("unknown job kind %q", j.Kind)
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "fid failed")
		return fmt.Errorf("fid %d: %w", fid, err)
	}
	return nil
}

// call sends one hub request through the rate limiter, sending it again
// after transient errors.
func (w *Worker) call(ctx context.Context, fn func(ctx context.Context) error) error {
	for attempt := 0; ; attempt++ {
		if err := w.lim.Wait(ctx); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, w.o.RequestTimeout)
		start := time.Now()
		err := fn(rctx)
		cancel()
		w.stats.requests.Add(1)
		w.lim.Observe(time.Since(start), err)
		if err == nil || ctx.Err() != nil || !retryable(err) || attempt >= w.o.RequestRetries {
			if err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		w.stats.retries.Add(1)
		d := time.Duration(float64(100*time.Millisecond) * float64(int(1)<<min(attempt, 6)) * (0.5 + rand.Float64()))
		if !sleep(ctx, min(d, 5*time.Second)) {
			return ctx.Err()
		}
	}
}

func (w *Worker) deadLetter(ctx context.Context, d DeadLetter) {
	w.stats.deadLetters.Add(1)
	if m := w.o.Metrics; m != nil {
		m.DeadLetters.WithLabelValues("backfill", string(d.Reason)).Inc()
	}
	if w.o.DeadLetter != nil {
		w.o.DeadLetter(ctx, d)
		return
	}
	w.log.Warn("backfill message rejected", "fid", d.FID, "type", d.Type, "reason", d.Reason,
		"hash", fmt.Sprintf("%x", d.Message.GetHash()), "err", d.Err)
}
