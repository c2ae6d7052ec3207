//go:build faults

package faults

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// proxy forwards TCP connections from a loopback port to target until it
// is cut: then every open connection is closed and new ones are dropped
// on accept, which is what a network partition looks like to a NATS
// client, until heal.
type proxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { _ = l.Close(); p.partition() })
	return p
}

func (p *proxy) url() string { return "nats://" + p.l.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.mu.Unlock()
		go p.forward(c)
	}
}

func (p *proxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		_, _ = c.Close(), up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	_, _ = c.Close(), up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

func (p *proxy) partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *proxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// TestFaultNetworkPartition puts a TCP proxy between one of two sinks and
// nats-server and cuts it for five seconds mid-run: the cut-off sink
// cannot acknowledge what it wrote, its partitions move to the other sink
// after the member and pin timeouts, and it rejoins after the heal. Writes
// made twice must change nothing.
func TestFaultNetworkPartition(t *testing.T) {
	nats := testsupport.StartNATSServer(t)
	px := startProxy(t, nats.URL[len("nats://"):])
	pl := newPipeline(t, devnet.Options{Seed: 139, FIDs: 40, Preload: 1500, Rate: 400, Duration: 8 * time.Second}, "")
	pl.startIngest(nats.URL)
	pl.startSink(px.url(), 1)
	pl.startSink(nats.URL, 1)
	time.Sleep(2 * time.Second)
	px.partition()
	time.Sleep(5 * time.Second)
	px.heal()
	healed := time.Now()
	pl.converge("partition sink<->NATS 5s, healed", healed, 45*time.Second, nats.URL)
}
