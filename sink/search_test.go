package sink

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/embedding"
	pb "github.com/waypointhq/waypoint/proto"
)

// indexAll runs the indexer until the queue is empty and returns how many
// embeddings it indexed.
func indexAll(t *testing.T, w *Writer) int {
	t.Helper()
	n, err := IndexEmbeddings(context.Background(), w.pool, 7)
	if err != nil {
		t.Fatalf("index embeddings: %v", err)
	}
	return n
}

func count(t *testing.T, w *Writer, query string, args ...any) int {
	t.Helper()
	var n int
	if err := w.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

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
	res := mustWrite(t, w, evs...)
	if res.Embedded != 302 {
		t.Fatalf("embedded %d casts inline, want 302 (the removed one is skipped)", res.Embedded)
	}
	// Stored with the casts, not searchable until indexed.
	if n := count(t, w, `SELECT count(*) FROM cast_embedding_queue`); n != 302 {
		t.Fatalf("queue holds %d embeddings, want 302", n)
	}
	if got, err := Search(ctx, pool, e, "zebra migration serengeti plains", 2); err != nil || len(got) != 0 {
		t.Fatalf("search before indexing: %d results, %v; want none", len(got), err)
	}
	if n := indexAll(t, w); n != 302 {
		t.Fatalf("indexed %d, want 302", n)
	}

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

// TestSearchSkipsCastsRemovedAfterIndexing removes the nearest casts once
// their vectors are in the HNSW graph: the iterative scan must look past
// them and still fill the limit with live casts.
func TestSearchSkipsCastsRemovedAfterIndexing(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	e := embedding.NewLocal(256)
	w := newTestWriter(t, pool, WithEmbedder(e))
	var evs []*pb.HubEvent
	var doomed []*pb.Message
	// More removed near-duplicates than ef_search's default of 40, so a
	// scan that stops there would come back short.
	for i := range 60 {
		m := castAdd(t, 30, uint32(i+1), fmt.Sprintf("lighthouse keeper storm night %d", i), nil)
		doomed = append(doomed, m)
		evs = append(evs, merge(m))
	}
	var live []*pb.Message
	for i := range 12 {
		m := castAdd(t, 31, uint32(i+1), fmt.Sprintf("old lighthouse keeper logbook entry %s", benchWords[i]), nil)
		live = append(live, m)
		evs = append(evs, merge(m))
	}
	for i := range 400 {
		evs = append(evs, merge(castAdd(t, 32, uint32(i+1), fmt.Sprintf("unrelated %s chatter %d", benchWords[i%len(benchWords)], i), nil)))
	}
	mustWrite(t, w, evs...)
	if n := indexAll(t, w); n != 472 {
		t.Fatalf("indexed %d, want 472", n)
	}
	var removes []*pb.HubEvent
	for i, m := range doomed {
		removes = append(removes, merge(castRemove(t, 30, uint32(100+i), m.Hash), m))
	}
	mustWrite(t, w, removes...)
	// Deleted casts keep their vectors: the table is insert-only.
	if n := count(t, w, `SELECT count(*) FROM cast_embeddings`); n != 472 {
		t.Fatalf("cast_embeddings holds %d rows after removes, want 472", n)
	}

	// A table this small, or one without statistics, would be scanned and
	// sorted exactly; the point is the index scan, so plan as for a large
	// table.
	if _, err := pool.Exec(ctx, `ANALYZE casts; ANALYZE cast_embeddings`); err != nil {
		t.Fatal(err)
	}
	cfg := pool.Config()
	cfg.ConnConfig.RuntimeParams["enable_seqscan"] = "off"
	indexed, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer indexed.Close()
	got, err := Search(ctx, indexed, e, "lighthouse keeper storm night", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 {
		t.Fatalf("search returned %d results, want 10", len(got))
	}
	dead := map[string]bool{}
	for _, m := range doomed {
		dead[string(m.Hash)] = true
	}
	wanted := map[string]bool{}
	for _, m := range live {
		wanted[string(m.Hash)] = true
	}
	for i, r := range got {
		if dead[string(r.Hash)] {
			t.Fatalf("result %d is a removed cast: %q", i, r.Text)
		}
		if !wanted[string(r.Hash)] {
			t.Errorf("result %d is %q, want one of the live lighthouse casts", i, r.Text)
		}
		if i > 0 && r.Distance < got[i-1].Distance {
			t.Errorf("results out of order: %v after %v", r.Distance, got[i-1].Distance)
		}
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
	indexAll(t, w)
	if _, err := pool.Exec(ctx, `ANALYZE casts; ANALYZE cast_embeddings`); err != nil {
		t.Fatal(err)
	}
	vecs, err := e.Embed(ctx, []string{"post number"})
	if err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	// A small table would be seq-scanned; the point is that the query shape
	// lets the planner use the index, so take the cost of a scan away.
	if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off; `+searchSettings(10)); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, "EXPLAIN "+searchSQL, vecs[0], 10)
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
	if !strings.Contains(strings.Join(plan, "\n"), "Index Scan using cast_embeddings_embedding_idx") {
		t.Fatalf("search plan does not use the HNSW index:\n%s", strings.Join(plan, "\n"))
	}
}

// TestIndexerIdempotentAndResumable checks that a batch rolled back midway
// loses nothing, that moving a queue twice (redelivered casts queue again)
// stores each vector once, that casts deleted while queued are dropped, and
// that indexers running side by side share the queue.
func TestIndexerIdempotentAndResumable(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	w := newTestWriter(t, pool, WithEmbedder(embedding.NewLocal(256)))
	var evs []*pb.HubEvent
	var casts []*pb.Message
	for i := range 40 {
		m := castAdd(t, 40, uint32(i+1), fmt.Sprintf("queued cast %d %s", i, benchWords[i%len(benchWords)]), nil)
		casts = append(casts, m)
		evs = append(evs, merge(m))
	}
	mustWrite(t, w, evs...)

	// An indexer that dies in its transaction: the rows it took return.
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var moved, indexed int
	if err := tx.QueryRow(ctx, sqlIndexBatch, 15).Scan(&moved, &indexed); err != nil || moved != 15 || indexed != 15 {
		t.Fatalf("index batch in a transaction: moved %d indexed %d, %v", moved, indexed, err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, w, `SELECT count(*) FROM cast_embedding_queue`); n != 40 {
		t.Fatalf("queue holds %d after a rolled-back batch, want 40", n)
	}

	// One batch, then the rest: resuming where it stopped.
	if m, n, err := indexBatch(ctx, pool, 10); err != nil || m != 10 || n != 10 {
		t.Fatalf("first batch: moved %d indexed %d, %v", m, n, err)
	}
	// Meanwhile some casts are delivered again and some removed.
	mustWrite(t, w, evs[:5]...)
	for _, m := range casts[30:] {
		mustWrite(t, w, merge(castRemove(t, 40, 100, m.Hash), m))
	}

	// Two indexers at once share the queue without taking a row twice.
	var wg sync.WaitGroup
	got := make([]int, 2)
	errs := make([]error, 2)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = IndexEmbeddings(ctx, pool, 3)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// 40 queued, 5 queued again, 10 of those indexed first; of the 30 +
	// 5 left, the 5 redelivered were indexed already and 10 are removed.
	if got[0]+got[1] != 20 {
		t.Fatalf("indexers indexed %d and %d, want 20 in all", got[0], got[1])
	}
	if n := count(t, w, `SELECT count(*) FROM cast_embedding_queue`); n != 0 {
		t.Fatalf("queue holds %d, want 0", n)
	}
	if n := count(t, w, `SELECT count(*) FROM cast_embeddings`); n != 30 {
		t.Fatalf("cast_embeddings holds %d, want 30", n)
	}
	if n := count(t, w, `SELECT count(*) FROM cast_embeddings e JOIN casts c USING (hash) WHERE c.deleted_at IS NOT NULL`); n != 0 {
		t.Fatalf("%d removed casts indexed", n)
	}
	if n, err := IndexEmbeddings(ctx, pool, 0); err != nil || n != 0 {
		t.Fatalf("indexing an empty queue: %d, %v", n, err)
	}
}

func TestRunIndexer(t *testing.T) {
	pool := migratedPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := embedding.NewLocal(256)
	w := newTestWriter(t, pool, WithEmbedder(e))
	done := make(chan error, 1)
	go func() { done <- RunIndexer(ctx, pool, IndexerOptions{BatchSize: 4, Interval: 5 * time.Millisecond}) }()
	m := castAdd(t, 41, 1, "an indexer running in the background", nil)
	mustWrite(t, w, merge(m))
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := Search(context.Background(), pool, e, "indexer running in the background", 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 1 && bytes.Equal(got[0].Hash, m.Hash) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("cast not searchable while RunIndexer runs")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunIndexer returned %v after cancel, want nil", err)
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
	gone := castAdd(t, 23, 98, "removed before it got a vector", nil)
	evs = append(evs, merge(castAdd(t, 23, 99, "", nil)), merge(gone), merge(castRemove(t, 23, 100, gone.Hash), gone))
	mustWrite(t, w, evs...)
	if n := count(t, w, `SELECT count(*) FROM cast_embedding_queue`); n != 0 {
		t.Fatalf("a writer without an embedder queued %d embeddings", n)
	}
	e := embedding.NewLocal(256)
	n, err := FillEmbeddings(ctx, pool, e, 7)
	if err != nil {
		t.Fatal(err)
	}
	if n != 25 {
		t.Fatalf("filled %d, want 25", n)
	}
	if missing := count(t, w, `SELECT count(*) FROM casts c WHERE text <> '' AND deleted_at IS NULL
		AND NOT EXISTS (SELECT 1 FROM cast_embeddings e WHERE e.hash = c.hash)`); missing != 0 {
		t.Fatalf("%d live casts still without vectors", missing)
	}
	if n, err := FillEmbeddings(ctx, pool, e, 7); err != nil || n != 0 {
		t.Fatalf("second fill: %d, %v; want 0", n, err)
	}
	got, err := Search(ctx, pool, e, "cast 7 waiting for a vector", 1)
	if err != nil || len(got) != 1 || got[0].Text != "cast 7 waiting for a vector" {
		t.Fatalf("search after fill: %+v, %v", got, err)
	}
	if _, err := FillEmbeddings(ctx, pool, embedding.NewLocal(64), 7); err == nil {
		t.Fatal("fill accepted a 64-dimensional embedder")
	}
}
