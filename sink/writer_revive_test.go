package sink

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	pb "github.com/waypointhq/waypoint/proto"
)

// inOrder returns history's events in the order order gives their indexes.
func inOrder(history []*pb.HubEvent, order []int) []*pb.HubEvent {
	evs := make([]*pb.HubEvent, len(order))
	for k, i := range order {
		evs[k] = history[i]
	}
	return evs
}

// writeEach writes evs one batch per event.
func writeEach(t testing.TB, w *Writer, evs ...*pb.HubEvent) {
	t.Helper()
	for _, ev := range evs {
		mustWrite(t, w, ev)
	}
}

// permutations returns every order of n items as index lists.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// TestWriterRevokedWinnerRevivesLoser reproduces the node history W merged
// and won, W revoked (its fname moved away), then R merged: R has W's
// timestamp and a lower hash, and the node accepts it because W is gone, so
// R is the fid's USERNAME. Every arrival order of the three events, in one
// batch or one per batch, and a backfill snapshot that already holds R, must
// leave R live and W deleted.
func TestWriterRevokedWinnerRevivesLoser(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	ctx := context.Background()
	fid := uint64(5000)
	for _, order := range permutations(3) {
		for _, batching := range []string{"one batch", "one per batch", "with snapshot"} {
			fid++
			name := fmt.Sprintf("%v/%s", order, batching)
			t.Run(name, func(t *testing.T) {
				win, lose := tiedUsernames(t, fid)
				evs := inOrder([]*pb.HubEvent{merge(win), revoke(win), merge(lose)}, order)
				switch batching {
				case "one batch":
					mustWrite(t, w, evs...)
				case "one per batch":
					writeEach(t, w, evs...)
				case "with snapshot":
					snap := &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
						Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: lose}}}
					mustWrite(t, w, evs[0], snap)
					mustWrite(t, w, evs[1:]...)
				}
				// Redelivery changes nothing.
				mustWrite(t, w, evs...)
				if !isLive(t, pool, "user_data", lose.Hash) {
					t.Error("R, accepted after W was revoked, is not live")
				}
				if isLive(t, pool, "user_data", win.Hash) {
					t.Error("W, revoked, is live")
				}
				var revoked bool
				if err := pool.QueryRow(ctx, `SELECT revoked_at IS NOT NULL FROM user_data WHERE hash = $1`, win.Hash).Scan(&revoked); err != nil || !revoked {
					t.Errorf("W's row: revoked = %v (%v), want the revoke kept as its cause", revoked, err)
				}
				var username string
				if err := pool.QueryRow(ctx, `SELECT username FROM profiles WHERE fid = $1`, int64(fid)).Scan(&username); err != nil {
					t.Fatalf("profile: %v", err)
				}
				if want := lose.Data.GetUserDataBody().Value; username != want {
					t.Errorf("profile username = %q, want %q", username, want)
				}
			})
		}
	}
}

// TestWriterMarkedHolderRevivesNext runs the same history for the other
// conflict-keyed stores and for prunes: once the winner is marked, the best
// unmarked version is live, and a remove among them keeps the key dead.
func TestWriterMarkedHolderRevivesNext(t *testing.T) {
	pool := migratedPool(t)
	var fid uint64 = 6000
	target := &pb.CastId{Fid: 1, Hash: bytes.Repeat([]byte{3}, 20)}
	addr := bytes.Repeat([]byte{0xcd}, 20)
	type mk func(t *testing.T, f uint64, ts uint32, remove bool) (*pb.Message, string)
	kinds := map[string]mk{
		"reaction": func(t *testing.T, f uint64, ts uint32, rm bool) (*pb.Message, string) {
			return reaction(t, rm, f, ts, pb.ReactionType_REACTION_TYPE_LIKE, target, ""), "reactions"
		},
		"link": func(t *testing.T, f uint64, ts uint32, rm bool) (*pb.Message, string) {
			return link(t, rm, f, ts, "follow", 9), "links"
		},
		"verification": func(t *testing.T, f uint64, ts uint32, rm bool) (*pb.Message, string) {
			return verification(t, rm, f, ts, addr), "verifications"
		},
	}
	for kind, version := range kinds {
		for _, mark := range []string{"prune", "revoke"} {
			for _, order := range permutations(4) {
				fid++
				f := fid
				t.Run(fmt.Sprintf("%s/%s/%v", kind, mark, order), func(t *testing.T) {
					w := newTestWriter(t, pool)
					old, table := version(t, f, 5, false) // superseded by top
					top, _ := version(t, f, 9, false)
					next, _ := version(t, f, 7, false) // merged after top is gone
					markTop := prune(top)
					if mark == "revoke" {
						markTop = revoke(top)
					}
					writeEach(t, w, inOrder([]*pb.HubEvent{merge(old), merge(top, old), markTop, merge(next)}, order)...)
					live := liveOfFid(t, pool, table, f)
					if !live[string(next.Hash)] || live[string(top.Hash)] || live[string(old.Hash)] || len(live) != 1 {
						t.Errorf("live: next %v top %v old %v (%d rows), want only next",
							live[string(next.Hash)], live[string(top.Hash)], live[string(old.Hash)], len(live))
					}
					// A newer remove deletes next for good: pruning the remove
					// leaves the key empty, until the node accepts another add,
					// however old.
					rm, _ := version(t, f, 8, true)
					mustWrite(t, w, merge(rm, next))
					if n := len(liveOfFid(t, pool, table, f)); n != 0 {
						t.Errorf("%d live rows after a remove, want 0", n)
					}
					mustWrite(t, w, prune(rm))
					if n := len(liveOfFid(t, pool, table, f)); n != 0 {
						t.Errorf("%d live rows after the remove was pruned, want 0: its merge deleted next", n)
					}
					last, _ := version(t, f, 6, false)
					mustWrite(t, w, merge(last), merge(next), prune(rm))
					if live := liveOfFid(t, pool, table, f); !live[string(last.Hash)] || len(live) != 1 {
						t.Errorf("after a new add: %d live rows, add live = %v; want only the add", len(live), live[string(last.Hash)])
					}
				})
			}
		}
	}
}

// TestWriterProofHolderDeleted checks fname proofs of one name: a proof a
// merge reports deleted is gone for good, and then the best proof left holds
// the name, in any arrival order.
func TestWriterProofHolderDeleted(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	for i, order := range permutations(3) {
		name := fmt.Sprintf("carol%d", i)
		older := fname(name, 21, 100) // held the name, then replaced by newer
		newer := fname(name, 22, 200)
		later := fname(name, 23, 150) // accepted after newer was deleted
		w := newTestWriter(t, pool)
		writeEach(t, w, inOrder([]*pb.HubEvent{proofEvent(older, nil), proofEvent(newer, older), proofEvent(later, newer)}, order)...)
		var fid int64
		if err := pool.QueryRow(ctx, `SELECT fid FROM username_proofs WHERE username = $1 AND deleted_at IS NULL`, name).Scan(&fid); err != nil || fid != 23 {
			t.Errorf("order %v: live holder of %s = %d (%v), want 23", order, name, fid, err)
		}
	}
}

// liveOfFid returns the hashes of fid's live rows in table.
func liveOfFid(t testing.TB, pool *pgxpool.Pool, table string, fid uint64) map[string]bool {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT hash FROM `+table+` WHERE fid = $1 AND deleted_at IS NULL`, int64(fid))
	if err != nil {
		t.Fatalf("query %s: %v", table, err)
	}
	hashes, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		t.Fatalf("query %s: %v", table, err)
	}
	out := map[string]bool{}
	for _, h := range hashes {
		out[string(h)] = true
	}
	return out
}
