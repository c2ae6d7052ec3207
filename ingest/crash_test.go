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
		in, kill := startKillable(t, e, func(o *Options) {
			o.CheckpointInterval = time.Duration(10+rng.IntN(60)) * time.Millisecond
			// Small bounds keep many publishes in flight at the kill.
			o.MaxInFlight = 64 + rng.IntN(2000)
		})
		time.Sleep(time.Duration(20+rng.IntN(250)) * time.Millisecond)
		kill()
		for _, s := range in.Stats().Shards {
			published += s.Published
		}
		restarts++
		if run%3 == 0 {
			time.Sleep(2 * testDuplicateWindow)
		}
	}

	// A final, undisturbed run to the end of the workload.
	dups := finalRun(t, e)
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

	dups := finalRun(t, e)
	t.Logf("%d SIGKILLs; final run: %d duplicates dropped by the server", kills, dups)
}

// TestKillBeforeFirstCheckpoint kills ingest after it published but before
// it saved any checkpoint: the restart has only the stream position
// recorded when the shard started, and must find everything the killed run
// stored by reading the stream back from it.
func TestKillBeforeFirstCheckpoint(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 17, FIDs: 300, Preload: 20000, Duration: time.Nanosecond}, bus.Options{DuplicateWindow: testDuplicateWindow})
	in, kill := startKillable(t, e, func(o *Options) { o.CheckpointInterval = time.Hour })
	deadline := time.Now().Add(30 * time.Second)
	for published(in) < 2000 {
		if time.Now().After(deadline) {
			t.Fatalf("the first run published only %d events", published(in))
		}
		time.Sleep(5 * time.Millisecond)
	}
	kill()
	for _, s := range []uint32{1, 2} {
		if _, ok, err := e.srv.LoadCheckpoint(context.Background(), s); err != nil || ok {
			t.Fatalf("shard %d: a checkpoint was saved before the kill (ok=%v, err=%v)", s, ok, err)
		}
	}
	time.Sleep(2 * testDuplicateWindow)

	found := finalRun(t, e)
	if found == 0 {
		t.Fatal("the restart found none of the killed run's events in the stream")
	}
	t.Logf("first run: %d events acknowledged; restart: %d found already stored", published(in), found)
}

func published(in *Ingester) uint64 {
	var n uint64
	for _, s := range in.Stats().Shards {
		n += s.Published
	}
	return n
}
