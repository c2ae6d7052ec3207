package testsupport

import (
	"context"
	"net"
	"testing"

	"github.com/waypointhq/waypoint/devnet"
)

// StartDevnet starts a Snapchain simulator built from opts, serving the
// HubService over real gRPC on a loopback port, and returns it with its
// address (host:port). The simulator stops when the test ends.
func StartDevnet(t testing.TB, opts devnet.Options) (*devnet.Sim, string) {
	t.Helper()
	sim, err := devnet.New(opts)
	if err != nil {
		t.Fatalf("start devnet: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("start devnet: listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("devnet: %v", err)
		}
	})
	return sim, lis.Addr().String()
}
