//go:build faults

package faults

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

// Two differences between the writer and the simulator are known and
// being fixed outside this suite. Mismatches are still failures; the
// table only says which of them are those, so that anything else stands
// out.
const (
	knownUsername    = "username"    // a USERNAME user_data row missing (revoke ties a re-merge)
	knownCompactTie  = "compact-tie" // a link as old as a LINK_COMPACT_STATE that omits it, still live
	unexplainedClass = "unexplained" // anything else
)

// classify sorts every differing item into the classes above.
func classify(ctx context.Context, pool *pgxpool.Pool, truth *devnet.State, maxFID int) (map[string]int, error) {
	out := map[string]int{}
	for _, store := range testsupport.ComparedStores {
		want := truth.Hashes(store)
		got, err := testsupport.LiveInPostgres(ctx, pool, store, maxFID)
		if err != nil {
			return nil, err
		}
		for fid := uint64(1); fid <= uint64(maxFID); fid++ {
			// Only a fid whose other user data all arrived shows the
			// known defect; when more is missing the cause is elsewhere.
			onlyUsername := true
			for _, h := range want[fid] {
				if !slices.Contains(got[fid], h) && !isUsername(truth, fid, h) {
					onlyUsername = false
				}
			}
			for _, h := range want[fid] {
				if slices.Contains(got[fid], h) {
					continue
				}
				if store == devnet.StoreUserData && onlyUsername && isUsername(truth, fid, h) {
					out[knownUsername]++
				} else {
					out[unexplainedClass]++
				}
			}
			for _, h := range got[fid] {
				if slices.Contains(want[fid], h) {
					continue
				}
				tie := false
				if store == devnet.StoreLinks {
					if tie, err = compactTie(ctx, pool, truth, fid, h); err != nil {
						return nil, err
					}
				}
				if tie {
					out[knownCompactTie]++
				} else {
					out[unexplainedClass]++
				}
			}
		}
	}
	return out, nil
}

func isUsername(truth *devnet.State, fid uint64, h string) bool {
	for _, m := range truth.Messages[devnet.StoreUserData][fid] {
		if "0x"+hex.EncodeToString(m.GetHash()) == h {
			return m.GetData().GetUserDataBody().GetType() == pb.UserDataType_USER_DATA_TYPE_USERNAME
		}
	}
	return false
}

// compactTie reports whether the live link h has the timestamp of one of
// the fid's compact states of its type that does not list its target.
func compactTie(ctx context.Context, pool *pgxpool.Pool, truth *devnet.State, fid uint64, h string) (bool, error) {
	raw, err := hex.DecodeString(h[2:])
	if err != nil {
		return false, err
	}
	var ts int64
	var target int64
	var typ string
	if err := pool.QueryRow(ctx, `SELECT extract(epoch FROM "timestamp")::bigint - 1609459200, target_fid, type FROM links WHERE hash = $1`, raw).Scan(&ts, &target, &typ); err != nil {
		return false, fmt.Errorf("read link %s: %w", h, err)
	}
	for _, m := range truth.Messages[devnet.StoreLinkCompactState][fid] {
		b := m.GetData().GetLinkCompactStateBody()
		if int64(m.GetData().GetTimestamp()) == ts && b.GetType() == typ && !slices.Contains(b.GetTargetFids(), uint64(target)) {
			return true, nil
		}
	}
	return false, nil
}
