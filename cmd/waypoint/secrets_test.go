package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// otlpSink is an OTLP/HTTP trace receiver that keeps every request body.
type otlpSink struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (o *otlpSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, err := testsupport.RequestBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	o.bodies = append(o.bodies, b)
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
}

func (o *otlpSink) all() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Join(o.bodies, nil)
}

// TestSecretsStayOut plants one password as the Postgres role's password,
// the Redis user's password, the NATS password and a hub header value,
// runs the real pipeline against the simulator, nats-server, Postgres and
// Redis with debug logging and every trace exported, and then looks for
// the password in the logs, /metrics, the exported spans, the command
// outputs and the errors of failing connections: it must be in none.
func TestSecretsStayOut(t *testing.T) {
	secret := "planted-" + testsupport.Suffix()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Postgres: a role whose password is the secret owns a fresh database.
	adminURL := testsupport.PostgresURL(t)
	role := "wp_secret_" + testsupport.Suffix()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	testsupport.DropRolesAtEnd(t, adminURL, role)
	for _, stmt := range []string{
		`CREATE EXTENSION IF NOT EXISTS vector`,
		fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, role, secret),
		fmt.Sprintf(`ALTER DATABASE %s OWNER TO %s`, admin.Config().Database, role),
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	admin.Close(ctx)
	dbURL := testsupport.PostgresURLAs(t, adminURL, role, secret)

	// Redis: an ACL user with the secret as password.
	rdb := testsupport.NewRedis(t)
	user := "wp_secret_" + testsupport.Suffix()
	if err := rdb.Client.Do(ctx, "ACL", "SETUSER", user, "on", ">"+secret, "~*", "&*", "+@all").Err(); err != nil {
		t.Fatalf("create redis user: %v", err)
	}
	t.Cleanup(func() { rdb.Client.Do(context.Background(), "ACL", "DELUSER", user) })
	redisURL := strings.Replace(rdb.URL, "redis://", "redis://"+user+":"+secret+"@", 1)
	if !strings.Contains(redisURL, secret) {
		t.Fatalf("redis url %q has no user part to plant the password in", rdb.URL)
	}

	// NATS: a server that wants a user and the secret.
	ns := testsupport.StartNATSServer(t, "--user", "wp", "--pass", secret)

	_, hubAddr := testsupport.StartDevnet(t, devnet.Options{
		// No end to the live workload: however late ingest subscribes,
		// events follow for the sink to commit.
		Seed: 5, FIDs: 10, Preload: 500, Rate: 100, BlockInterval: 50 * time.Millisecond,
	})
	otlp := &otlpSink{}
	collector := httptest.NewServer(otlp)
	defer collector.Close()
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	metricsAddr := freeAddr(t)
	env := []string{
		"WAYPOINT_DATABASE__URL=" + dbURL,
		"WAYPOINT_REDIS__URL=" + redisURL,
		"WAYPOINT_REDIS__KEY_PREFIX=" + rdb.Prefix,
		"WAYPOINT_NATS__URL=" + ns.URL,
		"WAYPOINT_NATS__USER=wp",
		"WAYPOINT_NATS__PASSWORD=" + secret,
		"WAYPOINT_HUB__URL=" + hubAddr,
		"WAYPOINT_HUB__NETWORK=devnet",
		"WAYPOINT_HUB__HEADERS__X_API_KEY=" + secret,
		"WAYPOINT_LOG__LEVEL=debug",
		"WAYPOINT_METRICS__ADDR=" + metricsAddr,
		"WAYPOINT_TRACING__ENDPOINT=" + collector.URL,
		"WAYPOINT_TRACING__SAMPLER_RATIO=1",
	}

	var seen []string // every output to search, with what it was
	var what []string
	keep := func(name, out string) { seen, what = append(seen, out), append(what, name) }

	if code, out, errOut := runCLI(t, env, "migrate", "up"); code != exitOK {
		t.Fatalf("migrate up: exit %d: %s %s", code, out, errOut)
	} else {
		keep("migrate up", out+errOut)
	}
	stop := startCLI(t, env, "start")
	code, out, errOut := runCLI(t, env, "backfill", "enqueue", "--fids", "3")
	if code != exitOK {
		t.Fatalf("backfill enqueue: exit %d: %s %s", code, out, errOut)
	}
	keep("backfill enqueue", out+errOut)

	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	waitFor(t, 30*time.Second, "rows in Postgres", func() bool {
		var n int
		return pool.QueryRow(ctx, `SELECT count(*) FROM messages`).Scan(&n) == nil && n > 0
	})
	waitFor(t, 20*time.Second, "spans exported", func() bool { return bytes.Contains(otlp.all(), []byte("sink.commit")) })
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte("waypoint_rows_written_total")) {
		t.Fatalf("/metrics has no rows written: %s", metrics)
	}
	keep("/metrics", string(metrics))
	for _, args := range [][]string{{"status"}, {"status", "--json"}, {"status", "--config-dump"}, {"backfill", "status"}} {
		_, out, errOut := runCLI(t, env, args...)
		keep(strings.Join(args, " "), out+errOut)
	}
	time.Sleep(time.Second)
	code, errOut = stop()
	if code != exitOK {
		t.Fatalf("start exited %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, "level=DEBUG") {
		t.Fatalf("start logged nothing at debug level: %s", errOut)
	}
	keep("start log", errOut)
	keep("exported spans", string(otlp.all()))

	// Connections that fail, each with the secret in its credentials.
	closed := freeAddr(t)
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want string // the failure the error must name
	}{
		{"postgres, no such database", []string{"WAYPOINT_DATABASE__URL=" + strings.Replace(dbURL, "/wp_test_", "/nowhere_", 1)}, []string{"migrate", "status"}, "does not exist"},
		{"postgres, wrong password", []string{"WAYPOINT_DATABASE__URL=" + strings.Replace(dbURL, secret, secret+"x", 1)}, []string{"migrate", "status"}, "password authentication failed"},
		{"redis, closed port", []string{"WAYPOINT_REDIS__URL=redis://" + user + ":" + secret + "@" + closed + "/0"}, []string{"backfill", "status"}, "connection refused"},
		{"redis, wrong password", []string{"WAYPOINT_REDIS__URL=" + strings.Replace(redisURL, secret, secret+"x", 1)}, []string{"backfill", "status"}, "WRONGPASS"},
	} {
		code, out, errOut := runCLI(t, append(append([]string(nil), env...), c.env...), c.args...)
		if code == exitOK || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: %s: exit %d, stderr %q; want a failure naming %q", c.name, strings.Join(c.args, " "), code, errOut, c.want)
		}
		keep(c.name, out+errOut)
	}
	// A NATS password the server refuses, for a command that keeps retrying.
	stop = startCLI(t, append(append([]string(nil), env...), "WAYPOINT_NATS__PASSWORD="+secret+"x", "WAYPOINT_METRICS__ADDR="), "sink")
	time.Sleep(3 * time.Second)
	_, errOut = stop()
	if !strings.Contains(errOut, "Authorization Violation") {
		t.Errorf("sink with a wrong NATS password: stderr %q; want the server's refusal", errOut)
	}
	keep("nats, wrong password", errOut)

	for i, out := range seen {
		if strings.Contains(out, secret) {
			at := strings.Index(out, secret)
			t.Errorf("%s shows the password: ...%s...", what[i], out[max(0, at-200):min(len(out), at+len(secret)+50)])
		}
		if out == "" {
			t.Errorf("%s: no output to search", what[i])
		}
	}
}
