//go:build faults

package faults

import (
	"context"
	"slices"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// classify counts the differing items per store and direction ("missing
// user_data": live on the node, not in Postgres; "extra links": the
// reverse), so the summary says where a mismatch lies. Every one of them
// is a mismatch: no difference is known or excused.
func classify(ctx context.Context, pool *pgxpool.Pool, truth *devnet.State, maxFID int) (map[string]int, error) {
	out := map[string]int{}
	for _, store := range testsupport.ComparedStores {
		want := truth.Hashes(store)
		got, err := testsupport.LiveInPostgres(ctx, pool, store, maxFID)
		if err != nil {
			return nil, err
		}
		for fid := uint64(1); fid <= uint64(maxFID); fid++ {
			for _, h := range want[fid] {
				if !slices.Contains(got[fid], h) {
					out["missing "+string(store)]++
				}
			}
			for _, h := range got[fid] {
				if !slices.Contains(want[fid], h) {
					out["extra "+string(store)]++
				}
			}
		}
	}
	return out, nil
}
