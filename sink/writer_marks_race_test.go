package sink

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	pb "github.com/waypointhq/waypoint/proto"
)

// TestMarkWhileAnotherWriterAddsTheMessage covers a backfill page and a live
// prune or revoke of the same message committed by two writers at once:
// the page's transaction inserted the message and read message_marks
// before the mark was committed, so the mark's transaction must still mark
// the row once the page commits. Otherwise the message stays live for good
// although the node dropped it.
func TestMarkWhileAnotherWriterAddsTheMessage(t *testing.T) {
	cases := []struct {
		name  string
		table string
		msg   func(t *testing.T) *pb.Message
		mark  func(*pb.Message) *pb.HubEvent
		// withAdd puts the message's own merge in the mark's batch too,
		// which then COPYs it with its new rows.
		withAdd bool
	}{
		{"pruned cast", "casts", func(t *testing.T) *pb.Message { return castAdd(t, 29, 100, "pruned", nil) }, prune, false},
		{"revoked cast", "casts", func(t *testing.T) *pb.Message { return castAdd(t, 29, 101, "revoked", nil) }, revoke, false},
		{"pruned lend", "lend_storage", func(t *testing.T) *pb.Message { return lendStorage(t, 29, 102, 30, 1) }, prune, false},
		{"pruned reaction", "reactions", func(t *testing.T) *pb.Message {
			return reaction(t, false, 29, 104, pb.ReactionType_REACTION_TYPE_LIKE, nil, "https://example.com/a")
		}, prune, false},
		{"revoked link", "links", func(t *testing.T) *pb.Message { return link(t, false, 29, 105, "follow", 30) }, revoke, false},
		{"pruned user data", "user_data", func(t *testing.T) *pb.Message { return userData(t, 29, 106, pb.UserDataType_USER_DATA_TYPE_BIO, "bio") }, prune, false},
		{"revoked verification", "verifications", func(t *testing.T) *pb.Message { return verification(t, false, 29, 107, []byte{0xab, 0xcd}) }, revoke, false},
		{"pruned compact state", "link_compact_states", func(t *testing.T) *pb.Message { return linkCompact(t, 29, 108, "follow", []uint64{30}) }, prune, false},
		{"pruned message row", "messages", func(t *testing.T) *pb.Message { return castAdd(t, 29, 103, "message", nil) }, prune, false},
		{"message row removed in the batch that adds it", "messages", func(t *testing.T) *pb.Message { return castAdd(t, 29, 109, "added and removed", nil) },
			func(m *pb.Message) *pb.HubEvent { return merge(castRemove(t, 29, 110, m.Hash), m) }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			pool := migratedPool(t)
			backfill, live := newTestWriter(t, pool), newTestWriter(t, pool)
			m := tc.msg(t)

			// Hold the page's transaction open after it stored m: its
			// last statements insert an on-chain event, which waits
			// while another session holds the table in share mode.
			blocker, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer blocker.Rollback(ctx) //nolint:errcheck // released below
			if _, err := blocker.Exec(ctx, "LOCK TABLE onchain_events IN SHARE MODE"); err != nil {
				t.Fatal(err)
			}
			marks := []*pb.HubEvent{tc.mark(m)}
			if tc.withAdd {
				marks = append([]*pb.HubEvent{merge(m)}, marks...)
			}
			// The mark's transaction waits on the page's uncommitted row.
			writeBehind(ctx, t, pool, blocker,
				write{backfill, []*pb.HubEvent{merge(m), onchain(29, 10, 0, 1, &pb.StorageRentEventBody{Units: 1})}},
				write{live, marks})
			if isLive(t, pool, tc.table, m.Hash) {
				t.Errorf("%s: the message is live although a committed %s removed it", tc.table, tc.mark(m).Type)
			}
		})
	}
}

// write is one batch for one writer.
type write struct {
	w   *Writer
	evs []*pb.HubEvent
}

// writeBehind starts first, which must come to wait on a lock blocker
// holds, then second, which must come to wait on a lock too (one first
// holds), then releases blocker and waits for both writes to succeed.
func writeBehind(ctx context.Context, t *testing.T, pool *pgxpool.Pool, blocker pgx.Tx, first, second write) {
	t.Helper()
	done := make(chan error, 2)
	for i, wr := range []write{first, second} {
		go func() {
			_, err := wr.w.Write(ctx, wr.evs)
			done <- err
		}()
		waitForLockWaiters(t, pool, i+1)
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// waitForLockWaiters waits until n sessions of the test database wait on a
// lock.
func waitForLockWaiters(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		err := pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d session(s) waiting on a lock after 30s, want %d", waiting, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReviveWaitsForConcurrentMark covers a writer reviving a dead version
// while another writer marks that same version: batch A revokes X, the
// live USERNAME, so its merge revives Y, which lost the tie to X; batch B,
// committed while A's revival waits on Y's row, prunes Y. A's revival must
// see B's mark once B commits and leave Y deleted: the node holds neither.
func TestReviveWaitsForConcurrentMark(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool := migratedPool(t)
	a, b := newTestWriter(t, pool), newTestWriter(t, pool)
	const fid = 31
	x, y := tiedUsernames(t, fid)
	// Z is what holds B's transaction open once it marked Y: B's batch
	// also supersedes Z, whose row another session holds locked.
	z, newer := userData(t, fid+1, 10, pb.UserDataType_USER_DATA_TYPE_BIO, "z"), userData(t, fid+1, 20, pb.UserDataType_USER_DATA_TYPE_BIO, "newer")
	mustWrite(t, a, merge(x), merge(y), merge(z))
	if !isLive(t, pool, "user_data", x.Hash) || isLive(t, pool, "user_data", y.Hash) {
		t.Fatal("X must win the tie and Y lose it")
	}

	blocker, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(ctx) //nolint:errcheck // released below
	if _, err := blocker.Exec(ctx, "SELECT 1 FROM user_data WHERE hash = $1 FOR UPDATE", z.Hash); err != nil {
		t.Fatal(err)
	}
	// Marks are applied to the keyed stores before their merges, so B
	// holds Y's row when its merge waits on Z's; A's revival of Y waits on
	// B's uncommitted mark of Y.
	writeBehind(ctx, t, pool, blocker, write{b, []*pb.HubEvent{prune(y), merge(newer)}}, write{a, []*pb.HubEvent{revoke(x)}})
	if isLive(t, pool, "user_data", y.Hash) {
		t.Error("Y is live although a committed prune removed it")
	}
	if isLive(t, pool, "user_data", x.Hash) {
		t.Error("X is live although it was revoked")
	}
	if !isLive(t, pool, "user_data", newer.Hash) || isLive(t, pool, "user_data", z.Hash) {
		t.Error("the newer BIO must replace Z")
	}
}
