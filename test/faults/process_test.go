//go:build faults

package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/sink"
)

// freePort returns a loopback TCP port nobody listened on a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// daemon is an external server process the test can SIGKILL and start
// again with the same arguments (and so the same ports and data).
type daemon struct {
	t    testing.TB
	name string
	bin  string
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func (d *daemon) start() {
	d.t.Helper()
	f, err := os.OpenFile(d.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	cmd := exec.Command(d.bin, d.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("start %s: %v", d.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = f.Close(); close(done) }()
	d.cmd, d.done = cmd, done
}

// kill ends the process with SIGKILL, by its PID, and waits for it.
func (d *daemon) kill() {
	if d.cmd == nil {
		return
	}
	_ = syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
	d.cmd = nil
}

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// waitTCP waits until addr accepts connections.
func waitTCP(t testing.TB, addr string, d *daemon) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not listen on %s within 20s:\n%s", d.name, addr, d.logTail())
}

// natsCluster is a JetStream cluster of nats-server processes on
// loopback, each with its own store directory and server name.
type natsCluster struct {
	nodes []*daemon
	urls  []string
}

func startNATSCluster(t testing.TB, n int) *natsCluster {
	t.Helper()
	bin := testsupport.NATSServerBin(t)
	dir := t.TempDir()
	clientPorts, routePorts := make([]int, n), make([]int, n)
	var routes []string
	for i := range n {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i]))
	}
	c := &natsCluster{}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		d := &daemon{t: t, name: "nats-server " + name, bin: bin, log: filepath.Join(dir, name+".log"), args: []string{
			"-js", "-sd", filepath.Join(dir, name), "-a", "127.0.0.1", "-p", strconv.Itoa(clientPorts[i]),
			"--server_name", name, "--cluster_name", "wpfaults",
			"--cluster", fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i]), "--routes", strings.Join(routes, ","),
		}}
		c.nodes = append(c.nodes, d)
		c.urls = append(c.urls, fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]))
	}
	for _, d := range c.nodes {
		d.start()
		t.Cleanup(d.kill)
	}
	for i, d := range c.nodes {
		waitTCP(t, strings.TrimPrefix(c.urls[i], "nats://"), d)
	}
	return c
}

func (c *natsCluster) url() string { return strings.Join(c.urls, ",") }

// restart starts node i again and waits for it to accept clients.
func (c *natsCluster) restart(t testing.TB, i int) {
	t.Helper()
	c.nodes[i].start()
	waitTCP(t, strings.TrimPrefix(c.urls[i], "nats://"), c.nodes[i])
}

// privateRedis starts a redis-server of the test's own, with no
// persistence, so the test may kill it and bring it back empty.
func privateRedis(t testing.TB) (*daemon, string) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server binary: %v", err)
	}
	port := freePort(t)
	d := &daemon{t: t, name: "redis-server", bin: bin, log: filepath.Join(t.TempDir(), "redis.log"),
		args: []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"}}
	d.start()
	t.Cleanup(d.kill)
	waitTCP(t, fmt.Sprintf("127.0.0.1:%d", port), d)
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
