package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/internal/testsupport"
)

// startCLI runs a long-lived command in the background until the test
// stops it with the returned function, which reports its exit code.
func startCLI(t *testing.T, env []string, args ...string) (stop func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb testsupport.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, env, &out, &errb) }()
	var once sync.Once
	var code int
	stop = func() (int, string) {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("waypoint %s did not stop within 30s of its context ending", strings.Join(args, " "))
				code = -1
			}
		})
		return code, errb.String()
	}
	t.Cleanup(func() { stop() })
	return stop
}

// pipelineEnv is the configuration of one deployment: a fresh database,
// a new test Redis key space, an embedded JetStream in a temp directory,
// and the simulator as hub.
func pipelineEnv(t *testing.T, hubAddr, redisPrefix string) ([]string, *pgxpool.Pool) {
	t.Helper()
	return pipelineEnvWithRedis(t, hubAddr, testsupport.NewRedis(t), redisPrefix)
}

// pipelineEnvWithRedis is pipelineEnv in a given Redis key space, for
// deployments that share one.
func pipelineEnvWithRedis(t *testing.T, hubAddr string, rdb *testsupport.Redis, redisPrefix string) ([]string, *pgxpool.Pool) {
	t.Helper()
	dbURL := testsupport.PostgresURL(t)
	env := []string{
		"WAYPOINT_DATABASE__URL=" + dbURL,
		"WAYPOINT_REDIS__URL=" + rdb.URL,
		"WAYPOINT_REDIS__KEY_PREFIX=" + rdb.Prefix + redisPrefix,
		"WAYPOINT_HUB__URL=" + hubAddr,
		"WAYPOINT_HUB__NETWORK=devnet",
		"WAYPOINT_NATS__STORE_DIR=" + t.TempDir(),
		"WAYPOINT_SINK__VALIDATE=full",
		"WAYPOINT_METRICS__ADDR=",
		"WAYPOINT_LOG__LEVEL=warn",
	}
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return env, pool
}
