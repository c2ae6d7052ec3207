package backfill

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

func quietOptions(o WorkerOptions) WorkerOptions {
	if o.Logger == nil {
		o.Logger = discardLogger()
	}
	return o
}

func TestBackfillFIDWritesEveryFamilyPageByPage(t *testing.T) {
	hub := newTestHub()
	f := newFixture()
	hub.addFID(t, f, 7, sizes{casts: 2100, reactions: 30, links: 12})
	hub.addFID(t, f, 8, sizes{casts: 3})
	client, _ := hub.serve(t)
	mw := newMemWriter()
	// Writes not combined, to see each page on its own.
	w := NewWorker(nil, client, mw, quietOptions(WorkerOptions{PageSize: 1000, Validation: message.CheckFull,
		Network: pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET, MaxRate: 10000, WriteBatch: -1}))
	if err := w.Backfill(ctxT(t), 7); err != nil {
		t.Fatal(err)
	}
	missing, extra := mw.diff(7, hub.expected(7))
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("fid 7: %d missing, %d unexpected (e.g. %v %v)", len(missing), len(extra), first(missing), first(extra))
	}
	if len(mw.byFID[8]) != 0 {
		t.Fatalf("fid 8 was written by a backfill of fid 7")
	}
	// 2100 casts + 210 removes = 2310 messages: pages of 1000, 1000, 310.
	if got := hub.count("GetAllCastMessagesByFid"); got != 3 {
		t.Fatalf("cast pages requested = %d, want 3", got)
	}
	if mw.maxBatch > 1000 {
		t.Fatalf("largest write held %d events, want at most one page (1000)", mw.maxBatch)
	}
	if got := hub.count("GetOnChainEvents"); got != int64(len(onChainEventTypes)) {
		t.Fatalf("on-chain requests = %d, want one per type", got)
	}
	st := w.Stats()
	if st.Messages != 2310+30+12+1+2+2+1 || st.Events != 6 || st.DeadLetters != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func TestBackfillTypeSelection(t *testing.T) {
	tests := []struct {
		types   []DataType
		methods []string
	}{
		{[]DataType{Casts}, []string{"GetAllCastMessagesByFid"}},
		{[]DataType{UserData}, []string{"GetAllUserDataMessagesByFid"}},
		{[]DataType{Links, OnChainEvents}, []string{"GetAllLinkMessagesByFid", "GetLinkCompactStateMessageByFid", "GetOnChainEvents"}},
		{[]DataType{UsernameProofs, LendStorage}, []string{"GetUserNameProofsByFid", "GetAllLendStorageMessagesByFid"}},
	}
	every := []string{"GetAllCastMessagesByFid", "GetAllReactionMessagesByFid", "GetAllLinkMessagesByFid",
		"GetAllVerificationMessagesByFid", "GetAllUserDataMessagesByFid", "GetAllLendStorageMessagesByFid",
		"GetLinkCompactStateMessageByFid", "GetOnChainEvents", "GetUserNameProofsByFid"}
	for _, tc := range tests {
		t.Run(joinTypes(tc.types), func(t *testing.T) {
			hub := newTestHub()
			hub.addFID(t, newFixture(), 3, sizes{casts: 5, reactions: 5, links: 5})
			client, _ := hub.serve(t)
			mw := newMemWriter()
			w := NewWorker(nil, client, mw, quietOptions(WorkerOptions{}))
			if err := w.Backfill(ctxT(t), 3, tc.types...); err != nil {
				t.Fatal(err)
			}
			for _, m := range every {
				if called := hub.count(m) > 0; called != slices.Contains(tc.methods, m) {
					t.Errorf("%s called = %v", m, called)
				}
			}
			if missing, extra := mw.diff(3, hub.expected(3, tc.types...)); len(missing)+len(extra) > 0 {
				t.Fatalf("missing %v, extra %v", missing, extra)
			}
		})
	}
}

func TestBackfillDeadLetters(t *testing.T) {
	hub := newTestHub()
	f := newFixture()
	hub.addFID(t, f, 5, sizes{casts: 4})
	good := hub.all[5][Casts]
	badHash := f.sign(t, &pb.MessageData{Fid: 5, Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD,
		Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: "tampered"}}})
	badHash.Hash = append([]byte(nil), badHash.Hash...)
	badHash.Hash[0] ^= 0xff
	badSig := f.sign(t, &pb.MessageData{Fid: 5, Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD,
		Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: "forged"}}})
	badSig.Signature = make([]byte, 64)
	otherFID := f.sign(t, &pb.MessageData{Fid: 6, Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD,
		Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: "not mine"}}})
	undecodable := &pb.Message{DataBytes: []byte{0xff, 0xff, 0xff}}
	hub.all[5][Casts] = append(slices.Clone(good), badHash, badSig, otherFID, undecodable)
	client, _ := hub.serve(t)

	tests := []struct {
		mode    message.Mode
		reasons []message.Reason
	}{
		{message.CheckFull, []message.Reason{message.ReasonHashMismatch, message.ReasonSignature, ReasonWrongFID, message.ReasonHashScheme}},
		{message.CheckHash, []message.Reason{message.ReasonHashMismatch, ReasonWrongFID, message.ReasonHashScheme}},
		{message.CheckNone, []message.Reason{ReasonWrongFID, message.ReasonDecode}},
	}
	for _, tc := range tests {
		t.Run(tc.mode.String(), func(t *testing.T) {
			var mu sync.Mutex
			var got []message.Reason
			mw := newMemWriter()
			w := NewWorker(nil, client, mw, quietOptions(WorkerOptions{Validation: tc.mode,
				DeadLetter: func(_ context.Context, d DeadLetter) {
					mu.Lock()
					defer mu.Unlock()
					if d.FID != 5 || d.Type != Casts || d.Err == nil {
						t.Errorf("dead letter %+v", d)
					}
					got = append(got, d.Reason)
				}}))
			if err := w.Backfill(ctxT(t), 5, Casts); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.reasons) {
				t.Fatalf("dead-letter reasons = %v, want %v", got, tc.reasons)
			}
			wantWritten := len(good) + 4 - len(tc.reasons)
			if n := len(mw.byFID[5]); n != wantWritten {
				t.Fatalf("wrote %d messages, want %d", n, wantWritten)
			}
			if w.Stats().DeadLetters != int64(len(tc.reasons)) {
				t.Fatalf("stats = %+v", w.Stats())
			}
		})
	}
}

func TestBackfillRetriesPushback(t *testing.T) {
	hub := newTestHub()
	hub.addFID(t, newFixture(), 9, sizes{casts: 50, reactions: 50, links: 50})
	hub.failEvery.Store(3) // every third request: RESOURCE_EXHAUSTED
	client, _ := hub.serve(t)
	mw := newMemWriter()
	w := NewWorker(nil, client, mw, quietOptions(WorkerOptions{PageSize: 10, MaxRate: 2000, InitialRate: 2000, RequestRetries: 10}))
	if err := w.Backfill(ctxT(t), 9); err != nil {
		t.Fatal(err)
	}
	if missing, extra := mw.diff(9, hub.expected(9)); len(missing)+len(extra) > 0 {
		t.Fatalf("missing %d, extra %d", len(missing), len(extra))
	}
	st := w.Stats()
	if st.Retries == 0 || st.Rate >= 2000 {
		t.Fatalf("stats = %+v: want retries and a rate cut below the ceiling", st)
	}
}

func TestBackfillNonRetryableErrorFailsFast(t *testing.T) {
	hub := newTestHub()
	hub.addFID(t, newFixture(), 9, sizes{casts: 5})
	hub.failFID.Store(9)
	hub.failCode = codes.InvalidArgument
	client, _ := hub.serve(t)
	w := NewWorker(nil, client, newMemWriter(), quietOptions(WorkerOptions{}))
	err := w.Backfill(ctxT(t), 9)
	if err == nil || !strings.Contains(err.Error(), "fid 9 is broken") {
		t.Fatalf("err = %v", err)
	}
	if st := w.Stats(); st.Retries != 0 {
		t.Fatalf("a non-retryable error was retried: %+v", st)
	}
}

func TestBackfillWriterErrorFails(t *testing.T) {
	hub := newTestHub()
	hub.addFID(t, newFixture(), 2, sizes{casts: 5})
	client, _ := hub.serve(t)
	mw := newMemWriter()
	mw.fail = func([]*pb.HubEvent) error { return errors.New("postgres is down") }
	w := NewWorker(nil, client, mw, quietOptions(WorkerOptions{}))
	if err := w.Backfill(ctxT(t), 2); err == nil || !strings.Contains(err.Error(), "postgres is down") {
		t.Fatalf("err = %v", err)
	}
}

func TestBackfillRejectsRepeatedPageToken(t *testing.T) {
	err := pages(context.Background(), func(ctx context.Context, token []byte) ([]byte, error) { return []byte("same"), nil })
	if err == nil || !strings.Contains(err.Error(), "again") {
		t.Fatalf("err = %v", err)
	}
}

// runWorkers runs n workers on q until the queue has nothing unfinished,
// then stops them.
func runWorkers(t *testing.T, q *Queue, n int, mk func(i int) *Worker) []*Worker {
	t.Helper()
	ctx, cancel := context.WithCancel(ctxT(t))
	var wg sync.WaitGroup
	ws := make([]*Worker, n)
	for i := range ws {
		ws[i] = mk(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ws[i].Run(ctx); err != nil {
				t.Errorf("worker %d: %v", i, err)
			}
		}()
	}
	waitDrained(t, q)
	cancel()
	wg.Wait()
	return ws
}

func waitDrained(t *testing.T, q *Queue) Status {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		st := mustStatus(t, q)
		if st.Queued.Jobs+st.Retrying.Jobs+st.InProgress.Jobs == 0 {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue not drained: %v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWorkersDrainQueue(t *testing.T) {
	hub := newTestHub()
	f := newFixture()
	const n = 60
	for fid := uint64(1); fid <= n; fid++ {
		hub.addFID(t, f, fid, sizes{casts: 3, reactions: 2, links: 2})
	}
	client, _ := hub.serve(t)
	q := newTestQueue(t)
	src := HubFIDs(ctxT(t), client, 7)
	res, err := q.Enqueue(ctxT(t), src, EnqueueRequest{BatchSize: 5})
	if err != nil || res.FIDs != n || res.Jobs != 12 {
		t.Fatalf("enqueue --all = %+v, %v", res, err)
	}
	mw := newMemWriter()
	ws := runWorkers(t, q, 3, func(i int) *Worker {
		return NewWorker(q, client, mw, quietOptions(WorkerOptions{Concurrency: 8, Validation: message.CheckFull, MaxRate: 1e5}))
	})
	st := mustStatus(t, q)
	if st.Done != (Count{12, n}) || st.Failed != (Count{}) {
		t.Fatalf("status = %v", st)
	}
	var done int64
	for _, w := range ws {
		done += w.Stats().FIDsDone
	}
	if done != n {
		t.Fatalf("workers report %d fids done, want %d", done, n)
	}
	for fid := uint64(1); fid <= n; fid++ {
		if missing, extra := mw.diff(fid, hub.expected(fid)); len(missing)+len(extra) > 0 {
			t.Fatalf("fid %d: missing %v, extra %v", fid, missing, extra)
		}
	}
}

func TestUserDataJobFetchesOnlyUserData(t *testing.T) {
	hub := newTestHub()
	hub.addFID(t, newFixture(), 4, sizes{casts: 3})
	client, _ := hub.serve(t)
	q := newTestQueue(t)
	mustEnqueue(t, q, []uint64{4}, EnqueueRequest{Kind: KindUserData})
	mw := newMemWriter()
	runWorkers(t, q, 1, func(int) *Worker { return NewWorker(q, client, mw, quietOptions(WorkerOptions{})) })
	if hub.requests.Load() != hub.count("GetAllUserDataMessagesByFid") || hub.count("GetAllUserDataMessagesByFid") == 0 {
		t.Fatalf("a user-data job sent %d requests, %d of them for user data", hub.requests.Load(), hub.count("GetAllUserDataMessagesByFid"))
	}
	if missing, extra := mw.diff(4, hub.expected(4, UserData)); len(missing)+len(extra) > 0 {
		t.Fatalf("missing %v extra %v", missing, extra)
	}
}

func TestWorkerFailingFIDEndsInFailedSet(t *testing.T) {
	hub := newTestHub()
	f := newFixture()
	for fid := uint64(1); fid <= 20; fid++ {
		hub.addFID(t, f, fid, sizes{casts: 2})
	}
	hub.failFID.Store(13)
	hub.failCode = codes.Internal
	client, _ := hub.serve(t)
	q := newTestQueue(t, WithMaxAttempts(3), WithBackoff(10*time.Millisecond, 20*time.Millisecond))
	mustEnqueue(t, q, fidRange(1, 20), EnqueueRequest{BatchSize: 10})
	mw := newMemWriter()
	runWorkers(t, q, 2, func(int) *Worker { return NewWorker(q, client, mw, quietOptions(WorkerOptions{})) })
	st := mustStatus(t, q)
	if st.Done.FIDs != 19 || st.Failed != (Count{1, 1}) {
		t.Fatalf("status = %v, want 19 fids done and fid 13 failed", st)
	}
	failed, err := q.Failed(ctxT(t), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) != 1 || !slices.Equal(failed[0].FIDs, []uint64{13}) || failed[0].Attempts != 3 ||
		!strings.Contains(failed[0].LastError, "fid 13") || !strings.Contains(failed[0].LastError, "broken") {
		t.Fatalf("failed = %+v", failed)
	}
	// Once the hub recovers, retry-failed finishes the job.
	hub.failFID.Store(0)
	if n, err := q.RetryFailed(ctxT(t)); err != nil || n != 1 {
		t.Fatalf("retry failed = %d, %v", n, err)
	}
	runWorkers(t, q, 1, func(int) *Worker { return NewWorker(q, client, mw, quietOptions(WorkerOptions{})) })
	if st := mustStatus(t, q); st.Done.FIDs != 20 || st.Failed != (Count{}) {
		t.Fatalf("status after retry = %v", st)
	}
	if missing, _ := mw.diff(13, hub.expected(13)); len(missing) > 0 {
		t.Fatalf("fid 13 missing %v", missing)
	}
}

func TestReconcileJobWithoutStoreFails(t *testing.T) {
	hub := newTestHub()
	hub.addFID(t, newFixture(), 1, sizes{})
	client, _ := hub.serve(t)
	q := newTestQueue(t, WithMaxAttempts(1))
	mustEnqueue(t, q, []uint64{1}, EnqueueRequest{Kind: KindReconcile})
	runWorkers(t, q, 1, func(int) *Worker { return NewWorker(q, client, newMemWriter(), quietOptions(WorkerOptions{})) })
	failed, err := q.Failed(ctxT(t), 10)
	if err != nil || len(failed) != 1 || !strings.Contains(failed[0].LastError, "needs a Store") {
		t.Fatalf("failed = %+v, %v", failed, err)
	}
}

func TestWorkerShutdownReleasesJobs(t *testing.T) {
	hub := newTestHub()
	f := newFixture()
	for fid := uint64(1); fid <= 10; fid++ {
		hub.addFID(t, f, fid, sizes{casts: 2})
	}
	hub.delay.Store(int64(200 * time.Millisecond))
	client, _ := hub.serve(t)
	q := newTestQueue(t)
	mustEnqueue(t, q, fidRange(1, 10), EnqueueRequest{BatchSize: 5})
	ctx, cancel := context.WithCancel(ctxT(t))
	w := NewWorker(q, client, newMemWriter(), quietOptions(WorkerOptions{Concurrency: 5}))
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()
	for mustStatus(t, q).InProgress.Jobs == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := mustStatus(t, q)
	if st.InProgress != (Count{}) || st.Queued != (Count{2, 10}) {
		t.Fatalf("status after shutdown = %v, want both jobs back in the queue", st)
	}
	j := mustClaim(t, q, "next")
	if j.Attempt != 1 {
		t.Fatalf("released job attempt = %d, want 1 (a release spends no attempt)", j.Attempt)
	}
}

func TestWorkerStopsWhenItsLeaseIsTaken(t *testing.T) {
	hub := newTestHub()
	hub.addFID(t, newFixture(), 1, sizes{casts: 2})
	hub.delay.Store(int64(150 * time.Millisecond))
	client, _ := hub.serve(t)
	q := newTestQueue(t, WithVisibilityTimeout(300*time.Millisecond))
	mustEnqueue(t, q, []uint64{1}, EnqueueRequest{})
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	slow := NewWorker(q, client, newMemWriter(), quietOptions(WorkerOptions{Name: "slow"}))
	done := make(chan error)
	go func() { done <- slow.Run(ctx) }()
	var id string
	for id == "" {
		ids, err := q.rdb.ZRange(ctx, q.key("inflight"), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) > 0 {
			id = ids[0]
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Age the lease as if the slow worker had stalled past its deadline,
	// and let another worker take the job over.
	if err := q.rdb.ZAdd(ctx, q.key("inflight"), redis.Z{Score: 0, Member: id}).Err(); err != nil {
		t.Fatal(err)
	}
	thief := mustClaim(t, q, "thief")
	// The slow worker renews every 100ms; by then it has learnt that the
	// lease is gone and cancelled its requests.
	time.Sleep(200 * time.Millisecond)
	if err := q.Extend(ctxT(t), thief); err != nil {
		t.Fatal(err)
	}
	sent := hub.requests.Load()
	time.Sleep(250 * time.Millisecond)
	if err := q.Extend(ctxT(t), thief); err != nil {
		t.Fatal(err)
	}
	if n := hub.requests.Load(); n != sent {
		t.Fatalf("the worker that lost its lease kept fetching: %d more requests", n-sent)
	}
	if err := q.Complete(ctxT(t), thief); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := slow.Stats()
	if st.JobsDone != 0 || st.FIDsDone != 0 {
		t.Fatalf("the worker that lost its lease counted the job: %+v", st)
	}
	if s := mustStatus(t, q); s.Done != (Count{1, 1}) {
		t.Fatalf("status = %v, want the job done once", s)
	}
}
