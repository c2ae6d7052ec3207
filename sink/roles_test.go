package sink

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/embedding"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/migrations"
	pb "github.com/waypointhq/waypoint/proto"
)

// TestLeastPrivilegeRoles applies deploy/postgres/roles.sql to a fresh
// database, migrates it as the owner role, then runs the writer, the
// indexer and search as the writer role, which must be refused DDL.
func TestLeastPrivilegeRoles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	adminURL := testsupport.PostgresURL(t)
	sfx := testsupport.Suffix()
	owner, writer := "wp_owner_"+sfx, "wp_writer_"+sfx
	script, err := os.ReadFile("../deploy/postgres/roles.sql")
	if err != nil {
		t.Fatal(err)
	}
	sql := strings.NewReplacer("waypoint_owner", owner, "waypoint_writer", writer).Replace(string(script))

	testsupport.DropRolesAtEnd(t, adminURL, owner, writer)
	runRolesSQL(ctx, t, adminURL, sql)
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	password := "pw-" + testsupport.Suffix()
	for _, r := range []string{owner, writer} {
		if _, err := admin.Exec(ctx, "ALTER ROLE "+pgx.Identifier{r}.Sanitize()+" PASSWORD '"+password+"'"); err != nil {
			t.Fatal(err)
		}
	}
	admin.Close(ctx)

	ownerPool := poolAs(t, adminURL, owner, password)
	if err := migrations.Up(ctx, ownerPool); err != nil {
		t.Fatalf("migrate as %s: %v", owner, err)
	}

	pool := poolAs(t, adminURL, writer, password)
	// What start, sink and backfill run at startup: nothing to apply.
	if err := migrations.Up(ctx, pool); err != nil {
		t.Fatalf("migrate up as the writer on a migrated database: %v", err)
	}
	assertRecordReadOnly(ctx, t, pool)
	// Run again on the migrated database, as for a second database served
	// by the same roles: its GRANT on every table must not reopen the
	// record.
	runRolesSQL(ctx, t, adminURL, sql)
	if err := migrations.Up(ctx, pool); err != nil {
		t.Fatalf("migrate up as the writer after roles.sql ran again: %v", err)
	}
	assertRecordReadOnly(ctx, t, pool)
	e := embedding.NewLocal(embedding.DefaultDimensions)
	w := newTestWriter(t, pool, WithEmbedder(e))
	bad := &pb.Message{Hash: []byte{9}}
	cast := castAdd(t, 31, 1, "lighthouse keepers count the foghorn blasts", nil)
	res := mustWrite(t, w, merge(cast), merge(castAdd(t, 31, 2, "other words entirely", nil)), merge(bad))
	if res.DeadLetters != 1 || res.Embedded != 2 {
		t.Fatalf("write as the writer role: %+v", res)
	}
	if _, err := IndexEmbeddings(ctx, pool, 10); err != nil {
		t.Fatalf("index as the writer role: %v", err)
	}
	if _, err := FillEmbeddings(ctx, pool, e, 10); err != nil {
		t.Fatalf("fill embeddings (temporary table) as the writer role: %v", err)
	}
	got, err := Search(ctx, pool, e, "lighthouse foghorn", 1)
	if err != nil || len(got) != 1 {
		t.Fatalf("search as the writer role: %v, %v", got, err)
	}

	for _, stmt := range []string{
		`DROP TABLE casts`,
		`TRUNCATE messages`,
		`ALTER TABLE casts ADD COLUMN x int`,
		`CREATE TABLE intruder (id int)`,
		`DROP INDEX casts_pkey`,
		`CREATE EXTENSION IF NOT EXISTS pg_trgm`,
	} {
		_, err := pool.Exec(ctx, stmt)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || (pe.Code != "42501" && pe.Code != "42809") {
			t.Errorf("%s as the writer role: %v, want permission denied", stmt, err)
		}
	}
}

func runRolesSQL(ctx context.Context, t *testing.T, adminURL, sql string) {
	t.Helper()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, sql); err != nil {
		t.Fatalf("roles.sql: %v", err)
	}
}

// assertRecordReadOnly checks that pool's role reads the migration record,
// every embedded migration applied, and may not write it.
func assertRecordReadOnly(ctx context.Context, t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	st, err := migrations.Status(ctx, pool)
	if err != nil {
		t.Fatalf("migration status as the writer role: %v", err)
	}
	var rows int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&rows); err != nil || rows != len(st) {
		t.Fatalf("read schema_migrations as the writer role: %d rows, %v; want %d", rows, err, len(st))
	}
	for _, m := range st {
		if m.Pending() {
			t.Errorf("migration %04d_%s pending as seen by the writer role", m.Version, m.Name)
		}
	}
	for _, stmt := range []string{
		`INSERT INTO schema_migrations (version, name) VALUES (999999, 'forged')`,
		`UPDATE schema_migrations SET name = 'forged'`,
		`DELETE FROM schema_migrations`,
		`TRUNCATE schema_migrations`,
	} {
		_, err := pool.Exec(ctx, stmt)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("%s as the writer role: %v, want permission denied (42501)", stmt, err)
		}
	}
}

// poolAs opens a pool on the database of base as role.
func poolAs(t *testing.T, base, role, password string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), testsupport.PostgresURLAs(t, base, role, password))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}
