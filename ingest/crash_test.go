package ingest

import (
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/devnet"
)

// testDuplicateWindow is the crash tests' duplicate window: long enough for
// the server to store what a killed run had sent, far shorter than the
// pauses before some restarts.
const testDuplicateWindow = 500 * time.Millisecond

// TestKillAndRestart kills ingest at random points, in-process: its
// context is cancelled and, at the same moment, its NATS connection is cut
// without flushing, so whatever it buffered or had in flight is lost, as
// in a crash. Each restart resumes from the last saved checkpoint; at the
// end the stream must hold every event exactly once and in order. Every
// third restart waits out the stream's duplicate window first, so what the
// killed run stored after its checkpoint must be found by reading the
// stream back, not by the server's deduplication.
func TestKillAndRestart(t *testing.T) {
	const runs = 24
	e := newEnv(t, devnet.Options{Seed: 11, FIDs: 400, Preload: 40000, Rate: 3000, Duration: 4 * time.Second}, bus.Options{DuplicateWindow: testDuplicateWindow})
	rng := rand.New(rand.NewPCG(3, 4))
	var restarts, published uint64
	for run := range runs {
		d := &killDialer{}
		b := e.client(t, d)
		o := e.options(b)
		o.FromID = u64(0)
		o.CheckpointInterval = time.Duration(10+rng.IntN(60)) * time.Millisecond
		o.ShutdownTimeout = 500 * time.Millisecond
		// Small bounds keep many publishes in flight at the kill.
		o.MaxInFlight = 64 + rng.IntN(2000)
		in, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- in.Run(ctx) }()
		time.Sleep(time.Duration(20+rng.IntN(250)) * time.Millisecond)

		d.kill()
		cancel()
		b.Conn().Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: ingest did not return after the kill", run)
		}
		_ = b.Close()
		for _, s := range in.Stats().Shards {
			published += s.Published
		}
		restarts++
		if run%3 == 0 {
			time.Sleep(2 * testDuplicateWindow)
		}
	}

	// A final, undisturbed run to the end of the workload.
	b := e.client(t, nil)
	defer b.Close()
	o := e.options(b)
	o.FromID = u64(0)
	in, stop := startIngest(t, o)
	e.waitWorkload(t, 1, 2)
	truth := truthAll(t, e, 1, 2)
	waitCheckpoints(t, in, lastIDs(truth), 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var dups uint64
	for _, s := range in.Stats().Shards {
		dups += s.Duplicates
	}
	checkExactlyOnce(t, readStream(t, e.srv), truth, nil)
	t.Logf("%d kills; %d events acked before kills; final run: %d duplicates dropped by the server", restarts, published, dups)
	if published == 0 {
		t.Fatal("no run published anything before its kill: the kills did not test anything")
	}
}

// TestSIGKILL runs ingest as a separate process and kills it with SIGKILL
// while it publishes, several times; a final run must leave the stream
// with every event exactly once and in order. Each restart waits out the
// duplicate window first (see TestKillAndRestart).
func TestSIGKILL(t *testing.T) {
	const kills = 4
	e := newEnv(t, devnet.Options{Seed: 13, FIDs: 400, Preload: 60000, Rate: 2000, Duration: 5 * time.Second}, bus.Options{DuplicateWindow: testDuplicateWindow})
	rng := rand.New(rand.NewPCG(5, 6))
	ctx := context.Background()
	progress := func() uint64 {
		var sum uint64
		for _, s := range []uint32{1, 2} {
			cp, _, err := e.srv.LoadCheckpoint(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			sum += cp
		}
		return sum
	}
	for k := range kills {
		before := progress()
		cmd := startChild(t, e)
		// Kill only once this run has saved progress, at a random moment
		// after that.
		deadline := time.Now().Add(30 * time.Second)
		for progress() == before {
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Fatalf("kill %d: the child made no progress", k)
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("kill %d: child ended with %v, not by SIGKILL", k, err)
		}
		time.Sleep(2 * testDuplicateWindow)
	}

	b := e.client(t, nil)
	defer b.Close()
	o := e.options(b)
	o.FromID = u64(0)
	in, stop := startIngest(t, o)
	e.waitWorkload(t, 1, 2)
	truth := truthAll(t, e, 1, 2)
	waitCheckpoints(t, in, lastIDs(truth), 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	var dups uint64
	for _, s := range in.Stats().Shards {
		dups += s.Duplicates
	}
	checkExactlyOnce(t, readStream(t, e.srv), truth, nil)
	t.Logf("%d SIGKILLs; final run: %d duplicates dropped by the server", kills, dups)
}
