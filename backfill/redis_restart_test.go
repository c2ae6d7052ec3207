package backfill

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisProc is a redis-server process of the test's own, so that it can be
// killed and restarted without touching the shared server.
type redisProc struct {
	t    *testing.T
	dir  string
	port int
	cmd  *exec.Cmd
}

func startRedisProc(t *testing.T, dir string, port int) *redisProc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server is needed for the restart test: %v", err)
	}
	if port == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
		"--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	p := &redisProc{t: t, dir: dir, port: port, cmd: cmd}
	t.Cleanup(p.kill)
	c := p.client()
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on port %d did not come up", port)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

func (p *redisProc) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", p.port), MaxRetries: -1})
}

// kill stops the server the hard way (SIGKILL, by PID), as a crash would.
func (p *redisProc) kill() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

func TestRedisRestartWithAOFKeepsJobs(t *testing.T) {
	dir := t.TempDir()
	srv := startRedisProc(t, dir, 0)
	c := srv.client()
	q := NewQueue(c, WithPrefix("wp:"), WithVisibilityTimeout(time.Minute))
	ctx := ctxT(t)
	if _, err := q.Enqueue(ctx, FIDRange(1, 200), EnqueueRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(ctx, FIDList(1000), EnqueueRequest{Priority: true}); err != nil {
		t.Fatal(err)
	}
	held := mustClaim(t, q, "w1") // the priority job, in flight across the crash
	done := mustClaim(t, q, "w1")
	if err := q.Complete(ctx, done); err != nil {
		t.Fatal(err)
	}
	before := mustStatus(t, q)
	c.Close()

	srv.kill()
	srv = startRedisProc(t, dir, srv.port)
	c = srv.client()
	defer c.Close()
	q = NewQueue(c, WithPrefix("wp:"), WithVisibilityTimeout(time.Minute))

	after := mustStatus(t, q)
	if after.Queued != before.Queued || after.InProgress != before.InProgress || after.Done != before.Done {
		t.Fatalf("status after restart = %+v, before = %+v", after, before)
	}
	if want := (Count{Jobs: 3, FIDs: 150}); after.Queued != want {
		t.Fatalf("queued after restart = %+v, want %+v", after.Queued, want)
	}
	// The lease survives too: the worker that held the job can finish it.
	if err := q.Complete(ctx, held); err != nil {
		t.Fatalf("complete the job held across the restart: %v", err)
	}
	// Dedupe state survives: the queued FIDs are still pending.
	if res, err := q.Enqueue(ctx, FIDRange(1, 200), EnqueueRequest{}); err != nil || res.FIDs != 50 || res.Skipped != 150 {
		t.Fatalf("enqueue after restart = %+v, %v; want only the completed 50 queued again", res, err)
	}
	var fids []uint64
	for {
		j, err := q.Claim(ctx, "w2")
		if err != nil {
			t.Fatal(err)
		}
		if j == nil {
			break
		}
		fids = append(fids, j.FIDs...)
	}
	slices.Sort(fids)
	if !slices.Equal(fids, fidRange(1, 200)) {
		t.Fatalf("claimed %d fids after restart, want 1..200", len(fids))
	}
}
