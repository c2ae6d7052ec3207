//go:build faults

package faults

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// midBatchKills is how many times TestFaultSinkKilledMidBatch SIGKILLs a
// sink process inside a write transaction.
const midBatchKills = 20

// TestFaultSinkKilledMidBatch SIGKILLs a sink process 20 times, each time
// while one of its write transactions is open: it watches the database
// for a transaction of the sink that has written (it has an xid), kills
// the process, and counts the kill only if that transaction then aborted
// rather than committed. Between kills the sink commits a few batches at
// random, so some die before their first commit and some after several
// (committed and unacknowledged ones come back as redeliveries). A fresh
// sink then drains the stream, and Postgres must equal the simulator.
func TestFaultSinkKilledMidBatch(t *testing.T) {
	nats := testsupport.StartNATSServer(t)
	pl := newPipeline(t, devnet.Options{Seed: 113, FIDs: 60, Preload: 20000, Rate: 200, Duration: 5 * time.Second}, "")
	pl.startIngest(nats.URL)
	rng := rand.New(rand.NewPCG(113, 2))
	ctx := context.Background()

	midBatch, committedFirst := 0, 0
	deadline := time.Now().Add(3 * time.Minute)
	for midBatch < midBatchKills {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d kills landed inside a transaction (%d found theirs committed) before the deadline", midBatch, midBatchKills, committedFirst)
		}
		child := pl.startChild("sink", nats.URL)
		// Let it commit 0 to 3 batches first, then kill it inside the next.
		xid, ok := pl.openWriteTransaction(ctx, rng.IntN(4), 30*time.Second)
		if !ok {
			sigkill(t, child)
			t.Fatalf("the sink opened no write transaction within 30s (after %d kills)", midBatch)
		}
		sigkill(t, child)
		switch pl.transactionOutcome(ctx, xid, 10*time.Second) {
		case "aborted":
			midBatch++
		case "committed":
			// It committed between the look and the kill: a kill between
			// batches, which does not count.
			committedFirst++
		default:
			t.Fatalf("transaction %d of the killed sink neither committed nor aborted within 10s", xid)
		}
	}
	t.Logf("%d SIGKILLs inside a write transaction (%d more landed just after a commit)", midBatch, committedFirst)
	healed := time.Now()
	pl.startChild("sink", nats.URL)
	pl.converge("sink SIGKILLed mid-transaction x20", healed, 60*time.Second, nats.URL)
}

// openWriteTransaction waits until some backend of the test database other
// than the harness's own has a transaction that has written, skipping the
// first skip such transactions it sees, and returns that transaction's id.
func (pl *pipeline) openWriteTransaction(ctx context.Context, skip int, timeout time.Duration) (xid int64, ok bool) {
	deadline := time.Now().Add(timeout)
	var seen []int64
	for time.Now().Before(deadline) {
		err := pl.pool.QueryRow(ctx, `SELECT backend_xid::text::int8 FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
			ORDER BY backend_xid::text::int8 DESC LIMIT 1`).Scan(&xid)
		if err == nil && !slices.Contains(seen, xid) {
			if len(seen) == skip {
				return xid, true
			}
			seen = append(seen, xid)
		}
		time.Sleep(time.Millisecond)
	}
	return 0, false
}

// transactionOutcome waits for transaction xid to end and returns its
// status: "committed", "aborted", or "in progress" at the timeout. The
// test cluster's transaction ids are in their first epoch, so the 32-bit
// id is the full one.
func (pl *pipeline) transactionOutcome(ctx context.Context, xid int64, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		var status string
		if err := pl.pool.QueryRow(ctx, `SELECT pg_xact_status($1::int8::text::xid8)`, xid).Scan(&status); err != nil {
			pl.t.Fatalf("status of transaction %d: %v", xid, err)
		}
		if status != "in progress" || time.Now().After(deadline) {
			return status
		}
		time.Sleep(5 * time.Millisecond)
	}
}
