package testsupport

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NATSServer is a nats-server process started for one test.
type NATSServer struct {
	// URL is the server's client URL (nats://127.0.0.1:<port>).
	URL string
	// StoreDir is the JetStream store directory.
	StoreDir string
	cmd      *exec.Cmd
}

// StartNATSServer runs the nats-server binary from NATSServerBin with
// JetStream on a random loopback port, plus extra command-line arguments
// (for example "--user", "u", "--pass", "p", or "-c", configFile). The
// process is stopped when the test ends.
func StartNATSServer(t testing.TB, extra ...string) *NATSServer {
	t.Helper()
	bin := NATSServerBin(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	portsDir := filepath.Join(dir, "ports")
	if err := os.MkdirAll(portsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-js", "-sd", store, "-a", "127.0.0.1", "-p", "-1", "--ports_file_dir", portsDir}, extra...)
	cmd := exec.Command(bin, args...)
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = logf.Close()
	})
	portsFile := filepath.Join(portsDir, filepath.Base(bin)+"_"+strconv.Itoa(cmd.Process.Pid)+".ports")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if b, err := os.ReadFile(portsFile); err == nil {
			var ports struct {
				Nats []string `json:"nats"`
			}
			if json.Unmarshal(b, &ports) == nil && len(ports.Nats) > 0 {
				return &NATSServer{URL: ports.Nats[0], StoreDir: store, cmd: cmd}
			}
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("nats-server exited during startup:\n%s", log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("nats-server did not write %s within 20s:\n%s", portsFile, log)
		}
	}
}

// PID is the server's process id.
func (s *NATSServer) PID() int { return s.cmd.Process.Pid }

// Daemon is a server process a test can SIGKILL and start again with the
// same arguments, and so the same ports and data.
type Daemon struct {
	// Env, when not nil, is the process's environment instead of the
	// test's.
	Env []string

	t    testing.TB
	name string
	bin  string
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the process's exit, once done is closed
}

// NewDaemon describes a process running bin with args, logging to a file
// in the test's temporary directory; Start runs it and the test's end
// kills it.
func NewDaemon(t testing.TB, name, bin string, args ...string) *Daemon {
	d := &Daemon{t: t, name: name, bin: bin, args: args, log: filepath.Join(t.TempDir(), "daemon.log")}
	t.Cleanup(d.Kill)
	return d
}

// Start runs the process.
func (d *Daemon) Start() {
	d.t.Helper()
	f, err := os.OpenFile(d.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	cmd := exec.Command(d.bin, d.args...)
	if d.Env != nil {
		cmd.Env = d.Env
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("start %s: %v", d.name, err)
	}
	done := make(chan struct{})
	go func() { d.err = cmd.Wait(); _ = f.Close(); close(done) }()
	d.cmd, d.done = cmd, done
}

// PID is the running process's id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Done is closed when the running process has exited.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Stop ends the process with SIGTERM, by its PID, and waits up to timeout
// for it to exit, then kills it. It returns the exit's error: nil for a
// clean exit with status 0.
func (d *Daemon) Stop(timeout time.Duration) error {
	if d.cmd == nil {
		return nil
	}
	_ = syscall.Kill(d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(timeout):
		d.Kill()
		return fmt.Errorf("%s did not exit within %v of SIGTERM", d.name, timeout)
	}
	d.cmd = nil
	if d.err != nil {
		return fmt.Errorf("%s: %w", d.name, d.err)
	}
	return nil
}

// LogTail returns the last n bytes of the process's output.
func (d *Daemon) LogTail(n int) string {
	log, _ := os.ReadFile(d.log)
	if len(log) > n {
		log = log[len(log)-n:]
	}
	return string(log)
}

// Kill ends the process with SIGKILL, by its PID, and waits for it.
func (d *Daemon) Kill() {
	if d.cmd == nil {
		return
	}
	_ = syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
	d.cmd = nil
}

// WaitTCP waits until addr accepts connections, failing the test with the
// end of the process's log after 20s.
func (d *Daemon) WaitTCP(addr string) {
	d.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = conn.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.t.Fatalf("%s did not listen on %s within 20s:\n%s", d.name, addr, d.LogTail(4000))
}

// NATSCluster is a JetStream cluster of nats-server processes on loopback,
// each with its own store directory and server name, so a test can SIGKILL
// a node and start it again with its data.
type NATSCluster struct {
	nodes []*Daemon
	// URLs are the nodes' client URLs, in node order.
	URLs []string
}

// StartNATSCluster starts an n-node JetStream cluster; every node is
// killed when the test ends.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	bin := NATSServerBin(t)
	dir := t.TempDir()
	clientPorts, routePorts := make([]int, n), make([]int, n)
	var routes []string
	for i := range n {
		clientPorts[i], routePorts[i] = FreePort(t), FreePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i]))
	}
	c := &NATSCluster{}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		c.nodes = append(c.nodes, NewDaemon(t, "nats-server "+name, bin,
			"-js", "-sd", filepath.Join(dir, name), "-a", "127.0.0.1", "-p", strconv.Itoa(clientPorts[i]),
			"--server_name", name, "--cluster_name", "wptest",
			"--cluster", fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i]), "--routes", strings.Join(routes, ",")))
		c.URLs = append(c.URLs, fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]))
	}
	for _, d := range c.nodes {
		d.Start()
	}
	for i := range c.nodes {
		c.nodes[i].WaitTCP(strings.TrimPrefix(c.URLs[i], "nats://"))
	}
	return c
}

// URL returns every node's client URL, comma-separated.
func (c *NATSCluster) URL() string { return strings.Join(c.URLs, ",") }

// Kill ends node i with SIGKILL and waits for it to exit.
func (c *NATSCluster) Kill(i int) { c.nodes[i].Kill() }

// Restart starts node i again, with the same ports and store, and waits
// until it accepts clients.
func (c *NATSCluster) Restart(i int) {
	c.nodes[i].t.Helper()
	c.nodes[i].Start()
	c.nodes[i].WaitTCP(strings.TrimPrefix(c.URLs[i], "nats://"))
}

// FreePort returns a loopback TCP port nobody listened on a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
