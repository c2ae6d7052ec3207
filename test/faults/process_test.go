//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/sink"
)

// privateRedis starts a redis-server of the test's own, with no
// persistence, so the test may kill it and bring it back empty.
func privateRedis(t testing.TB) (*testsupport.Daemon, string) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server binary: %v", err)
	}
	port := testsupport.FreePort(t)
	d := testsupport.NewDaemon(t, "redis-server", bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	d.Start()
	d.WaitTCP(fmt.Sprintf("127.0.0.1:%d", port))
	return d, fmt.Sprintf("redis://127.0.0.1:%d/0", port)
}

// blockDatabase refuses new connections to the database of dbURL and
// terminates the open ones, as an outage of the server would look to the
// pipeline; the returned function lets connections in again.
func blockDatabase(t testing.TB, dbURL string) (unblock func()) {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testsupport.Env(t, "WAYPOINT_DATABASE__URL"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := cfg.Database
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" ALLOW_CONNECTIONS false"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name); err != nil {
		t.Fatal(err)
	}
	unblock = func() {
		if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" ALLOW_CONNECTIONS true"); err != nil {
			t.Errorf("re-enable connections to %s: %v", name, err)
		}
		_ = admin.Close(ctx)
	}
	t.Cleanup(func() {
		if !admin.IsClosed() {
			unblock()
		}
	})
	return unblock
}

// Child processes: the test binary run again with roleEnv set runs one
// component until it is killed.
const (
	roleEnv     = "WAYPOINT_FAULTS_ROLE"
	roleNATS    = "WAYPOINT_FAULTS_NATS"
	roleDB      = "WAYPOINT_FAULTS_DB"
	roleRedis   = "WAYPOINT_FAULTS_REDIS"
	rolePrefix  = "WAYPOINT_FAULTS_PREFIX"
	roleHub     = "WAYPOINT_FAULTS_HUB"
	roleReplica = "WAYPOINT_FAULTS_REPLICAS"
)

// startChild runs role ("sink" or "backfill") in a child process.
func (pl *pipeline) startChild(role, natsURL string) *exec.Cmd {
	pl.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		pl.t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role, roleNATS+"="+natsURL, roleDB+"="+pl.dbURL,
		roleRedis+"="+pl.redisURL, rolePrefix+"="+pl.prefix, roleHub+"="+pl.hubAddr, roleReplica+"="+strconv.Itoa(pl.replicas))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		pl.t.Fatal(err)
	}
	pl.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
		}
	})
	return cmd
}

// sigkill kills a child with SIGKILL and checks that is how it ended.
func sigkill(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, not by SIGKILL", err)
	}
}

func runRole(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := childMain(ctx, role); err != nil {
		fmt.Fprintf(os.Stderr, "faults child %s: %v\n", role, err)
		return 1
	}
	return 0
}

func childMain(ctx context.Context, role string) error {
	pool, err := pgxpool.New(ctx, os.Getenv(roleDB))
	if err != nil {
		return err
	}
	defer pool.Close()
	opt, err := redis.ParseURL(os.Getenv(roleRedis))
	if err != nil {
		return err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	prefix := os.Getenv(rolePrefix)
	replicas, _ := strconv.Atoi(os.Getenv(roleReplica))
	switch role {
	case "sink":
		b, err := openBus(ctx, os.Getenv(roleNATS), "sink-child", replicas)
		if err != nil {
			return err
		}
		defer b.Close()
		return sink.Run(ctx, sinkOptions(b, pool, rdb, prefix, 1))
	case "backfill":
		h, err := hub.Dial(ctx, os.Getenv(roleHub))
		if err != nil {
			return err
		}
		defer h.Close()
		w, err := newWorker(ctx, pool, h, newQueue(rdb, prefix))
		if err != nil {
			return err
		}
		return w.Run(ctx)
	}
	return fmt.Errorf("unknown role %q", role)
}
