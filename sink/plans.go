package sink

import (
	"context"
	"fmt"
	"math/bits"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// plans prepares the merge statements on each connection a Writer uses,
// and prepares them again, so has them planned again, as the connection's
// batches add up (see Writer.merge).
type plans struct {
	mu    sync.Mutex
	conns map[*pgconn.PgConn]*connPlans
}

// connPlans is what one connection has prepared.
type connPlans struct {
	batches int
	gen     map[string]int // statement name → generation it was prepared in
}

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

// prepare makes sure stmts are prepared on c in the generation of this
// batch: a round trip for each one prepared before that generation or not
// at all; pgx keeps those that are current.
func (p *plans) prepare(ctx context.Context, c *pgx.Conn, stmts []*mergeStmt) error {
	pg := c.PgConn()
	p.mu.Lock()
	if p.conns == nil {
		p.conns = map[*pgconn.PgConn]*connPlans{}
	}
	cp := p.conns[pg]
	if cp == nil {
		// Forget connections the pool has closed.
		for k := range p.conns {
			if k.IsClosed() {
				delete(p.conns, k)
			}
		}
		cp = &connPlans{gen: map[string]int{}}
		p.conns[pg] = cp
	}
	gen := generation(cp.batches)
	cp.batches++
	p.mu.Unlock()
	// A connection is used by one Write at a time, so cp.gen is this
	// goroutine's until it releases the connection.
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
