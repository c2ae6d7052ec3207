package ingest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/hub"
)

// Environment of the ingest child process that TestSIGKILL starts by
// running this test binary again.
const (
	helperEnv       = "WAYPOINT_INGEST_TEST_CHILD"
	helperHubEnv    = "WAYPOINT_INGEST_TEST_CHILD_HUB"
	helperNATSEnv   = "WAYPOINT_INGEST_TEST_CHILD_NATS"
	helperStreamEnv = "WAYPOINT_INGEST_TEST_CHILD_STREAM"
	helperDupEnv    = "WAYPOINT_INGEST_TEST_CHILD_DUPLICATE_WINDOW"
)

// Environment of the simulator child process the benchmarks start, so that
// the benchmark process's memory is ingest's (and the embedded server's)
// alone.
const (
	devnetChildEnv = "WAYPOINT_INGEST_TEST_DEVNET"
	devnetSeedEnv  = "WAYPOINT_INGEST_TEST_DEVNET_SEED"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(childMain())
	}
	if n := os.Getenv(devnetChildEnv); n != "" {
		os.Exit(devnetMain(n))
	}
	if spec := os.Getenv(rssChildEnv); spec != "" {
		os.Exit(rssChildMain(spec))
	}
	os.Exit(m.Run())
}

// devnetMain serves a simulator preloaded with n events on a loopback port,
// prints the address, and stops when its stdin closes.
func devnetMain(n string) int {
	preload, err := strconv.Atoi(n)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	seed, _ := strconv.ParseUint(os.Getenv(devnetSeedEnv), 10, 64)
	sim, err := devnet.New(devnet.Options{Seed: seed, FIDs: 2000, Preload: preload, Duration: time.Nanosecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Printf("ADDR %s\n", lis.Addr())
	if err := sim.Serve(ctx, lis); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startDevnetProcess runs devnetMain in a child process and returns its
// address; the child stops when the benchmark ends.
func startDevnetProcess(tb testing.TB, preload int, seed uint64) string {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), devnetChildEnv+"="+strconv.Itoa(preload), devnetSeedEnv+"="+strconv.FormatUint(seed, 10))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("devnet child: %v", err)
	}
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if !ok {
		tb.Fatalf("devnet child said %q", line)
	}
	return addr
}

// childMain runs ingest the way `waypoint ingest` does, against the hub and
// NATS server the parent test named, until it is killed.
func childMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	c, err := hub.Dial(ctx, os.Getenv(helperHubEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	dup, err := time.ParseDuration(os.Getenv(helperDupEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, err := bus.Open(ctx, bus.Options{URL: os.Getenv(helperNATSEnv), Stream: os.Getenv(helperStreamEnv), DuplicateWindow: dup})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer b.Close()
	err = Run(ctx, Options{
		Hub:                c.Raw(),
		Bus:                b,
		FromID:             u64(0),
		CheckpointInterval: 20 * time.Millisecond,
		MinBackoff:         5 * time.Millisecond,
		MaxBackoff:         100 * time.Millisecond,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func startChild(t *testing.T, e *env) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(),
		helperEnv+"=1",
		helperHubEnv+"="+e.addr,
		helperNATSEnv+"="+e.srv.ClientURL(),
		helperStreamEnv+"="+e.srv.StreamName(),
		helperDupEnv+"="+e.dupWindow(t).String(),
	)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}
