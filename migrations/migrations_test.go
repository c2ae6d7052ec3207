package migrations

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/internal/testsupport"
)

func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, testsupport.PostgresURL(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func tableExists(t *testing.T, pool *pgxpool.Pool, name string) bool {
	t.Helper()
	var ok bool
	if err := pool.QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok); err != nil {
		t.Fatalf("check table %s: %v", name, err)
	}
	return ok
}

func TestUpFromEmptyCreatesSchema(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	before, err := Status(ctx, pool)
	if err != nil {
		t.Fatalf("status before: %v", err)
	}
	if len(before) == 0 {
		t.Fatal("no embedded migrations")
	}
	for _, m := range before {
		if !m.Pending() {
			t.Fatalf("migration %d applied on an empty database", m.Version)
		}
	}
	if err := Up(ctx, pool); err != nil {
		t.Fatalf("up: %v", err)
	}
	for _, name := range []string{
		"messages", "message_marks", "casts", "reactions", "links", "link_compact_states",
		"verifications", "user_data", "username_proofs", "lend_storage", "onchain_events",
		"signer_events", "signer_migrated_events", "id_register_events", "storage_rent_events",
		"tier_purchases", "fids", "dead_letters", "profiles", "cast_embeddings", "cast_embedding_queue",
	} {
		if !tableExists(t, pool, name) {
			t.Errorf("relation %s missing after up", name)
		}
	}
	var am string
	err = pool.QueryRow(ctx, `SELECT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_am am ON am.oid = c.relam WHERE c.relname = 'cast_embeddings_embedding_idx'`).Scan(&am)
	if err != nil || am != "hnsw" {
		t.Errorf("cast embedding index: am=%q err=%v, want hnsw", am, err)
	}
	for _, table := range []string{"cast_embeddings", "cast_embedding_queue"} {
		var dims int
		if err := pool.QueryRow(ctx, `SELECT atttypmod FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'embedding'`, table).Scan(&dims); err != nil || dims != 256 {
			t.Errorf("%s.embedding dimensions = %d (%v), want 256", table, dims, err)
		}
	}
	// The queue is append-and-drain: an index on it would put back the
	// per-row cost on the write path that it exists to remove.
	var queueIndexes int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_index WHERE indrelid = 'cast_embedding_queue'::regclass`).Scan(&queueIndexes); err != nil || queueIndexes != 0 {
		t.Errorf("cast_embedding_queue has %d indexes (%v), want none", queueIndexes, err)
	}
	after, err := Status(ctx, pool)
	if err != nil {
		t.Fatalf("status after: %v", err)
	}
	if len(after) != len(before) {
		t.Fatalf("status lists %d migrations after up, %d before", len(after), len(before))
	}
	for _, m := range after {
		if m.Pending() {
			t.Errorf("migration %d_%s still pending after up", m.Version, m.Name)
		}
	}
}

func TestUpTwiceIsNoop(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	if err := Up(ctx, pool); err != nil {
		t.Fatalf("first up: %v", err)
	}
	first, err := Status(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := Up(ctx, pool); err != nil {
		t.Fatalf("second up: %v", err)
	}
	second, err := Status(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first {
		if !first[i].AppliedAt.Equal(second[i].AppliedAt) {
			t.Errorf("migration %d re-applied: %v then %v", first[i].Version, first[i].AppliedAt, second[i].AppliedAt)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil || n != len(first) {
		t.Fatalf("schema_migrations has %d rows (%v), want %d", n, err, len(first))
	}
}

func TestConcurrentUp(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	const n = 6
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- Up(ctx, pool)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent up: %v", err)
		}
	}
	st, err := Status(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != len(st) {
		t.Fatalf("schema_migrations has %d rows, want %d", rows, len(st))
	}
}

func TestFailedMigrationRollsBack(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	fsys := fstest.MapFS{
		"0001_good.sql":  {Data: []byte(`CREATE TABLE good (id int);`)},
		"0002_bad.sql":   {Data: []byte(`CREATE TABLE half (id int); INSERT INTO half VALUES (1); SELECT * FROM no_such_table;`)},
		"0003_after.sql": {Data: []byte(`CREATE TABLE after_bad (id int);`)},
	}
	err := UpFS(ctx, pool, fsys)
	if err == nil || !strings.Contains(err.Error(), "0002_bad") {
		t.Fatalf("up with a bad migration: err = %v, want one naming 0002_bad", err)
	}
	if !tableExists(t, pool, "good") {
		t.Error("migration before the bad one was not kept")
	}
	if tableExists(t, pool, "half") {
		t.Error("bad migration left its table behind")
	}
	if tableExists(t, pool, "after_bad") {
		t.Error("migration after the bad one was applied")
	}
	st, err := StatusFS(ctx, pool, fsys)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64]bool{1: false, 2: true, 3: true}
	for _, m := range st {
		if m.Pending() != want[m.Version] {
			t.Errorf("migration %d pending = %v, want %v", m.Version, m.Pending(), want[m.Version])
		}
	}
	// Fixing the file lets the run finish.
	fsys["0002_bad.sql"] = &fstest.MapFile{Data: []byte(`CREATE TABLE half (id int);`)}
	if err := UpFS(ctx, pool, fsys); err != nil {
		t.Fatalf("up after fix: %v", err)
	}
	if !tableExists(t, pool, "half") || !tableExists(t, pool, "after_bad") {
		t.Error("fixed migrations not applied")
	}
}

func TestParseRejectsBadNames(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"no version":   {"init.sql": {Data: []byte("SELECT 1")}},
		"zero version": {"0000_x.sql": {Data: []byte("SELECT 1")}},
		"no name":      {"0001.sql": {Data: []byte("SELECT 1")}},
		"duplicate":    {"0001_a.sql": {Data: []byte("SELECT 1")}, "001_b.sql": {Data: []byte("SELECT 1")}},
		"non-numeric":  {"abc_x.sql": {Data: []byte("SELECT 1")}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parse(fsys); err == nil {
				t.Fatal("parse accepted a bad migration set")
			}
		})
	}
	ms, err := parse(fstest.MapFS{
		"0010_b.sql": {Data: []byte("SELECT 2")},
		"0002_a.sql": {Data: []byte("SELECT 1")},
		"README.md":  {Data: []byte("not a migration")},
	})
	if err != nil || len(ms) != 2 || ms[0].Version != 2 || ms[1].Version != 10 || ms[1].Name != "b" {
		t.Fatalf("parse = %+v, %v", ms, err)
	}
}

func TestStatusOnEmptyDatabaseIsAllPending(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	st, err := Status(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if tableExists(t, pool, "schema_migrations") {
		t.Error("status created schema_migrations")
	}
	for _, m := range st {
		if !m.Pending() {
			t.Errorf("migration %d applied", m.Version)
		}
	}
}

// TestUpTakesBackWritesOnItsRecord checks that a run applying a migration
// leaves row writes on schema_migrations to its owner alone, while reads
// granted to others stay.
func TestUpTakesBackWritesOnItsRecord(t *testing.T) {
	ctx := context.Background()
	pool := newPool(t)
	fsys := fstest.MapFS{"0001_first.sql": {Data: []byte(`CREATE TABLE first (id int);`)}}
	if err := UpFS(ctx, pool, fsys); err != nil {
		t.Fatalf("up: %v", err)
	}
	if _, err := pool.Exec(ctx, `GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations TO PUBLIC`); err != nil {
		t.Fatal(err)
	}
	fsys["0002_second.sql"] = &fstest.MapFile{Data: []byte(`CREATE TABLE second (id int);`)}
	if err := UpFS(ctx, pool, fsys); err != nil {
		t.Fatalf("up with a new migration: %v", err)
	}
	for priv, want := range map[string]bool{"SELECT": true, "INSERT": false, "UPDATE": false, "DELETE": false, "TRUNCATE": false} {
		var got bool
		if err := pool.QueryRow(ctx, `SELECT has_table_privilege('public', 'schema_migrations', $1)`, priv).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("PUBLIC has %s on schema_migrations: %v, want %v", priv, got, want)
		}
	}
}
