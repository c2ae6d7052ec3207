//go:build faults

package faults

import (
	"context"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/sink"
)

// clusterWorkload is small enough for two cores and long enough for the
// faults to land while events flow.
func clusterWorkload(seed uint64) devnet.Options {
	return devnet.Options{Seed: seed, FIDs: 40, Preload: 1500, Rate: 200, Duration: 20 * time.Second}
}

// TestFaultClusterNodeKill runs the pipeline on a three-node JetStream
// cluster with the stream at three replicas: ingest talks to node 1, one
// sink to node 2 and another to node 3. Mid-run node 2 is SIGKILLed and
// restarted, then node 1 (ingest's); clients fail over to the nodes they
// learnt from the cluster, the stream keeps its quorum, and Postgres must
// end equal to the simulator.
func TestFaultClusterNodeKill(t *testing.T) {
	c := testsupport.StartNATSCluster(t, 3)
	pl := newPipeline(t, clusterWorkload(101), "")
	pl.replicas = 3
	pl.startIngest(c.URLs[0])
	pl.startSink(c.URLs[1], 1)
	pl.startSink(c.URLs[2], 1)
	pl.stableFor = 45 * time.Second

	pl.waitWriting(60 * time.Second)
	for _, node := range []int{1, 0} {
		c.Kill(node)
		time.Sleep(2 * time.Second)
		c.Restart(node)
		time.Sleep(time.Second)
	}
	healed := time.Now()
	if cmp := pl.converge("cluster: SIGKILL node 2, then node 1", healed, 90*time.Second, c.URL()); len(cmp.Mismatches) > 0 {
		logConsumers(t, pl, c.URL())
	}
	checkReplicas(t, pl, c, 3)
}

// TestFaultClusterRestart SIGKILLs all three nodes at once mid-run and
// starts them again: the stream and the checkpoints are recovered from the
// nodes' stores, every component reconnects on its own, and nothing is
// lost.
func TestFaultClusterRestart(t *testing.T) {
	c := testsupport.StartNATSCluster(t, 3)
	pl := newPipeline(t, clusterWorkload(103), "")
	pl.replicas = 3
	pl.startIngest(c.URLs[0])
	pl.startSink(c.URLs[1], 1)
	pl.startSink(c.URLs[2], 1)
	pl.stableFor = 45 * time.Second

	pl.waitWriting(60 * time.Second)
	time.Sleep(time.Second)
	for i := range c.URLs {
		c.Kill(i)
	}
	time.Sleep(time.Second)
	for i := range c.URLs {
		c.Restart(i)
	}
	healed := time.Now()
	if cmp := pl.converge("cluster: SIGKILL all 3 nodes, restart", healed, 120*time.Second, c.URL()); len(cmp.Mismatches) > 0 {
		logConsumers(t, pl, c.URL())
	}
	checkReplicas(t, pl, c, 3)
}

// checkReplicas asserts that the stream still has n replicas, all of them
// current, so the run did not pass by silently dropping to fewer copies.
func checkReplicas(t *testing.T, pl *pipeline, c *testsupport.NATSCluster, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := openBus(ctx, c.URL(), "audit", pl.replicas)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		si, err := b.StreamInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if si.Config.Replicas != n {
			t.Fatalf("stream has %d replicas, want %d", si.Config.Replicas, n)
		}
		current := 0
		if si.Cluster != nil && si.Cluster.Leader != "" {
			current = 1
			for _, p := range si.Cluster.Replicas {
				if p.Current {
					current++
				}
			}
		}
		if current == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream has %d of %d replicas current: %+v", current, n, si.Cluster)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// logConsumers logs the state of the sink group's partition consumers,
// for a run that did not converge.
func logConsumers(t *testing.T, pl *pipeline, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := openBus(ctx, url, "audit", pl.replicas)
	if err != nil {
		t.Log(err)
		return
	}
	defer b.Close()
	for p := range partitions {
		cons, err := b.Stream().Consumer(ctx, bus.ConsumerName(sink.DefaultGroup, p))
		if err != nil {
			t.Logf("partition %d: %v", p, err)
			continue
		}
		ci, err := cons.Info(ctx)
		if err != nil {
			t.Logf("partition %d: %v", p, err)
			continue
		}
		leader := ""
		if ci.Cluster != nil {
			leader = ci.Cluster.Leader
		}
		t.Logf("partition %d: pending %d, ack pending %d, waiting pulls %d, delivered %d, ack floor %d, leader %q, priority groups %+v",
			p, ci.NumPending, ci.NumAckPending, ci.NumWaiting, ci.Delivered.Stream, ci.AckFloor.Stream, leader, ci.PriorityGroups)
	}
}
