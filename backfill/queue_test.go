package backfill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/waypointhq/waypoint/internal/testsupport"
)

func newTestQueue(t *testing.T, opts ...QueueOption) *Queue {
	t.Helper()
	r := testsupport.NewRedis(t)
	return NewQueue(r.Client, append([]QueueOption{WithPrefix(r.Prefix)}, opts...)...)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustEnqueue(t *testing.T, q *Queue, src []uint64, req EnqueueRequest) EnqueueResult {
	t.Helper()
	res, err := q.Enqueue(ctxT(t), FIDList(src...), req)
	if err != nil {
		t.Fatalf("enqueue %v: %v", src, err)
	}
	return res
}

func mustClaim(t *testing.T, q *Queue, worker string) *Job {
	t.Helper()
	j, err := q.Claim(ctxT(t), worker)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if j == nil {
		t.Fatalf("claim: queue is empty, want a job")
	}
	return j
}

func mustStatus(t *testing.T, q *Queue) Status {
	t.Helper()
	st, err := q.Status(ctxT(t))
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func fidRange(a, b uint64) []uint64 {
	var out []uint64
	for f := a; f <= b; f++ {
		out = append(out, f)
	}
	return out
}

func TestEnqueueIdempotent(t *testing.T) {
	q := newTestQueue(t)
	var progress []EnqueueProgress
	res := mustEnqueue(t, q, fidRange(1, 120), EnqueueRequest{Total: 120, Progress: func(p EnqueueProgress) { progress = append(progress, p) }})
	if res != (EnqueueResult{Jobs: 3, FIDs: 120}) {
		t.Fatalf("first enqueue = %+v, want 3 jobs of 120 fids", res)
	}
	if len(progress) == 0 || progress[len(progress)-1] != (EnqueueProgress{Seen: 120, Queued: 120, Jobs: 3, Total: 120}) {
		t.Fatalf("progress = %+v", progress)
	}

	tests := []struct {
		name string
		fids []uint64
		req  EnqueueRequest
		want EnqueueResult
	}{
		{"same fids again", fidRange(1, 120), EnqueueRequest{}, EnqueueResult{Skipped: 120}},
		{"overlap plus new", fidRange(100, 130), EnqueueRequest{}, EnqueueResult{Jobs: 1, FIDs: 10, Skipped: 21}},
		{"duplicates in one request", []uint64{500, 500, 501}, EnqueueRequest{}, EnqueueResult{Jobs: 1, FIDs: 2, Skipped: 1}},
		{"explicit all types equals default", []uint64{1, 2}, EnqueueRequest{Types: AllDataTypes()}, EnqueueResult{Skipped: 2}},
		{"other kind is separate", []uint64{1, 2}, EnqueueRequest{Kind: KindUserData}, EnqueueResult{Jobs: 1, FIDs: 2}},
		{"other kind again", []uint64{1, 2}, EnqueueRequest{Kind: KindUserData}, EnqueueResult{Skipped: 2}},
		{"type selection is separate", []uint64{1}, EnqueueRequest{Types: []DataType{Links, Casts}}, EnqueueResult{Jobs: 1, FIDs: 1}},
		{"same selection other order", []uint64{1}, EnqueueRequest{Types: []DataType{Casts, Links}}, EnqueueResult{Skipped: 1}},
		{"batch size", fidRange(1000, 1009), EnqueueRequest{BatchSize: 3}, EnqueueResult{Jobs: 4, FIDs: 10}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := mustEnqueue(t, q, tc.fids, tc.req); got != tc.want {
				t.Fatalf("enqueue = %+v, want %+v", got, tc.want)
			}
		})
	}
	st := mustStatus(t, q)
	if want := (Count{Jobs: 3 + 1 + 1 + 1 + 1 + 4, FIDs: 120 + 10 + 2 + 2 + 1 + 10}); st.Queued != want {
		t.Fatalf("queued = %+v, want %+v", st.Queued, want)
	}
}

func TestEnqueueLargeRangeChunks(t *testing.T) {
	q := newTestQueue(t)
	res, err := q.Enqueue(ctxT(t), FIDRange(1, 5000), EnqueueRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Jobs != 100 || res.FIDs != 5000 {
		t.Fatalf("enqueue 1..5000 = %+v, want 100 jobs", res)
	}
	// Every job is full: chunks hold whole jobs.
	seen := map[uint64]bool{}
	for {
		j, err := q.Claim(ctxT(t), "w")
		if err != nil {
			t.Fatal(err)
		}
		if j == nil {
			break
		}
		if len(j.FIDs) != DefaultBatchSize {
			t.Fatalf("job %s has %d fids", j.ID, len(j.FIDs))
		}
		for _, f := range j.FIDs {
			if seen[f] {
				t.Fatalf("fid %d in two jobs", f)
			}
			seen[f] = true
		}
	}
	if len(seen) != 5000 {
		t.Fatalf("claimed %d distinct fids, want 5000", len(seen))
	}
}

func TestEnqueueRejectsBadInput(t *testing.T) {
	q := newTestQueue(t)
	tests := []struct {
		name string
		fids []uint64
		req  EnqueueRequest
		want string
	}{
		{"fid zero", []uint64{1, 0}, EnqueueRequest{}, "fid 0"},
		{"unknown kind", []uint64{1}, EnqueueRequest{Kind: "nope"}, "unknown job kind"},
		{"unknown type", []uint64{1}, EnqueueRequest{Types: []DataType{"frames"}}, "unknown data type"},
		{"user-data job with casts", []uint64{1}, EnqueueRequest{Kind: KindUserData, Types: []DataType{Casts}}, "only user_data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := q.Enqueue(ctxT(t), FIDList(tc.fids...), tc.req)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	_, err := q.Enqueue(ctxT(t), func(yield func(uint64, error) bool) { yield(0, errors.New("hub down")) }, EnqueueRequest{})
	if err == nil || !strings.Contains(err.Error(), "hub down") {
		t.Fatalf("source error not reported: %v", err)
	}
}

func TestPriorityOrdering(t *testing.T) {
	q := newTestQueue(t)
	mustEnqueue(t, q, []uint64{1, 2, 3, 4, 5}, EnqueueRequest{BatchSize: 1})
	mustEnqueue(t, q, []uint64{100, 101}, EnqueueRequest{BatchSize: 1, Priority: true})
	// A priority request for a FID already waiting moves its job forward.
	if res := mustEnqueue(t, q, []uint64{4}, EnqueueRequest{Priority: true}); res != (EnqueueResult{Skipped: 1, Promoted: 1}) {
		t.Fatalf("priority re-enqueue = %+v, want the waiting job promoted", res)
	}
	mustEnqueue(t, q, []uint64{6}, EnqueueRequest{BatchSize: 1})
	var order []uint64
	for range 8 {
		j := mustClaim(t, q, "w")
		order = append(order, j.FIDs...)
		if j.Priority != slices.Contains([]uint64{100, 101, 4}, j.FIDs[0]) {
			t.Fatalf("job for fid %d has priority %v", j.FIDs[0], j.Priority)
		}
	}
	if want := []uint64{100, 101, 4, 1, 2, 3, 5, 6}; !slices.Equal(order, want) {
		t.Fatalf("claim order = %v, want %v", order, want)
	}
	if j, err := q.Claim(ctxT(t), "w"); err != nil || j != nil {
		t.Fatalf("claim on empty queue = %v, %v", j, err)
	}
}

func TestPriorityForRunningFIDQueuesAgain(t *testing.T) {
	q := newTestQueue(t)
	mustEnqueue(t, q, []uint64{7}, EnqueueRequest{})
	first := mustClaim(t, q, "w1")
	if res := mustEnqueue(t, q, []uint64{7}, EnqueueRequest{}); res.Jobs != 0 {
		t.Fatalf("normal enqueue of a running fid = %+v, want skipped", res)
	}
	if res := mustEnqueue(t, q, []uint64{7}, EnqueueRequest{Priority: true}); res.Jobs != 1 {
		t.Fatalf("priority enqueue of a running fid = %+v, want a new job", res)
	}
	// Finishing the old job must not forget the new one.
	if err := q.Complete(ctxT(t), first); err != nil {
		t.Fatal(err)
	}
	if res := mustEnqueue(t, q, []uint64{7}, EnqueueRequest{}); res.Skipped != 1 {
		t.Fatalf("enqueue while the repair job waits = %+v, want skipped", res)
	}
	second := mustClaim(t, q, "w2")
	if !second.Priority || !slices.Equal(second.FIDs, []uint64{7}) {
		t.Fatalf("second job = %+v", second)
	}
}

func TestClaimComplete(t *testing.T) {
	q := newTestQueue(t)
	mustEnqueue(t, q, []uint64{10, 11, 12}, EnqueueRequest{Kind: KindBackfill, Types: []DataType{Casts, Links}})
	j := mustClaim(t, q, "w1")
	if j.Kind != KindBackfill || !slices.Equal(j.FIDs, []uint64{10, 11, 12}) || !slices.Equal(j.Types, []DataType{Casts, Links}) || j.Attempt != 1 {
		t.Fatalf("claimed job = %+v", j)
	}
	if time.Since(j.EnqueuedAt) > time.Minute || time.Since(j.EnqueuedAt) < -time.Minute {
		t.Fatalf("enqueued at %v", j.EnqueuedAt)
	}
	st := mustStatus(t, q)
	if st.InProgress != (Count{1, 3}) || st.Queued != (Count{0, 0}) {
		t.Fatalf("status after claim = %+v", st)
	}
	if err := q.Complete(ctxT(t), j); err != nil {
		t.Fatal(err)
	}
	if err := q.Complete(ctxT(t), j); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("second complete = %v, want ErrLeaseLost", err)
	}
	st = mustStatus(t, q)
	if st.InProgress != (Count{}) || st.Done != (Count{1, 3}) {
		t.Fatalf("status after complete = %+v", st)
	}
	if st.Throughput <= 0 || st.ETA != 0 {
		t.Fatalf("throughput %v eta %v, want positive throughput and nothing left", st.Throughput, st.ETA)
	}
	// Done FIDs are no longer pending: they can be queued again.
	if res := mustEnqueue(t, q, []uint64{10}, EnqueueRequest{Types: []DataType{Casts, Links}}); res.Jobs != 1 {
		t.Fatalf("enqueue after completion = %+v", res)
	}
}

func TestWorkerDeathReclaim(t *testing.T) {
	q := newTestQueue(t, WithVisibilityTimeout(300*time.Millisecond))
	mustEnqueue(t, q, []uint64{1, 2}, EnqueueRequest{})
	dead := mustClaim(t, q, "dead-worker")
	if j, err := q.Claim(ctxT(t), "w2"); err != nil || j != nil {
		t.Fatalf("claim while the lease is valid = %v, %v; want nothing", j, err)
	}
	time.Sleep(400 * time.Millisecond)
	j := mustClaim(t, q, "w2")
	if j.ID != dead.ID || j.Attempt != 2 || !strings.Contains(j.LastError, "dead-worker") {
		t.Fatalf("reclaimed job = %+v, want job %s attempt 2 naming the lost worker", j, dead.ID)
	}
	if err := q.Extend(ctxT(t), dead); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("extend by the old worker = %v, want ErrLeaseLost", err)
	}
	if err := q.Complete(ctxT(t), dead); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("late complete by the old worker = %v, want ErrLeaseLost", err)
	}
	if _, err := q.Fail(ctxT(t), dead, errors.New("late")); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("late fail by the old worker = %v, want ErrLeaseLost", err)
	}
	if err := q.Complete(ctxT(t), j); err != nil {
		t.Fatal(err)
	}
	if st := mustStatus(t, q); st.Done != (Count{1, 2}) || st.InProgress != (Count{}) {
		t.Fatalf("status = %+v, want the job done once", st)
	}
}

func TestExtendKeepsLease(t *testing.T) {
	q := newTestQueue(t, WithVisibilityTimeout(300*time.Millisecond))
	mustEnqueue(t, q, []uint64{1}, EnqueueRequest{})
	j := mustClaim(t, q, "w1")
	for range 6 {
		time.Sleep(100 * time.Millisecond)
		if err := q.Extend(ctxT(t), j); err != nil {
			t.Fatal(err)
		}
		if other, err := q.Claim(ctxT(t), "w2"); err != nil || other != nil {
			t.Fatalf("claim while the lease is renewed = %v, %v", other, err)
		}
	}
	if err := q.Complete(ctxT(t), j); err != nil {
		t.Fatal(err)
	}
}

func TestDeathAfterLastAttemptFails(t *testing.T) {
	q := newTestQueue(t, WithVisibilityTimeout(100*time.Millisecond), WithMaxAttempts(1))
	mustEnqueue(t, q, []uint64{9}, EnqueueRequest{})
	mustClaim(t, q, "crashy")
	time.Sleep(200 * time.Millisecond)
	if j, err := q.Claim(ctxT(t), "w2"); err != nil || j != nil {
		t.Fatalf("claim = %v, %v; want the exhausted job failed, not handed out", j, err)
	}
	failed, err := q.Failed(ctxT(t), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 1 || !strings.Contains(failed[0].LastError, "lease expired") || !slices.Equal(failed[0].FIDs, []uint64{9}) {
		t.Fatalf("failed = %+v", failed)
	}
}

func TestRetryBackoffAndFailedSet(t *testing.T) {
	q := newTestQueue(t, WithMaxAttempts(3), WithBackoff(200*time.Millisecond, time.Second))
	mustEnqueue(t, q, []uint64{5, 6}, EnqueueRequest{})
	var last *Job
	for attempt := 1; attempt <= 3; attempt++ {
		start := time.Now()
		var j *Job
		for j == nil {
			var err error
			if j, err = q.Claim(ctxT(t), "w"); err != nil {
				t.Fatal(err)
			}
			if j == nil {
				time.Sleep(10 * time.Millisecond)
			}
		}
		waited := time.Since(start)
		if j.Attempt != attempt {
			t.Fatalf("attempt = %d, want %d", j.Attempt, attempt)
		}
		if attempt > 1 {
			// Base 200ms doubled per attempt, jitter ±20%.
			minWait := time.Duration(float64(200*time.Millisecond) * float64(int(1)<<(attempt-2)) * 0.8)
			if waited < minWait-20*time.Millisecond {
				t.Fatalf("attempt %d claimed after %v, want backoff of at least %v", attempt, waited, minWait)
			}
			if want := fmt.Sprintf("hub unavailable #%d", attempt-1); j.LastError != want {
				t.Fatalf("last error = %q, want %q", j.LastError, want)
			}
			if st := mustStatus(t, q); st.InProgress.Jobs != 1 {
				t.Fatalf("status = %+v", st)
			}
		}
		retry, err := q.Fail(ctxT(t), j, fmt.Errorf("hub unavailable #%d", attempt))
		if err != nil {
			t.Fatal(err)
		}
		if retry != (attempt < 3) {
			t.Fatalf("attempt %d: retry = %v", attempt, retry)
		}
		if retry {
			if st := mustStatus(t, q); st.Retrying != (Count{1, 2}) {
				t.Fatalf("status while waiting to retry = %+v", st)
			}
		}
		last = j
	}
	st := mustStatus(t, q)
	if st.Failed != (Count{1, 2}) || st.Retrying != (Count{}) || st.Queued != (Count{}) || st.Done != (Count{}) {
		t.Fatalf("status = %+v, want one failed job, nothing done", st)
	}
	failed, err := q.Failed(ctxT(t), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 1 || failed[0].ID != last.ID || failed[0].LastError != "hub unavailable #3" || failed[0].Attempts != 3 {
		t.Fatalf("failed = %+v", failed)
	}
	if j, _ := q.Claim(ctxT(t), "w"); j != nil {
		t.Fatalf("failed job handed out again: %+v", j)
	}

	n, err := q.RetryFailed(ctxT(t))
	if err != nil || n != 1 {
		t.Fatalf("retry failed = %d, %v", n, err)
	}
	st = mustStatus(t, q)
	if st.Failed != (Count{}) || st.Queued != (Count{1, 2}) {
		t.Fatalf("status after retry-failed = %+v", st)
	}
	// The re-queued job is pending again, so enqueue stays idempotent.
	if res := mustEnqueue(t, q, []uint64{5, 6}, EnqueueRequest{}); res.Skipped != 2 {
		t.Fatalf("enqueue after retry-failed = %+v", res)
	}
	j := mustClaim(t, q, "w")
	if j.Attempt != 1 || j.LastError != "hub unavailable #3" {
		t.Fatalf("retried job = %+v", j)
	}
	if err := q.Complete(ctxT(t), j); err != nil {
		t.Fatal(err)
	}
	if st := mustStatus(t, q); st.Done != (Count{1, 2}) {
		t.Fatalf("status = %+v", st)
	}
}

func TestPartialFailure(t *testing.T) {
	q := newTestQueue(t, WithBackoff(time.Millisecond, time.Millisecond))
	mustEnqueue(t, q, []uint64{1, 2, 3}, EnqueueRequest{})
	j := mustClaim(t, q, "w")
	if _, err := q.Fail(ctxT(t), j, errors.New("x"), 99); err == nil {
		t.Fatal("fail naming a fid outside the job succeeded")
	}
	if retry, err := q.Fail(ctxT(t), j, errors.New("fid 2: boom"), 2); err != nil || !retry {
		t.Fatalf("fail = %v, %v", retry, err)
	}
	st := mustStatus(t, q)
	if st.Done.FIDs != 2 || st.Retrying != (Count{1, 1}) {
		t.Fatalf("status = %+v, want 2 fids done and 1 retrying", st)
	}
	// The succeeded FIDs can be queued again; the failed one is pending.
	if res := mustEnqueue(t, q, []uint64{1, 2, 3}, EnqueueRequest{}); res.FIDs != 2 || res.Skipped != 1 {
		t.Fatalf("enqueue = %+v", res)
	}
	time.Sleep(20 * time.Millisecond)
	var got []uint64
	for range 2 {
		got = append(got, mustClaim(t, q, "w").FIDs...)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("claimed %v", got)
	}
}

func TestReleaseKeepsAttempts(t *testing.T) {
	q := newTestQueue(t)
	mustEnqueue(t, q, []uint64{1}, EnqueueRequest{})
	j := mustClaim(t, q, "w")
	if err := q.Release(ctxT(t), j); err != nil {
		t.Fatal(err)
	}
	if err := q.Release(ctxT(t), j); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("second release = %v", err)
	}
	again := mustClaim(t, q, "w2")
	if again.ID != j.ID || again.Attempt != 1 {
		t.Fatalf("job after release = %+v, want attempt 1 again", again)
	}
	if st := mustStatus(t, q); st.InProgress != (Count{1, 1}) || st.Queued != (Count{}) {
		t.Fatalf("status = %+v", st)
	}
}

func TestJobCarriesTraceContext(t *testing.T) {
	q := newTestQueue(t)
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(ctxT(t), sc)
	if _, err := q.Enqueue(ctx, FIDList(1), EnqueueRequest{}); err != nil {
		t.Fatal(err)
	}
	j := mustClaim(t, q, "w")
	if want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; j.TraceParent != want {
		t.Fatalf("traceparent = %q, want %q", j.TraceParent, want)
	}
	got := trace.SpanContextFromContext(j.Context(context.Background()))
	if got.TraceID() != tid || got.SpanID() != sid || !got.IsRemote() {
		t.Fatalf("extracted span context = %+v", got)
	}
	// A job enqueued without a trace has none.
	mustEnqueue(t, q, []uint64{2}, EnqueueRequest{})
	if j := mustClaim(t, q, "w"); j.TraceParent != "" || trace.SpanContextFromContext(j.Context(context.Background())).IsValid() {
		t.Fatalf("untraced job has trace context %q", j.TraceParent)
	}
}

func TestStatusThroughputAndETA(t *testing.T) {
	q := newTestQueue(t)
	mustEnqueue(t, q, fidRange(1, 40), EnqueueRequest{BatchSize: 10})
	for range 2 {
		if err := q.Complete(ctxT(t), mustClaim(t, q, "w")); err != nil {
			t.Fatal(err)
		}
	}
	mustClaim(t, q, "w")
	st := mustStatus(t, q)
	if st.Queued != (Count{1, 10}) || st.InProgress != (Count{1, 10}) || st.Done != (Count{2, 20}) {
		t.Fatalf("status = %+v", st)
	}
	// 20 FIDs finished within the last minute's window (at most 60 s).
	if st.Throughput < 20.0/60 || st.ETA <= 0 {
		t.Fatalf("throughput %v eta %v", st.Throughput, st.ETA)
	}
	if want := time.Duration(20 / st.Throughput * float64(time.Second)); st.ETA < want-time.Second || st.ETA > want+time.Second {
		t.Fatalf("eta %v, want about %v", st.ETA, want)
	}
	if s := st.String(); !strings.Contains(s, "done 2/20") {
		t.Fatalf("String() = %q", s)
	}
}

func TestParseHelpers(t *testing.T) {
	fids, err := ParseFIDs(" 1, 2,3 ")
	if err != nil || !slices.Equal(fids, []uint64{1, 2, 3}) {
		t.Fatalf("ParseFIDs = %v, %v", fids, err)
	}
	for _, bad := range []string{"", "1,x", "0", "-1"} {
		if _, err := ParseFIDs(bad); err == nil {
			t.Errorf("ParseFIDs(%q) succeeded", bad)
		}
	}
	ts, err := ParseDataTypes("reactions,casts,casts")
	if err != nil || !slices.Equal(ts, []DataType{Casts, Reactions}) {
		t.Fatalf("ParseDataTypes = %v, %v", ts, err)
	}
	if ts, err := ParseDataTypes(""); err != nil || ts != nil {
		t.Fatalf("ParseDataTypes(\"\") = %v, %v", ts, err)
	}
	if _, err := ParseDataTypes("casts,frames"); err == nil {
		t.Fatal("ParseDataTypes accepted an unknown type")
	}
	var got []uint64
	for f := range FIDRange(0, 3) {
		got = append(got, f)
	}
	if !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("FIDRange(0,3) = %v", got)
	}
	got = got[:0]
	for f := range FIDRange(^uint64(0)-1, ^uint64(0)) {
		got = append(got, f)
	}
	if len(got) != 2 {
		t.Fatalf("FIDRange at the top of uint64 = %v", got)
	}
}
