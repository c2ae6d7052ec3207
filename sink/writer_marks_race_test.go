package sink

import (
	"context"
	"testing"
	"time"

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
			page := make(chan error, 1)
			go func() {
				_, err := backfill.Write(ctx, []*pb.HubEvent{merge(m), onchain(29, 10, 0, 1, &pb.StorageRentEventBody{Units: 1})})
				page <- err
			}()
			waitForLockWaiters(t, pool, 1)
			marked := make(chan error, 1)
			go func() {
				evs := []*pb.HubEvent{tc.mark(m)}
				if tc.withAdd {
					evs = append([]*pb.HubEvent{merge(m)}, evs...)
				}
				_, err := live.Write(ctx, evs)
				marked <- err
			}()
			// The mark's transaction waits on the page's uncommitted row.
			waitForLockWaiters(t, pool, 2)
			if err := blocker.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			for _, ch := range []chan error{page, marked} {
				if err := <-ch; err != nil {
					t.Fatalf("write: %v", err)
				}
			}
			if isLive(t, pool, tc.table, m.Hash) {
				t.Errorf("%s: the message is live although a committed %s removed it", tc.table, tc.mark(m).Type)
			}
		})
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
