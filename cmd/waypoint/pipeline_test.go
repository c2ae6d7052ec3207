package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// TestStartAndBackfillMatchSimulator runs what an operator runs against a
// live node: `waypoint start` follows the hub from now on while
// `waypoint backfill enqueue` queues the history, which the same process
// imports. Live events and backfill pages overlap, and the database must
// end equal to the simulator's state, row for row. The deployment is then
// repeated against a second, empty database behind the same Redis key
// space: the dedupe cache filled by the first must not make the second
// skip anything.
func TestStartAndBackfillMatchSimulator(t *testing.T) {
	const fids = 30
	sim, addr := testsupport.StartDevnet(t, devnet.Options{
		Seed: 5, FIDs: fids, Preload: 4000, Rate: 300, Duration: 3 * time.Second, BlockInterval: 50 * time.Millisecond,
	})
	rdb := testsupport.NewRedis(t)
	for round := range 2 {
		env, pool := pipelineEnvWithRedis(t, addr, rdb, "shared:")
		if code, out, errOut := runCLI(t, env, "migrate", "up"); code != exitOK {
			t.Fatalf("round %d: migrate up: exit %d: %s %s", round, code, out, errOut)
		}
		subscribed := sim.Subscriptions()
		stop := startCLI(t, env, "start", "--replicas", "2")
		// Backfill must read the hub after ingest subscribed: what changes
		// between a FID's backfill read and the subscription would be seen
		// by neither (the operator's order too, see the README).
		waitForSubscriptions(t, sim, subscribed+uint64(sim.Shards()), time.Minute)
		code, out, errOut := runCLI(t, env, "backfill", "enqueue", "--max-fid", "30", "--batch-size", "7")
		if code != exitOK || !strings.Contains(out, "queued 5 jobs with 30 FIDs") {
			t.Fatalf("round %d: backfill enqueue: exit %d, stdout %q, stderr %q", round, code, out, errOut)
		}
		truth := testsupport.SettledState(t, sim)
		took := testsupport.WaitForTruth(t, pool, truth, fids, 3*time.Minute)
		t.Logf("round %d: converged %v after the workload settled", round, took)
		// The rows can all be in before the last job is marked done, and
		// a job in progress at shutdown goes back to the queue.
		done := fmt.Sprintf("done %d/%d", 5*(round+1), 30*(round+1))
		waitForBackfill(t, env, done, time.Minute)
		if code, errOut := stop(); code != exitOK {
			t.Fatalf("round %d: waypoint start exited %d on shutdown: %s", round, code, errOut)
		}
		// The queue is shared too, so it counts both rounds' jobs.
		code, out, _ = runCLI(t, env, "backfill", "status")
		if code != exitOK || !strings.Contains(out, done) || !strings.Contains(out, "failed 0/0") {
			t.Fatalf("round %d: backfill status: want %q and no failures, got %q", round, done, out)
		}
		code, out, _ = runCLI(t, env, "sink", "dlq", "list")
		if code != exitOK || !strings.Contains(out, "0 dead letter(s)") {
			t.Fatalf("round %d: valid traffic was dead-lettered: %s", round, out)
		}
	}
}

// waitForBackfill waits until `backfill status` reports want.
func waitForBackfill(t *testing.T, env []string, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, out, _ := runCLI(t, env, "backfill", "status")
		if code == exitOK && strings.Contains(out, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backfill did not reach %q within %v: %s", want, timeout, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitForSubscriptions waits until the simulator has opened n Subscribe
// streams in all.
func waitForSubscriptions(t *testing.T, sim *devnet.Sim, n uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for sim.Subscriptions() < n {
		if time.Now().After(deadline) {
			t.Fatalf("ingest did not subscribe within %v (%d of %d subscriptions)", timeout, sim.Subscriptions(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
