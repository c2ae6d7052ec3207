// Package testsupport starts and hands out the real services that
// integration tests run against: a fresh Postgres database per test, a Redis
// key space per test, and the paths of locally built service binaries.
//
// The services themselves are brought up by deploy/local/services.sh (make
// test does that); their addresses arrive through the same WAYPOINT_*
// environment variables the binary reads. A test that needs a service which
// is not configured fails with a message saying how to start it: it is never
// skipped, so a green run always means the test ran.
package testsupport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

const hint = `run the tests with "make test", or first: eval "$(deploy/local/services.sh env)"`

// Env returns the value of the environment variable name, failing the test
// when it is unset.
func Env(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: %s", name, hint)
	}
	return v
}

// Suffix returns a short random string for names that must not collide
// between tests and packages running in parallel.
func Suffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// PostgresURL creates an empty database on the server named by
// WAYPOINT_DATABASE__URL and returns its URL; the database is dropped when
// the test ends.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := Env(t, "WAYPOINT_DATABASE__URL")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to test postgres %s: %v (%s)", redactURL(base), err, hint)
	}
	defer conn.Close(ctx)
	name := "wp_test_" + Suffix()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("drop test database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse WAYPOINT_DATABASE__URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Redis is a Redis server for one test, with a key prefix no other test uses.
type Redis struct {
	URL    string
	Prefix string
	Client *redis.Client
}

// NewRedis connects to the server named by WAYPOINT_REDIS__URL and deletes
// the test's keys when it ends.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	u := Env(t, "WAYPOINT_REDIS__URL")
	opt, err := redis.ParseURL(u)
	if err != nil {
		t.Fatalf("parse WAYPOINT_REDIS__URL: %v", err)
	}
	c := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping test redis: %v (%s)", err, hint)
	}
	r := &Redis{URL: u, Prefix: "wptest:" + Suffix() + ":", Client: c}
	t.Cleanup(func() {
		// A benchmark's backfill queue can leave many keys: unlink them
		// a scan page at a time.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, r.Prefix+"*", 5000).Result()
			if err != nil {
				break
			}
			if len(keys) > 0 {
				c.Unlink(ctx, keys...)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		_ = c.Close()
	})
	return r
}

// NATSServerBin returns the path of the nats-server binary that
// services.sh built, for tests that need separate server processes.
func NATSServerBin(t testing.TB) string {
	t.Helper()
	p := Env(t, "WAYPOINT_TEST_NATS_SERVER")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("nats-server binary: %v (%s)", err, hint)
	}
	return p
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable url>"
	}
	return u.Redacted()
}
