package sink

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	pb "github.com/waypointhq/waypoint/proto"
)

// TestReviveWinnersAfterExternalMark reproduces a reconciliation after lost
// events: the node revoked W (its fname moved away) and then accepted R, of
// W's timestamp and a lower hash. Neither event reached Postgres, so the
// reconciliation writes R, which loses the tie to W, still live, and then
// marks W deleted because the hub no longer has it. ReviveWinners must then
// make R live, whatever order W and R were written in, and the late revoke
// of W must keep it so.
func TestReviveWinnersAfterExternalMark(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	ctx := context.Background()
	fid := uint64(7000)
	for _, order := range permutations(2) {
		for _, batching := range []string{"one batch", "one per batch"} {
			fid++
			t.Run(fmt.Sprintf("%v/%s", order, batching), func(t *testing.T) {
				win, lose := tiedUsernames(t, fid)
				evs := inOrder([]*pb.HubEvent{merge(win), merge(lose)}, order)
				if batching == "one batch" {
					mustWrite(t, w, evs...)
				} else {
					writeEach(t, w, evs...)
				}
				if isLive(t, pool, "user_data", lose.Hash) {
					t.Fatal("R is live before W is marked: it must lose the tie")
				}
				// The mark a reconciliation sets on a row the hub no longer has.
				if _, err := pool.Exec(ctx, `UPDATE user_data SET deleted_at = now(), marked = true WHERE hash = $1`, win.Hash); err != nil {
					t.Fatal(err)
				}
				if err := ReviveWinners(ctx, pool, "user_data", fid); err != nil {
					t.Fatal(err)
				}
				if !isLive(t, pool, "user_data", lose.Hash) {
					t.Error("R, the node's USERNAME, is not live after W was marked")
				}
				mustWrite(t, w, revoke(win))
				mustWrite(t, w, evs...)
				if !isLive(t, pool, "user_data", lose.Hash) {
					t.Error("R is not live after W's late revoke and a redelivery")
				}
				if isLive(t, pool, "user_data", win.Hash) {
					t.Error("W, marked, is live")
				}
			})
		}
	}
}

// tiedUsernames returns two USERNAME messages of fid with one timestamp,
// win ordering above lose by hash, as the writer breaks the tie.
func tiedUsernames(t *testing.T, fid uint64) (win, lose *pb.Message) {
	t.Helper()
	for i := 0; ; i++ {
		a := userData(t, fid, 13, pb.UserDataType_USER_DATA_TYPE_USERNAME, fmt.Sprintf("w%d", i))
		b := userData(t, fid, 13, pb.UserDataType_USER_DATA_TYPE_USERNAME, fmt.Sprintf("r%d", i))
		switch bytes.Compare(a.Hash, b.Hash) {
		case 1:
			return a, b
		case -1:
			return b, a
		}
	}
}
