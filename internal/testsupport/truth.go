package testsupport

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/devnet"
)

// ComparedStores are the simulator stores that have a table in Postgres,
// in the order comparisons report them.
var ComparedStores = []devnet.Store{
	devnet.StoreCasts, devnet.StoreReactions, devnet.StoreLinks, devnet.StoreVerifications, devnet.StoreUserData,
	devnet.StoreLendStorage, devnet.StoreLinkCompactState, devnet.StoreUsernameProofs, devnet.StoreOnChainEvents,
}

// SettledState waits until the simulator's workload is over and returns
// its ground truth. It waits for the simulator's own signal: shard heights
// that stop moving are no proof, since blocks keep coming at a
// BlockInterval and a workload starved of CPU leaves them still for a
// while, which would yield a truth taken mid-workload.
func SettledState(t testing.TB, sim *devnet.Sim) *devnet.State {
	t.Helper()
	select {
	case <-sim.WorkloadDone():
	case <-time.After(settleTimeout):
		t.Fatalf("the simulator's workload did not end within %v (a workload needs a Duration to settle)", settleTimeout)
	}
	return sim.State()
}

// settleTimeout bounds the wait for a workload to end; workloads in tests
// run for seconds.
const settleTimeout = 5 * time.Minute

// LiveInPostgres returns, per fid in 1..maxFID, the sorted live keys of a
// store in the notation of devnet.State.Hashes.
func LiveInPostgres(ctx context.Context, pool *pgxpool.Pool, store devnet.Store, maxFID int) (map[uint64][]string, error) {
	var q string
	switch store {
	case devnet.StoreUsernameProofs:
		q = `SELECT fid, username FROM username_proofs WHERE deleted_at IS NULL`
	case devnet.StoreOnChainEvents:
		// On-chain events are never deleted.
		q = `SELECT fid, type::text || ':0x' || encode(tx_hash, 'hex') || ':' || log_index::text FROM onchain_events WHERE true`
	case devnet.StoreLinkCompactState:
		q = `SELECT fid, '0x' || encode(hash, 'hex') FROM link_compact_states WHERE deleted_at IS NULL`
	default:
		q = fmt.Sprintf(`SELECT fid, '0x' || encode(hash, 'hex') FROM %s WHERE deleted_at IS NULL`, store)
	}
	rows, err := pool.Query(ctx, q+` AND fid BETWEEN 1 AND $1`, maxFID)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", store, err)
	}
	defer rows.Close()
	out := map[uint64][]string{}
	for rows.Next() {
		var fid int64
		var key string
		if err := rows.Scan(&fid, &key); err != nil {
			return nil, fmt.Errorf("read %s: %w", store, err)
		}
		out[uint64(fid)] = append(out[uint64(fid)], key)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", store, err)
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out, nil
}

// Comparison is the outcome of comparing Postgres with the simulator.
type Comparison struct {
	// Compared counts the live items of the ground truth that were checked.
	Compared int
	// Mismatches describes every fid and store that differ.
	Mismatches []string
	// PerStore counts the live items compared per store.
	PerStore map[devnet.Store]int
}

// Compare checks, store by store and fid by fid, that the live rows in
// Postgres are exactly the simulator's live set for fids 1..maxFID.
func Compare(ctx context.Context, pool *pgxpool.Pool, truth *devnet.State, maxFID int) (Comparison, error) {
	c := Comparison{PerStore: map[devnet.Store]int{}}
	for _, store := range ComparedStores {
		want := truth.Hashes(store)
		got, err := LiveInPostgres(ctx, pool, store, maxFID)
		if err != nil {
			return c, err
		}
		for fid := uint64(1); fid <= uint64(maxFID); fid++ {
			c.Compared += len(want[fid])
			c.PerStore[store] += len(want[fid])
			if !slices.Equal(got[fid], want[fid]) {
				c.Mismatches = append(c.Mismatches, fmt.Sprintf("%s of fid %d: postgres has %d live, simulator %d\n got  %v\n want %v",
					store, fid, len(got[fid]), len(want[fid]), got[fid], want[fid]))
			}
		}
	}
	return c, nil
}

// AssertMatchesTruth fails the test unless Postgres equals the simulator's
// live state for fids 1..maxFID, and unless the comparison covered data in
// every store that the workload always produces (a comparison of nothing
// proves nothing).
func AssertMatchesTruth(t testing.TB, pool *pgxpool.Pool, truth *devnet.State, maxFID int) Comparison {
	t.Helper()
	c, err := Compare(context.Background(), pool, truth, maxFID)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Mismatches {
		t.Error(m)
	}
	for _, store := range ComparedStores {
		n := c.PerStore[store]
		t.Logf("%s: %d live items compared", store, n)
		if n == 0 && store != devnet.StoreLinkCompactState && store != devnet.StoreLendStorage {
			t.Errorf("%s: the simulator has no data for fids 1..%d, the comparison proves nothing", store, maxFID)
		}
	}
	return c
}

// WaitForTruth polls until Postgres equals the simulator's live state for
// fids 1..maxFID or the timeout passes, then asserts it; it returns how
// long convergence took.
func WaitForTruth(t testing.TB, pool *pgxpool.Pool, truth *devnet.State, maxFID int, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		c, err := Compare(context.Background(), pool, truth, maxFID)
		if err == nil && len(c.Mismatches) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	AssertMatchesTruth(t, pool, truth, maxFID)
	return took
}
