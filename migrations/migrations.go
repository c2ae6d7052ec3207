// Package migrations owns Waypoint's Postgres schema: versioned SQL files
// embedded in the binary and a forward-only runner that applies them, each in
// its own transaction, under an advisory lock so that replicas starting at the
// same time never race.
package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed sql/*.sql
var embedded embed.FS

// Files is the embedded schema: one NNNN_name.sql file per migration.
var Files fs.FS = mustSub(embedded, "sql")

func mustSub(f fs.FS, dir string) fs.FS {
	s, err := fs.Sub(f, dir)
	if err != nil {
		// The directory is part of the binary; a failure here is a build defect.
		panic(err)
	}
	return s
}

// lockKey identifies Waypoint's migration advisory lock ("waypoint" in ASCII).
const lockKey int64 = 0x776179706f696e74

// ErrNoVector reports that the server lacks the pgvector extension.
var ErrNoVector = errors.New("postgres: the vector extension is not available: install pgvector (postgresql-17-pgvector)")

// Migration is one schema version; AppliedAt is zero while it is pending.
type Migration struct {
	Version   int64
	Name      string
	AppliedAt time.Time
	sql       string
}

// Pending reports whether the migration has not been applied.
func (m Migration) Pending() bool { return m.AppliedAt.IsZero() }

// Up applies the embedded migrations that are not applied yet.
func Up(ctx context.Context, pool *pgxpool.Pool) error { return UpFS(ctx, pool, Files) }

// Status lists the embedded migrations with the time each was applied.
func Status(ctx context.Context, pool *pgxpool.Pool) ([]Migration, error) {
	return StatusFS(ctx, pool, Files)
}

// CheckVector returns ErrNoVector when the pgvector extension can be neither
// found installed nor installed.
func CheckVector(ctx context.Context, pool *pgxpool.Pool) error {
	var ok bool
	err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')`).Scan(&ok)
	if err != nil {
		return fmt.Errorf("check vector extension: %w", err)
	}
	if !ok {
		return ErrNoVector
	}
	return nil
}

// UpFS applies the migrations in fsys that are not applied yet, in version
// order. Each runs in its own transaction, so a failing one leaves the
// database as the previous one left it.
func UpFS(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) error {
	all, err := parse(fsys)
	if err != nil {
		return err
	}
	if err := CheckVector(ctx, pool); err != nil {
		return err
	}
	// A database already at this version needs no DDL: checking first lets
	// a role that may only read and write rows start (see
	// deploy/postgres/roles.sql). Any error here is met again below.
	if st, err := StatusFS(ctx, pool, fsys); err == nil && allApplied(st) {
		return nil
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: acquire connection: %w", err)
	}
	defer conn.Release()
	// A session lock, not a transaction one: it must span several transactions.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return fmt.Errorf("migrate: take advisory lock: %w", err)
	}
	defer func() {
		// A fresh context: the caller's may be cancelled, and a lock left on a
		// pooled connection would block every other replica.
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, lockKey); err != nil {
			conn.Conn().Close(uctx)
		}
	}()
	if err := ensureTable(ctx, conn.Conn()); err != nil {
		return err
	}
	applied, err := appliedVersions(ctx, conn.Conn())
	if err != nil {
		return err
	}
	for _, m := range all {
		if _, ok := applied[m.Version]; ok {
			continue
		}
		if err := apply(ctx, conn.Conn(), m); err != nil {
			return err
		}
	}
	return nil
}

// StatusFS lists the migrations in fsys, merged with what the database
// records as applied. A version applied but absent from fsys (a newer binary
// ran) is listed too, so it is not mistaken for a clean state.
func StatusFS(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) ([]Migration, error) {
	all, err := parse(fsys)
	if err != nil {
		return nil, err
	}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("migrate status: %w", err)
	}
	if !exists {
		return all, nil
	}
	rows, err := pool.Query(ctx, `SELECT version, name, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("migrate status: read schema_migrations: %w", err)
	}
	byVersion := make(map[int64]int, len(all))
	for i, m := range all {
		byVersion[m.Version] = i
	}
	for rows.Next() {
		var m Migration
		if err := rows.Scan(&m.Version, &m.Name, &m.AppliedAt); err != nil {
			rows.Close()
			return nil, fmt.Errorf("migrate status: read schema_migrations: %w", err)
		}
		if i, ok := byVersion[m.Version]; ok {
			all[i].AppliedAt = m.AppliedAt
		} else {
			all = append(all, m)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("migrate status: read schema_migrations: %w", err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Version < all[j].Version })
	for i := range all {
		all[i].sql = ""
	}
	return all, nil
}

func allApplied(ms []Migration) bool {
	for _, m := range ms {
		if m.Pending() {
			return false
		}
	}
	return true
}

func ensureTable(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: create schema_migrations: begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	_, err = tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    bigint      PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`)
	if err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	// Default privileges (deploy/postgres/roles.sql) give every new table's
	// row writes to the writer role, this one included. Only the runner may
	// record a version, or a role that merely writes rows could mark a
	// migration applied that never ran; so take back row writes from every
	// role but the owner, whatever the roles are named. Reads stay: the
	// startup check runs as the writer.
	if _, err := tx.Exec(ctx, revokeWrites); err != nil {
		return fmt.Errorf("migrate: restrict schema_migrations: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: commit: %w", err)
	}
	return nil
}

// revokeWrites takes INSERT, UPDATE, DELETE and TRUNCATE on
// schema_migrations from every grantee other than the table's owner.
const revokeWrites = `DO $$
DECLARE
	grantee text;
BEGIN
	FOR grantee IN
		SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
		FROM pg_class c
		CROSS JOIN LATERAL aclexplode(c.relacl) a
		LEFT JOIN pg_roles r ON r.oid = a.grantee
		WHERE c.oid = 'schema_migrations'::regclass
		  AND a.grantee <> c.relowner
		  AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
	LOOP
		EXECUTE 'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations FROM ' || grantee;
	END LOOP;
END
$$`

func appliedVersions(ctx context.Context, conn *pgx.Conn) (map[int64]struct{}, error) {
	rows, err := conn.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	out := make(map[int64]struct{}, len(vs))
	for _, v := range vs {
		out[v] = struct{}{}
	}
	return out, nil
}

func apply(ctx context.Context, conn *pgx.Conn, m Migration) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate %04d_%s: begin: %w", m.Version, m.Name, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	// No arguments: pgx sends it with the simple protocol, which allows a
	// file of several statements.
	if _, err := tx.Exec(ctx, m.sql); err != nil {
		return fmt.Errorf("migrate %04d_%s: %w", m.Version, m.Name, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
		return fmt.Errorf("migrate %04d_%s: record: %w", m.Version, m.Name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate %04d_%s: commit: %w", m.Version, m.Name, err)
	}
	return nil
}

// parse reads NNNN_name.sql files from the root of fsys, sorted by version.
func parse(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []Migration
	seen := map[int64]string{}
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		base := strings.TrimSuffix(e.Name(), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v <= 0 || name == "" {
			return nil, fmt.Errorf("read migrations: %q is not named NNNN_name.sql", e.Name())
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("read migrations: %q and %q share version %d", prev, e.Name(), v)
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: name, sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}
