package backfill

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"math"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/waypointhq/waypoint/telemetry"
)

// ErrLeaseLost is returned when a job is acknowledged, failed, renewed or
// released under a lease it no longer holds: its visibility timeout ran out
// and another worker took it over (or will).
var ErrLeaseLost = errors.New("backfill: job lease lost")

// Defaults of the queue options.
const (
	DefaultPrefix            = "waypoint:backfill:"
	DefaultVisibilityTimeout = 2 * time.Minute
	DefaultMaxAttempts       = 5
	DefaultBatchSize         = 50
)

// Queue is the Redis backfill job queue. It is safe for concurrent use.
type Queue struct {
	rdb         redis.UniversalClient
	prefix      string
	visibility  time.Duration
	maxAttempts int
	backoffBase time.Duration
	backoffMax  time.Duration
	tracer      trace.Tracer
}

// QueueOption configures a Queue.
type QueueOption func(*Queue)

// WithPrefix sets the prefix of every key the queue uses. All of them must
// live on one Redis node; for Redis Cluster put a hash tag in the prefix.
func WithPrefix(p string) QueueOption { return func(q *Queue) { q.prefix = p } }

// WithVisibilityTimeout sets how long a claimed job stays with its worker
// without a lease renewal before another worker may take it over.
func WithVisibilityTimeout(d time.Duration) QueueOption {
	return func(q *Queue) { q.visibility = d }
}

// WithMaxAttempts sets how many claims a job gets before it is parked in
// the failed set.
func WithMaxAttempts(n int) QueueOption { return func(q *Queue) { q.maxAttempts = n } }

// WithBackoff sets the retry delay after a failed attempt: base doubled per
// attempt, capped at max, with ±20% jitter.
func WithBackoff(base, max time.Duration) QueueOption {
	return func(q *Queue) { q.backoffBase, q.backoffMax = base, max }
}

// WithTracerProvider traces each Enqueue as a backfill.enqueue span, whose
// context the queued jobs carry, so a job's work joins the enqueue's trace.
// The default records nothing but still passes the caller's trace on.
func WithTracerProvider(tp trace.TracerProvider) QueueOption {
	return func(q *Queue) {
		if tp != nil {
			q.tracer = tp.Tracer("github.com/waypointhq/waypoint/backfill")
		}
	}
}

// NewQueue returns the queue stored in rdb.
func NewQueue(rdb redis.UniversalClient, opts ...QueueOption) *Queue {
	q := &Queue{
		rdb:         rdb,
		prefix:      DefaultPrefix,
		visibility:  DefaultVisibilityTimeout,
		maxAttempts: DefaultMaxAttempts,
		backoffBase: 2 * time.Second,
		backoffMax:  5 * time.Minute,
		tracer:      noop.NewTracerProvider().Tracer(""),
	}
	for _, o := range opts {
		o(q)
	}
	if q.visibility < 10*time.Millisecond {
		q.visibility = 10 * time.Millisecond
	}
	if q.maxAttempts < 1 {
		q.maxAttempts = 1
	}
	return q
}

// VisibilityTimeout returns the lease duration of a claim.
func (q *Queue) VisibilityTimeout() time.Duration { return q.visibility }

func (q *Queue) key(name string) string { return q.prefix + name }

// EnqueueRequest describes FIDs to queue.
type EnqueueRequest struct {
	Kind  Kind       // KindBackfill when empty
	Types []DataType // nil: every type of Kind
	// Priority puts the jobs ahead of every normal job, and moves a waiting
	// job that already holds one of the FIDs to the front.
	Priority  bool
	BatchSize int // FIDs per job; DefaultBatchSize when 0
	// Total is the expected number of FIDs, reported back in progress for
	// a progress bar; 0 when unknown.
	Total int
	// Progress, if set, is called after every chunk written to Redis.
	Progress func(EnqueueProgress)
}

// EnqueueProgress reports how far an Enqueue call has got.
type EnqueueProgress struct {
	Seen    int // FIDs read from the source
	Queued  int // FIDs put into new jobs
	Skipped int // FIDs already pending for the same kind and types
	Jobs    int // jobs created
	Total   int // EnqueueRequest.Total
}

// EnqueueResult is what an Enqueue call did.
type EnqueueResult struct {
	Jobs     int // jobs created
	FIDs     int // FIDs put into new jobs
	Skipped  int // FIDs not queued again because a job for them is pending
	Promoted int // waiting jobs moved to the front by a priority request
}

// enqueueChunkFIDs bounds the FIDs one script call handles, since a script
// blocks Redis while it runs.
const enqueueChunkFIDs = 1000

// Enqueue queues the FIDs from src in jobs of req.BatchSize. A FID that
// already has an unfinished job of the same kind and types is skipped, so
// running the same enqueue twice queues nothing the second time. The trace
// context of ctx travels with every job.
func (q *Queue) Enqueue(ctx context.Context, src iter.Seq2[uint64, error], req EnqueueRequest) (EnqueueResult, error) {
	ctx, span := q.tracer.Start(ctx, telemetry.SpanBackfillEnqueue, trace.WithAttributes(
		attribute.String("backfill.job.kind", string(req.Kind)), attribute.Bool("backfill.priority", req.Priority)))
	defer span.End()
	res, err := q.enqueue(ctx, src, req)
	span.SetAttributes(attribute.Int("backfill.jobs", res.Jobs), attribute.Int("backfill.fids", res.FIDs))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "enqueue failed")
	}
	return res, err
}

func (q *Queue) enqueue(ctx context.Context, src iter.Seq2[uint64, error], req EnqueueRequest) (EnqueueResult, error) {
	var res EnqueueResult
	kind := req.Kind
	if kind == "" {
		kind = KindBackfill
	}
	if !kind.valid() {
		return res, fmt.Errorf("enqueue: unknown job kind %q", kind)
	}
	for _, t := range req.Types {
		if !isDataType(t) {
			return res, fmt.Errorf("enqueue: unknown data type %q", t)
		}
		if kind == KindUserData && t != UserData {
			return res, fmt.Errorf("enqueue: a user-data job fetches only %s, not %q", UserData, t)
		}
	}
	types := joinTypes(normalizeTypes(req.Types))
	if kind == KindUserData {
		types = ""
	}
	batch := req.BatchSize
	if batch <= 0 {
		batch = DefaultBatchSize
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	dedupe := string(kind) + ":" + types
	keys := []string{q.key("seq"), q.key("ready"), q.key("delayed"), q.key("pending:" + dedupe), q.key("stats")}
	head := []any{q.prefix, string(kind), dedupe, types, carrier["traceparent"], carrier["tracestate"], boolArg(req.Priority), batch}

	prog := EnqueueProgress{Total: req.Total}
	// Whole jobs per call, so that only the last job of a run is short.
	chunkSize := batch * max(1, enqueueChunkFIDs/batch)
	args := make([]any, 0, len(head)+chunkSize)
	chunk := 0
	flush := func() error {
		if chunk == 0 {
			return nil
		}
		out, err := enqueueScript.Run(ctx, q.rdb, keys, args...).Int64Slice()
		if err != nil {
			return fmt.Errorf("enqueue: run script: %w", err)
		}
		if len(out) != 4 {
			return fmt.Errorf("enqueue: unexpected script reply %v", out)
		}
		res.Jobs += int(out[0])
		res.FIDs += int(out[1])
		res.Skipped += int(out[2])
		res.Promoted += int(out[3])
		prog.Jobs, prog.Queued, prog.Skipped = res.Jobs, res.FIDs, res.Skipped
		if req.Progress != nil {
			req.Progress(prog)
		}
		args, chunk = append(args[:0], head...), 0
		return nil
	}
	args = append(args, head...)
	for fid, err := range src {
		if err != nil {
			return res, fmt.Errorf("enqueue: read fids: %w", err)
		}
		if fid == 0 {
			return res, errors.New("enqueue: fid 0 is not a valid fid")
		}
		prog.Seen++
		args = append(args, strconv.FormatUint(fid, 10))
		chunk++
		if chunk == chunkSize {
			if err := flush(); err != nil {
				return res, err
			}
		}
	}
	if err := flush(); err != nil {
		return res, err
	}
	return res, nil
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func isDataType(t DataType) bool { return slices.Contains(allDataTypes, t) }

// Claim hands the best-ranked ready job to worker under a new lease, or
// returns nil when no job is ready. Retries whose backoff has passed become
// ready first, and jobs whose lease expired are taken over (or failed, when
// they have used all their attempts).
func (q *Queue) Claim(ctx context.Context, worker string) (*Job, error) {
	lease := newToken()
	keys := []string{q.key("ready"), q.key("delayed"), q.key("inflight"), q.key("failed"), q.key("stats")}
	v, err := claimScript.Run(ctx, q.rdb, keys, q.prefix, worker, q.visibility.Milliseconds(), q.maxAttempts, lease).StringSlice()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim job: %w", err)
	}
	j, err := parseJob(v)
	if err != nil {
		return nil, fmt.Errorf("claim job: %w", err)
	}
	j.lease = lease
	return j, nil
}

func parseJob(v []string) (*Job, error) {
	if len(v)%2 != 1 {
		return nil, fmt.Errorf("malformed job reply of %d fields", len(v))
	}
	j := &Job{ID: v[0]}
	var err error
	for i := 1; i+1 < len(v); i += 2 {
		val := v[i+1]
		switch v[i] {
		case "kind":
			j.Kind = Kind(val)
		case "types":
			j.Types = splitTypes(val)
		case "fids":
			if j.FIDs, err = parseFIDList(val); err != nil {
				return nil, fmt.Errorf("job %s: %w", j.ID, err)
			}
		case "priority":
			j.Priority = val == "1"
		case "attempts":
			j.Attempt, _ = strconv.Atoi(val)
		case "last_error":
			j.LastError = val
		case "traceparent":
			j.TraceParent = val
		case "tracestate":
			j.TraceState = val
		case "enqueued_at":
			if ms, err := strconv.ParseInt(val, 10, 64); err == nil {
				j.EnqueuedAt = time.UnixMilli(ms)
			}
		}
	}
	return j, nil
}

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Complete acknowledges j: its FIDs count as done. It returns ErrLeaseLost
// if the job's lease expired and another worker took it over, in which case
// that worker's outcome counts.
func (q *Queue) Complete(ctx context.Context, j *Job) error {
	n, err := completeScript.Run(ctx, q.rdb, []string{q.key("inflight"), q.key("stats")}, q.prefix, j.ID, j.lease).Int()
	if err != nil {
		return fmt.Errorf("complete job %s: %w", j.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("complete job %s: %w", j.ID, ErrLeaseLost)
	}
	return nil
}

// Fail records that an attempt of j failed with cause. When fids is
// non-empty only those FIDs failed: the others count as done and the job
// keeps only the failed ones. The job is retried after a backoff, or moved
// to the failed set with cause as its last error once it has used all its
// attempts; retry reports which.
func (q *Queue) Fail(ctx context.Context, j *Job, cause error, fids ...uint64) (retry bool, err error) {
	msg := "unknown error"
	if cause != nil {
		msg = cause.Error()
	}
	for _, f := range fids {
		if !containsFID(j.FIDs, f) {
			return false, fmt.Errorf("fail job %s: fid %d is not in the job", j.ID, f)
		}
	}
	keys := []string{q.key("inflight"), q.key("delayed"), q.key("failed"), q.key("stats")}
	n, err := failScript.Run(ctx, q.rdb, keys, q.prefix, j.ID, j.lease, msg,
		q.backoff(j.Attempt).Milliseconds(), q.maxAttempts, formatFIDs(fids)).Int()
	if err != nil {
		return false, fmt.Errorf("fail job %s: %w", j.ID, err)
	}
	switch n {
	case 0:
		return false, fmt.Errorf("fail job %s: %w", j.ID, ErrLeaseLost)
	case 1:
		return true, nil
	}
	return false, nil
}

func containsFID(fids []uint64, f uint64) bool { return slices.Contains(fids, f) }

// backoff returns the delay before retry number attempt+1.
func (q *Queue) backoff(attempt int) time.Duration {
	d := float64(q.backoffBase) * math.Pow(2, float64(max(attempt-1, 0)))
	if d > float64(q.backoffMax) {
		d = float64(q.backoffMax)
	}
	d *= 0.8 + 0.4*mrand.Float64()
	return time.Duration(d)
}

// Extend renews j's lease for another visibility timeout. Workers call it
// while a job runs so that a long FID is not taken over.
func (q *Queue) Extend(ctx context.Context, j *Job) error {
	n, err := extendScript.Run(ctx, q.rdb, []string{q.key("inflight")}, q.prefix, j.ID, j.lease, q.visibility.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("extend lease of job %s: %w", j.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("extend lease of job %s: %w", j.ID, ErrLeaseLost)
	}
	return nil
}

// Release gives j back to the ready set unfinished, without spending an
// attempt; a worker that shuts down cleanly releases what it holds.
func (q *Queue) Release(ctx context.Context, j *Job) error {
	keys := []string{q.key("inflight"), q.key("ready"), q.key("stats")}
	n, err := releaseScript.Run(ctx, q.rdb, keys, q.prefix, j.ID, j.lease).Int()
	if err != nil {
		return fmt.Errorf("release job %s: %w", j.ID, err)
	}
	if n == 0 {
		return fmt.Errorf("release job %s: %w", j.ID, ErrLeaseLost)
	}
	return nil
}

// RetryFailed moves every failed job back to the queue with a fresh attempt
// budget and returns how many it moved.
func (q *Queue) RetryFailed(ctx context.Context) (int, error) {
	keys := []string{q.key("failed"), q.key("ready"), q.key("stats")}
	total := 0
	for {
		n, err := retryFailedScript.Run(ctx, q.rdb, keys, q.prefix, 200).Int()
		if err != nil {
			return total, fmt.Errorf("retry failed jobs: %w", err)
		}
		total += n
		if n == 0 {
			return total, nil
		}
	}
}

// FailedJob is a job in the failed set.
type FailedJob struct {
	ID        string
	Kind      Kind
	FIDs      []uint64
	Types     []DataType
	Attempts  int
	LastError string
	FailedAt  time.Time
}

// Failed lists up to limit failed jobs, oldest failure first.
func (q *Queue) Failed(ctx context.Context, limit int) ([]FailedJob, error) {
	if limit <= 0 {
		limit = 100
	}
	ids, err := q.rdb.ZRange(ctx, q.key("failed"), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("list failed jobs: %w", err)
	}
	pipe := q.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, q.key("job:"+id))
	}
	if _, err := pipe.Exec(ctx); err != nil && len(ids) > 0 {
		return nil, fmt.Errorf("list failed jobs: %w", err)
	}
	out := make([]FailedJob, 0, len(ids))
	for i, id := range ids {
		h := cmds[i].Val()
		fids, err := parseFIDList(h["fids"])
		if err != nil {
			return nil, fmt.Errorf("list failed jobs: job %s: %w", id, err)
		}
		attempts, _ := strconv.Atoi(h["attempts"])
		ms, _ := strconv.ParseInt(h["failed_at"], 10, 64)
		out = append(out, FailedJob{
			ID: id, Kind: Kind(h["kind"]), FIDs: fids, Types: splitTypes(h["types"]),
			Attempts: attempts, LastError: h["last_error"], FailedAt: time.UnixMilli(ms),
		})
	}
	return out, nil
}

// Count is a number of jobs and the FIDs they hold.
type Count struct {
	Jobs int64
	FIDs int64
}

// Status is a snapshot of the queue.
type Status struct {
	Queued     Count // ready to be claimed
	Retrying   Count // failed an attempt, waiting out the backoff
	InProgress Count // claimed by a worker
	Done       Count // completed since the queue was created
	Failed     Count // used all attempts; see Failed and RetryFailed
	// Throughput is the rate of completed FIDs over the last minute.
	Throughput float64
	// ETA is the time the unfinished FIDs take at Throughput; 0 when
	// nothing completed in the last minute.
	ETA time.Duration
}

// rateBuckets is how many 10 s completion buckets Status averages over.
const rateBuckets = 6

// Status returns queued, in-progress, done and failed counts, throughput
// and ETA.
func (q *Queue) Status(ctx context.Context) (Status, error) {
	var st Status
	now, err := q.rdb.Time(ctx).Result()
	if err != nil {
		return st, fmt.Errorf("queue status: redis time: %w", err)
	}
	bucket := now.UnixMilli() / 10000
	rateKeys := make([]string, rateBuckets)
	for i := range rateKeys {
		rateKeys[i] = q.key("rate:" + strconv.FormatInt(bucket-int64(i), 10))
	}
	pipe := q.rdb.Pipeline()
	ready := pipe.ZCard(ctx, q.key("ready"))
	delayed := pipe.ZCard(ctx, q.key("delayed"))
	inflight := pipe.ZCard(ctx, q.key("inflight"))
	failed := pipe.ZCard(ctx, q.key("failed"))
	stats := pipe.HGetAll(ctx, q.key("stats"))
	rates := pipe.MGet(ctx, rateKeys...)
	if _, err := pipe.Exec(ctx); err != nil {
		return st, fmt.Errorf("queue status: %w", err)
	}
	h := stats.Val()
	n := func(k string) int64 { v, _ := strconv.ParseInt(h[k], 10, 64); return v }
	st.Queued = Count{ready.Val(), n("queued_fids")}
	st.Retrying = Count{delayed.Val(), n("retry_fids")}
	st.InProgress = Count{inflight.Val(), n("inflight_fids")}
	st.Done = Count{n("done_jobs"), n("done_fids")}
	st.Failed = Count{failed.Val(), n("failed_fids")}
	var done int64
	for _, v := range rates.Val() {
		if s, ok := v.(string); ok {
			x, _ := strconv.ParseInt(s, 10, 64)
			done += x
		}
	}
	window := time.Duration(rateBuckets-1)*10*time.Second + time.Duration(now.UnixMilli()%10000)*time.Millisecond
	if done > 0 && window > 0 {
		st.Throughput = float64(done) / window.Seconds()
		remaining := st.Queued.FIDs + st.Retrying.FIDs + st.InProgress.FIDs
		st.ETA = time.Duration(float64(remaining) / st.Throughput * float64(time.Second))
	}
	return st, nil
}

// String formats s on one line for logs and the CLI.
func (s Status) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "queued %d jobs/%d fids, retrying %d/%d, in progress %d/%d, done %d/%d, failed %d/%d",
		s.Queued.Jobs, s.Queued.FIDs, s.Retrying.Jobs, s.Retrying.FIDs, s.InProgress.Jobs, s.InProgress.FIDs,
		s.Done.Jobs, s.Done.FIDs, s.Failed.Jobs, s.Failed.FIDs)
	if s.Throughput > 0 {
		fmt.Fprintf(&b, ", %.1f fids/s, eta %s", s.Throughput, s.ETA.Round(time.Second))
	}
	return b.String()
}
