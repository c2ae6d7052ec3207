package sink

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	pb "github.com/waypointhq/waypoint/proto"
)

// allMerges lists every merge statement the writer can run.
func allMerges() []*mergeStmt {
	m := []*mergeStmt{mergeMarks, mergeMessages, mergeMessagesMarks, mergeCastsMarked, mergeCasts, mergeCastRemoves,
		mergeOrphans, mergeCompacts, mergeCompactSupsede, mergeProofs, mergeProofsKill, mergeProofsRevive, mergeLends,
		mergeApplyMarksMessages}
	m = append(m, mergeCompactLinks[:]...)
	m = append(m, mergeOnchain...)
	for _, list := range [][len(storeTables)]*mergeStmt{mergeKeyed, mergeApplyMarks, mergeMissedMarks} {
		m = append(m, list[:]...)
	}
	return slices.DeleteFunc(m, func(s *mergeStmt) bool { return s == nil })
}

// planNode is the part of EXPLAIN (FORMAT JSON) a plan check reads.
type planNode struct {
	NodeType   string     `json:"Node Type"`
	JoinFilter string     `json:"Join Filter"`
	Relation   string     `json:"Relation Name"`
	CTE        string     `json:"CTE Name"`
	Plans      []planNode `json:"Plans"`
}

// pairwiseJoins returns the nested loops under n that test every pair of
// their inputs' rows against a join filter: an inner side read whole for
// each outer row (a CTE, a function's rows, a table, materialised rows),
// rather than probed through an index by the outer row's key.
func pairwiseJoins(n planNode) []string {
	var found []string
	if n.NodeType == "Nested Loop" && n.JoinFilter != "" && len(n.Plans) == 2 {
		switch inner := n.Plans[1]; inner.NodeType {
		case "CTE Scan", "Function Scan", "Seq Scan", "Materialize":
			found = append(found, fmt.Sprintf("%s %s%s with join filter %s", inner.NodeType, inner.Relation, inner.CTE, n.JoinFilter))
		}
	}
	for _, c := range n.Plans {
		found = append(found, pairwiseJoins(c)...)
	}
	return found
}

// TestMergePlansScaleWithTheBatch checks the generic plan of every merge
// statement as a connection's second generation of plans finds the tables
// (holding one batch, not analysed) and on tables holding a few batches and
// analysed: no nested loop compares each row of one input with every row of
// the other. Such a join is cheap for the ten rows the planner expects from
// a staged array and quadratic in a real batch: the marks update that
// joined the messages it fetched by an array of hashes with the found marks
// that way took 316 ms for 3,200 marks. (Plans made on empty tables do
// that; see generation.)
func TestMergePlansScaleWithTheBatch(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	w := newTestWriter(t, pool)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SET random_page_cost = 1.1"); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		evs := benchEvents(t, rng, i, uint64(i)*10_000)[:2000]
		// Every table gets rows, and every kind of mark, so that no plan
		// is made for an empty table.
		for j := range 300 {
			fid := uint64(i*1000 + j + 1)
			ts := uint32(100_000_000 + i*10)
			l := lendStorage(t, fid, ts, fid+1, 1)
			evs = append(evs, merge(linkCompact(t, fid, ts, "follow", []uint64{fid + 1, fid + 2})), merge(l),
				proofEvent(fname(fmt.Sprint("name", fid), fid, uint64(ts)), nil),
				onchain(fid, uint32(i*1000+j), 0, fid, &pb.StorageRentEventBody{Units: 1}))
			switch j % 3 {
			case 0:
				evs = append(evs, prune(l))
			case 1:
				evs = append(evs, revoke(evs[j].GetMergeMessageBody().GetMessage()))
			}
		}
		mustWrite(t, w, evs...)
		switch i {
		case 0:
			t.Run("one batch", func(t *testing.T) { checkPlans(ctx, t, conn.Conn()) })
		case 3:
			if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
				t.Fatal(err)
			}
			t.Run("analysed", func(t *testing.T) { checkPlans(ctx, t, conn.Conn()) })
		}
	}
}

// checkPlans fails t for each merge statement whose generic plan on c
// joins pairwise.
func checkPlans(ctx context.Context, t *testing.T, c *pgx.Conn) {
	for _, m := range allMerges() {
		// The simple protocol sends the text as is, parameters and all.
		res, err := c.PgConn().Exec(ctx, "EXPLAIN (GENERIC_PLAN, FORMAT JSON) "+m.sql).ReadAll()
		if err == nil && (len(res) != 1 || len(res[0].Rows) != 1) {
			err = fmt.Errorf("%d results", len(res))
		}
		if err != nil {
			t.Fatalf("explain merge into %s: %v\n%s", m.table, err, m.sql)
		}
		var plans []struct {
			Plan planNode `json:"Plan"`
		}
		if err := json.Unmarshal(res[0].Rows[0][0], &plans); err != nil {
			t.Fatal(err)
		}
		if bad := pairwiseJoins(plans[0].Plan); len(bad) > 0 {
			t.Errorf("merge into %s joins pairwise: %s\n%s", m.table, strings.Join(bad, "; "), m.sql)
		}
	}
}

func TestGenerationReplansAsTheTablesFill(t *testing.T) {
	var replanned []int
	for n := 1; n <= 3*4096; n++ {
		if generation(n) != generation(n-1) {
			replanned = append(replanned, n)
		}
	}
	want := []int{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 12288}
	if !slices.Equal(replanned, want) {
		t.Errorf("new plans at batches %v, want %v", replanned, want)
	}
}
