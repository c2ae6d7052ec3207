package sink

import (
	"context"
	"fmt"
	"math/bits"

	"github.com/jackc/pgx/v5"
)

// connPlans is what one connection has prepared. It lives in the
// connection's custom data, so that it is only ever touched by whoever
// holds the connection, and is shared by every Writer using the pool:
// the merge statements are named by their SQL, so one prepared by a
// Writer serves them all.
type connPlans struct {
	batches int
	gen     map[string]int // statement name → generation it was prepared in
}

// plansKey is connPlans' key in pgconn.PgConn.CustomData.
const plansKey = "waypoint.sink.plans"

// generation numbers the plans of a connection's n-th batch (from 0): new
// plans at batch 1, 2, 4, 8 and so on up to 4096, then every 4096th. Plans
// made early follow the tables as they fill up: those of a connection's
// first batch on a new database are made for empty tables, and several of
// them then join each staged row with every row stored (quadratic in the
// batch, hundreds of milliseconds for one of a few thousand messages).
// Planning them all again costs about as much as one batch's merge.
func generation(n int) int {
	if n < 4096 {
		return bits.Len(uint(n))
	}
	return 12 + n/4096
}

// preparePlans makes sure stmts are prepared on c, which the caller holds,
// in the generation of this batch: a round trip for each one prepared
// before that generation or not at all; pgx keeps those that are current.
func preparePlans(ctx context.Context, c *pgx.Conn, stmts []*mergeStmt) error {
	data := c.PgConn().CustomData()
	cp, _ := data[plansKey].(*connPlans)
	if cp == nil {
		cp = &connPlans{gen: map[string]int{}}
		data[plansKey] = cp
	}
	gen := generation(cp.batches)
	cp.batches++
	for _, m := range stmts {
		g, ok := cp.gen[m.name]
		if ok && g == gen {
			continue
		}
		if ok {
			if err := c.Deallocate(ctx, m.name); err != nil {
				return fmt.Errorf("sink: deallocate merge into %s: %w", m.table, err)
			}
		}
		if _, err := c.Prepare(ctx, m.name, m.sql); err != nil {
			return fmt.Errorf("sink: prepare merge into %s: %w", m.table, err)
		}
		cp.gen[m.name] = gen
	}
	return nil
}
