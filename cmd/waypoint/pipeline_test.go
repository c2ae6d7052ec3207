//go:build faults

package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// TestStartAndBackfillMatchSimulator runs what an operator runs against a
// live node: `waypoint start` follows the hub from now on while
// `waypoint backfill enqueue` queues the history, which the same process
// imports. Live events and backfill pages overlap, and the database must
// end equal to the simulator's state, row for row. The deployment is then
// repeated against a second, empty database behind the same Redis: the
// dedupe cache filled by the first must not make the second skip anything.
func TestStartAndBackfillMatchSimulator(t *testing.T) {
	const fids = 30
	sim, addr := testsupport.StartDevnet(t, devnet.Options{
		Seed: 5, FIDs: fids, Preload: 4000, Rate: 300, Duration: 3 * time.Second, BlockInterval: 50 * time.Millisecond,
	})
	for round, prefix := range []string{"a:", "a:"} {
		env, pool := pipelineEnv(t, addr, prefix)
		stop := startCLI(t, env, "start", "--replicas", "2")
		// Backfill must read the hub after ingest subscribed: what changes
		// between a FID's backfill read and the subscription would be seen
		// by neither (the operator's order too, see the README). Rows from
		// live events show the subscription is up.
		waitForRows(t, pool, 60*time.Second)
		code, out, errOut := runCLI(t, env, "backfill", "enqueue", "--max-fid", "30", "--batch-size", "7")
		if code != exitOK || !strings.Contains(out, "queued 5 jobs with 30 FIDs") {
			t.Fatalf("round %d: backfill enqueue: exit %d, stdout %q, stderr %q", round, code, out, errOut)
		}
		truth := testsupport.SettledState(t, sim)
		took := testsupport.WaitForTruth(t, pool, truth, fids, 3*time.Minute)
		t.Logf("round %d: converged %v after the workload settled", round, took)
		if code, errOut := stop(); code != exitOK {
			t.Fatalf("round %d: waypoint start exited %d on shutdown: %s", round, code, errOut)
		}
		code, out, _ = runCLI(t, env, "backfill", "status")
		if code != exitOK || !strings.Contains(out, "done 5/30") || !strings.Contains(out, "failed 0/0") {
			t.Fatalf("round %d: backfill status: %q", round, out)
		}
		code, out, _ = runCLI(t, env, "dlq", "list")
		if code != exitOK || !strings.Contains(out, "0 dead letter(s)") {
			t.Fatalf("round %d: valid traffic was dead-lettered: %s", round, out)
		}
	}
}

// waitForRows waits until the sink has written some message, i.e. ingest
// is subscribed and the live path works.
func waitForRows(t *testing.T, pool *pgxpool.Pool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM messages`).Scan(&n); err == nil && n > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no live event reached Postgres within %v", timeout)
}
