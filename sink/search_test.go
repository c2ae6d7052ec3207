package sink

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/waypointhq/waypoint/embedding"
	pb "github.com/waypointhq/waypoint/proto"
)

func TestSearchFindsPlantedCasts(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	e := embedding.NewLocal(256)
	w := newTestWriter(t, pool, WithEmbedder(e))
	var evs []*pb.HubEvent
	for i := range 300 {
		evs = append(evs, merge(castAdd(t, 20, uint32(i+1), fmt.Sprintf("filler post %d about %s", i, benchWords[i%len(benchWords)]), nil)))
	}
	planted := castAdd(t, 21, 1, "the zebra migration across the serengeti plains", nil)
	near := castAdd(t, 21, 2, "zebra migration on the serengeti", nil)
	removed := castAdd(t, 21, 3, "zebra migration across the serengeti plains today", nil)
	evs = append(evs, merge(planted), merge(near), merge(removed), merge(castRemove(t, 21, 4, removed.Hash), removed))
	mustWrite(t, w, evs...)

	got, err := Search(ctx, pool, e, "zebra migration serengeti plains", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("search returned %d results, want 2", len(got))
	}
	found := map[string]bool{string(got[0].Hash): true, string(got[1].Hash): true}
	if !found[string(planted.Hash)] || !found[string(near.Hash)] {
		t.Errorf("search results %q, %q; want the two planted casts", got[0].Text, got[1].Text)
	}
	if got[0].Distance > got[1].Distance || got[0].Distance >= 0.5 {
		t.Errorf("distances %v, %v: want ascending and close", got[0].Distance, got[1].Distance)
	}
	for _, r := range got {
		if bytes.Equal(r.Hash, removed.Hash) {
			t.Error("search returned a removed cast")
		}
	}
	none, err := Search(ctx, pool, e, "   ", 5)
	if err != nil || len(none) != 0 {
		t.Errorf("blank query: %d results, %v", len(none), err)
	}
}

func TestSearchUsesHNSWIndex(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	e := embedding.NewLocal(256)
	w := newTestWriter(t, pool, WithEmbedder(e))
	var evs []*pb.HubEvent
	for i := range 200 {
		evs = append(evs, merge(castAdd(t, 22, uint32(i+1), fmt.Sprintf("post number %d %s", i, benchWords[i%len(benchWords)]), nil)))
	}
	mustWrite(t, w, evs...)
	if _, err := pool.Exec(ctx, `ANALYZE casts`); err != nil {
		t.Fatal(err)
	}
	vecs, err := e.Embed(ctx, []string{"post number"})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	// A small table would be seq-scanned; the point is that the query shape
	// lets the planner use the index, so take the cost of a scan away.
	if _, err := conn.Exec(ctx, `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "EXPLAIN "+searchSQL, vecs[0], 10)
	if err != nil {
		t.Fatal(err)
	}
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(plan, "\n"), "casts_embedding_idx") {
		t.Fatalf("search plan does not use the HNSW index:\n%s", strings.Join(plan, "\n"))
	}
}

func TestFillEmbeddings(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	w := newTestWriter(t, pool) // no inline embedder
	var evs []*pb.HubEvent
	for i := range 25 {
		evs = append(evs, merge(castAdd(t, 23, uint32(i+1), fmt.Sprintf("cast %d waiting for a vector", i), nil)))
	}
	evs = append(evs, merge(castAdd(t, 23, 99, "", nil)))
	mustWrite(t, w, evs...)
	e := embedding.NewLocal(256)
	n, err := FillEmbeddings(ctx, pool, e, 7)
	if err != nil {
		t.Fatal(err)
	}
	if n != 25 {
		t.Fatalf("filled %d, want 25", n)
	}
	var missing int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM casts WHERE embedding IS NULL AND text <> ''`).Scan(&missing); err != nil || missing != 0 {
		t.Fatalf("%d casts still without vectors (%v)", missing, err)
	}
	if n, err := FillEmbeddings(ctx, pool, e, 7); err != nil || n != 0 {
		t.Fatalf("second fill: %d, %v; want 0", n, err)
	}
	got, err := Search(ctx, pool, e, "cast 7 waiting for a vector", 1)
	if err != nil || len(got) != 1 || got[0].Text != "cast 7 waiting for a vector" {
		t.Fatalf("search after fill: %+v, %v", got, err)
	}
}
