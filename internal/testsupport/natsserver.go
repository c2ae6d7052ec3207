package testsupport

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
