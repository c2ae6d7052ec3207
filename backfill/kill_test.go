package backfill

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

// childEnv switches the test binary into a worker process for the SIGKILL
// test: it runs one worker until it is killed.
const childEnv = "WAYPOINT_BACKFILL_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChildWorker())
	}
	if addr := os.Getenv(bigFIDEnv); addr != "" {
		os.Exit(runBigFIDChild(addr))
	}
	os.Exit(m.Run())
}

// killVisibility is the lease of the kill tests: short, so that takeovers
// happen within the test.
const killVisibility = 300 * time.Millisecond

func runChildWorker() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	opt, err := redis.ParseURL(os.Getenv("WAYPOINT_REDIS__URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rdb := redis.NewClient(opt)
	prefix := os.Getenv(childEnv)
	conn, err := grpc.NewClient(os.Getenv("CHILD_HUB"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	q := NewQueue(rdb, WithPrefix(prefix), WithVisibilityTimeout(killVisibility))
	w := NewWorker(q, pb.NewHubServiceClient(conn), &redisWriter{rdb: rdb, prefix: prefix},
		WorkerOptions{Name: "child", Concurrency: 8, MaxRate: 5000, Logger: discardLogger()})
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// redisWriter records written event keys in one Redis set per FID, so that
// what a killed process wrote survives it.
type redisWriter struct {
	rdb    *redis.Client
	prefix string
}

func (w *redisWriter) Write(ctx context.Context, events []*pb.HubEvent) error {
	pipe := w.rdb.Pipeline()
	for _, e := range events {
		pipe.SAdd(ctx, w.prefix+"written:"+strconv.FormatUint(eventFID(e), 10), eventKey(e))
	}
	_, err := pipe.Exec(ctx)
	return err
}

func (w *redisWriter) check(t *testing.T, hub *testHub, fids []uint64) {
	t.Helper()
	for _, fid := range fids {
		got, err := w.rdb.SMembers(context.Background(), w.prefix+"written:"+strconv.FormatUint(fid, 10)).Result()
		if err != nil {
			t.Fatal(err)
		}
		want := hub.expected(fid)
		if len(got) != len(want) {
			t.Fatalf("fid %d: %d keys written, want %d", fid, len(got), len(want))
		}
		for _, k := range got {
			if !want[k] {
				t.Fatalf("fid %d: unexpected %s", fid, k)
			}
		}
	}
}

// killFixture is a hub whose FIDs take long enough that a worker is killed
// mid-job.
func killFixture(t *testing.T, n uint64, before func(string, uint64)) (*testHub, pb.HubServiceClient, string) {
	hub := newTestHub()
	hub.before = before
	f := newFixture()
	for fid := uint64(1); fid <= n; fid++ {
		hub.addFID(t, f, fid, sizes{casts: 4, reactions: 2, links: 2})
	}
	hub.delay.Store(int64(time.Millisecond))
	client, addr := hub.serve(t)
	return hub, client, addr
}

// assertExactlyOnce checks the end state after a crash and a takeover:
// every FID counted done once, nothing failed, queued or held, and no FID
// left pending (enqueueing all of them again queues all of them).
func assertExactlyOnce(t *testing.T, q *Queue, n int) {
	t.Helper()
	st := waitDrained(t, q)
	if st.Done.FIDs != int64(n) || st.Failed != (Count{}) || st.InProgress != (Count{}) || st.Queued != (Count{}) || st.Retrying != (Count{}) {
		t.Fatalf("status = %v, want exactly %d fids done and nothing else", st, n)
	}
	res, err := q.Enqueue(ctxT(t), FIDRange(1, uint64(n)), EnqueueRequest{BatchSize: 5})
	if err != nil || res.FIDs != n {
		t.Fatalf("re-enqueue = %+v, %v: some fid is still marked pending", res, err)
	}
}

// TestKillWorkerMidJob kills a worker at a random point of its work, 20
// times: the worker loses its Redis connection and its context together, so
// it cannot acknowledge or release anything, exactly as if the process had
// died. A second worker then takes over expired leases and finishes.
func TestKillWorkerMidJob(t *testing.T) {
	const n = 30
	var (
		kill      atomic.Pointer[func()]
		threshold atomic.Int64
		hub       *testHub
	)
	hub, client, _ := killFixture(t, n, func(string, uint64) {
		if f := kill.Load(); f != nil && hub.requests.Load() >= threshold.Load() {
			go (*f)()
		}
	})
	for run := range 20 {
		t.Run(strconv.Itoa(run), func(t *testing.T) {
			r := testsupport.NewRedis(t)
			q := NewQueue(r.Client, WithPrefix(r.Prefix), WithVisibilityTimeout(killVisibility))
			mustEnqueue(t, q, fidRange(1, n), EnqueueRequest{BatchSize: 5})

			opt, err := redis.ParseURL(r.URL)
			if err != nil {
				t.Fatal(err)
			}
			victimRDB := redis.NewClient(opt)
			victimQ := NewQueue(victimRDB, WithPrefix(r.Prefix), WithVisibilityTimeout(killVisibility))
			ctx, cancel := context.WithCancel(ctxT(t))
			die := sync.OnceFunc(func() { victimRDB.Close(); cancel() })
			// A whole run sends about 13 requests per FID; die somewhere in
			// the first two thirds of them.
			threshold.Store(hub.requests.Load() + int64(1+rand.IntN(n*13*2/3)))
			kill.Store(&die)
			mw := newMemWriter()
			victim := NewWorker(victimQ, client, mw, quietOptions(WorkerOptions{Name: "victim", Concurrency: 10, MaxRate: 5000}))
			done := make(chan struct{})
			go func() { defer close(done); victim.Run(ctx) }()
			select {
			case <-done:
				t.Fatal("victim stopped before it was killed")
			case <-time.After(20 * time.Second):
				t.Fatal("victim never reached the kill point")
			case <-ctx.Done():
			}
			<-done
			kill.Store(nil)
			if st := mustStatus(t, q); st.InProgress.Jobs == 0 {
				t.Fatalf("status right after the kill = %v: the victim held no job, the run tests nothing", st)
			}

			runWorkers(t, q, 1, func(int) *Worker {
				return NewWorker(q, client, mw, quietOptions(WorkerOptions{Name: "rescuer", Concurrency: 10, MaxRate: 5000}))
			})
			assertExactlyOnce(t, q, n)
			for fid := uint64(1); fid <= n; fid++ {
				if missing, extra := mw.diff(fid, hub.expected(fid)); len(missing)+len(extra) > 0 {
					t.Fatalf("fid %d: missing %v, extra %v", fid, missing, extra)
				}
			}
		})
	}
}

// TestSIGKILLWorkerProcess runs the worker as a separate process and kills
// it with SIGKILL mid-job, a few times.
func TestSIGKILLWorkerProcess(t *testing.T) {
	const n = 30
	hub, client, addr := killFixture(t, n, nil)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for run := range 3 {
		t.Run(strconv.Itoa(run), func(t *testing.T) {
			r := testsupport.NewRedis(t)
			q := NewQueue(r.Client, WithPrefix(r.Prefix), WithVisibilityTimeout(killVisibility))
			mustEnqueue(t, q, fidRange(1, n), EnqueueRequest{BatchSize: 5})
			rw := &redisWriter{rdb: r.Client, prefix: r.Prefix}

			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"="+r.Prefix, "CHILD_HUB="+addr, "WAYPOINT_REDIS__URL="+r.URL)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Never leave the process behind when the test fails early; once
			// it has been waited for, Kill is a no-op.
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			threshold := hub.requests.Load() + int64(20+run*100)
			deadline := time.Now().Add(30 * time.Second)
			for {
				if hub.requests.Load() >= threshold {
					break
				}
				select {
				case err := <-exited:
					t.Fatalf("worker process exited before the kill: %v", err)
				default:
				}
				if time.Now().After(deadline) {
					_ = cmd.Process.Kill()
					t.Fatal("worker process never reached the kill point")
				}
				time.Sleep(2 * time.Millisecond)
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := <-exited; err == nil {
				t.Fatal("worker process exited cleanly; want killed")
			}
			if st := mustStatus(t, q); st.InProgress.Jobs == 0 {
				t.Fatalf("status right after the kill = %v: the process held no job", st)
			}
			runWorkers(t, q, 1, func(int) *Worker {
				return NewWorker(q, client, rw, quietOptions(WorkerOptions{Name: "rescuer", Concurrency: 10, MaxRate: 5000}))
			})
			assertExactlyOnce(t, q, n)
			rw.check(t, hub, fidRange(1, n))
		})
	}
}
