package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// openClusterBus connects to url with the stream at three replicas,
// retrying while the cluster elects its leaders.
func openClusterBus(t testing.TB, url, name string) *bus.Bus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := bus.Open(ctx, bus.Options{URL: url, Name: name, Partitions: testPartitions, Replicas: 3,
			ConnectTimeout: 2 * time.Second, PublishTimeout: 5 * time.Second})
		cancel()
		if err == nil {
			t.Cleanup(func() { _ = b.Close() })
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("open bus at %s: %v", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// publishRetrying publishes msgs, sending again those whose publish failed
// while a node was down; the stream's duplicate window drops repeats.
func publishRetrying(t testing.TB, b *bus.Bus, msgs []*nats.Msg) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for len(msgs) > 0 {
		var failed []*nats.Msg
		var last error
		for _, m := range msgs {
			f, err := b.PublishAsync(m)
			if err != nil {
				failed, last = append(failed, m), err
				continue
			}
			select {
			case <-f.Ok():
			case err := <-f.Err():
				failed, last = append(failed, m), err
			case <-time.After(10 * time.Second):
				failed, last = append(failed, m), errors.New("publish ack timed out")
			}
		}
		if len(failed) > 0 && time.Now().After(deadline) {
			t.Fatalf("%d messages not published: %v", len(failed), last)
		}
		if len(failed) > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		msgs = failed
	}
}

// TestSinkClusterNodeKill runs two sink processes against a three-node
// JetStream cluster, each connected to its own node, while events are
// published; mid-run one node and then another are SIGKILLed and
// restarted. Every partition must drain and the database must hold exactly
// the workload's live rows. Order is not asserted: messages in flight to a
// killed node are redelivered after AckWait, behind later ones, which the
// convergent writer absorbs.
func TestSinkClusterNodeKill(t *testing.T) {
	c := testsupport.StartNATSCluster(t, 3)
	pub := openClusterBus(t, c.URLs[0], "publisher")
	pool := migratedPool(t)
	w := newWorkload(t, 11, 200)
	msgs := make([]*nats.Msg, len(w.events))
	for i, ev := range w.events {
		msgs[i] = busMsg(ev, nil)
	}

	for i, node := range []int{1, 2} {
		b := openClusterBus(t, c.URLs[node], fmt.Sprintf("sink-%d", i))
		opts := testOptions(b, pool)
		opts.Replicas = 2
		s, err := New(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		runSink(t, s)
	}

	// After the third chunk node 2 (a sink's) dies, after the sixth node 1
	// (the publisher's); clients fail over to the nodes they learnt.
	kills := map[int]int{2: 1, 5: 0}
	chunks := 8
	per := (len(msgs) + chunks - 1) / chunks
	for i := range chunks {
		publishRetrying(t, pub, msgs[i*per:min((i+1)*per, len(msgs))])
		if node, ok := kills[i]; ok {
			c.Kill(node)
			time.Sleep(2 * time.Second)
			c.Restart(node)
		}
		time.Sleep(300 * time.Millisecond)
	}
	waitDrained(t, pub, DefaultGroup, 90*time.Second)
	checkLive(t, pool, w)
}

// TestSinkClusterConcurrentStart starts two sink processes at the same
// moment on a fresh three-node cluster, each connected to its own node, as
// a deployment does: both race to create the same replicated consumers,
// dead-letter stream and member bucket. Both must be ready well within the
// set-up bound, not wait on an API reply the cluster never sends.
func TestSinkClusterConcurrentStart(t *testing.T) {
	c := testsupport.StartNATSCluster(t, 3)
	openClusterBus(t, c.URLs[0], "creator")
	pool := migratedPool(t)
	buses := []*bus.Bus{openClusterBus(t, c.URLs[1], "sink-1"), openClusterBus(t, c.URLs[2], "sink-2")}
	start := time.Now()
	errs := make(chan error, len(buses))
	for _, b := range buses {
		go func() {
			_, err := New(context.Background(), testOptions(b, pool))
			errs <- err
		}()
	}
	for range buses {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("two sinks took %v to start", d)
	}
	t.Logf("both sinks started in %v", time.Since(start).Round(time.Millisecond))
}

// TestSinkClusterStartWithoutQuorum starts a sink while two of the three
// nodes are down, so the cluster cannot create its consumers: New must
// keep saying what it is waiting for rather than wait in silence.
func TestSinkClusterStartWithoutQuorum(t *testing.T) {
	c := testsupport.StartNATSCluster(t, 3)
	b := openClusterBus(t, c.URLs[0], "sink")
	pool := migratedPool(t)
	c.Kill(1)
	c.Kill(2)
	var logs testsupport.SyncBuffer
	opts := testOptions(b, pool)
	opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 3*setupAttemptTimeout)
	defer cancel()
	if _, err := New(ctx, opts); err == nil {
		t.Fatal("a sink started on a cluster without quorum")
	}
	warnings := strings.Count(logs.String(), `msg="sink: create consumer sink-p0 failed, retrying"`)
	if warnings < 2 {
		t.Fatalf("%d warnings about the consumer New waited for, want at least 2; log:\n%s", warnings, logs.String())
	}
}
