package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/config"
	"github.com/waypointhq/waypoint/migrations"
)

// openDB connects to database.url with the configured pool size and
// timeouts, and checks the server answers.
func openDB(ctx context.Context, cfg *config.Config) (*pgxpool.Pool, error) {
	if err := cfg.Require("database.url"); err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(cfg.Database.URL)
	if err != nil {
		// pgx quotes the connection string in some errors: keep the
		// password out of them.
		return nil, fmt.Errorf("postgres: database.url is not a valid connection string")
	}
	pc.MaxConns = int32(cfg.Database.MaxConnections)
	timeout := time.Duration(cfg.Database.TimeoutSeconds) * time.Second
	pc.ConnConfig.ConnectTimeout = timeout
	if timeout > 0 {
		pc.ConnConfig.RuntimeParams["statement_timeout"] = fmt.Sprint(timeout.Milliseconds())
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s: %w", redactedHost(pc), err)
	}
	return pool, nil
}

// openMigratedDB is openDB followed by applying pending migrations, which
// every command that writes does at start-up; the runner's advisory lock
// keeps concurrent replicas from racing.
func openMigratedDB(ctx context.Context, cfg *config.Config) (*pgxpool.Pool, error) {
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := migrations.Up(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

func redactedHost(pc *pgxpool.Config) string {
	return fmt.Sprintf("%s:%d/%s", pc.ConnConfig.Host, pc.ConnConfig.Port, pc.ConnConfig.Database)
}
