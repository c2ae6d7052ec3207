//go:build faults

package faults

import (
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/ingest"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// TestFaultHubDelivery runs the pipeline against a hub that drops events
// from its live streams, ends every stream with UNAVAILABLE after a few
// hundred events and stalls periodically. Ingest repairs drops from
// GetEvents and reconnects after resets and stalls; nothing reaches
// Postgres by any other path, so equality proves the repairs.
func TestFaultHubDelivery(t *testing.T) {
	nats := testsupport.StartNATSServer(t)
	pl := newPipeline(t, devnet.Options{Seed: 127, FIDs: 40, Preload: 1500, Rate: 400, Duration: 8 * time.Second,
		Faults: devnet.Faults{DropEvery: 53, UnavailableEvery: 400, StallEvery: 2 * time.Second, StallFor: 800 * time.Millisecond}}, "")
	pl.startIngest(nats.URL)
	pl.startSink(nats.URL, 2)
	time.Sleep(3 * time.Second)
	for s := uint32(1); s <= pl.sim.Shards(); s++ {
		pl.sim.DropNext(s, 25)
	}
	pl.sim.Stall(6 * time.Second) // longer than ingest's 5s stall timeout
	pl.converge("hub: drops, UNAVAILABLE/400, stalls", time.Time{}, 45*time.Second, nats.URL)
	for _, g := range pl.gapList() {
		t.Errorf("ingest could not repair a gap with the hub's help: %+v", g)
	}
}

// TestFaultHubRetention stops ingest, lets the hub expire every event of
// both shards while the workload goes on, and starts ingest again: its
// checkpoints are behind the oldest event the hub keeps, so it reports
// retention gaps, which queue a backfill of the shards' FIDs, and the
// backfill worker repairs Postgres from the hub's current state.
func TestFaultHubRetention(t *testing.T) {
	nats := testsupport.StartNATSServer(t)
	pl := newPipeline(t, devnet.Options{Seed: 131, FIDs: 40, Preload: 1500, Rate: 400, Duration: 8 * time.Second}, "")
	in := pl.startIngest(nats.URL)
	pl.startSink(nats.URL, 2)
	pl.startBackfill()
	time.Sleep(2 * time.Second)
	if err := in.stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	expired := 0
	for s := uint32(1); s <= pl.sim.Shards(); s++ {
		expired += pl.sim.ExpireEvents(s, devnet.EventID(pl.sim.Height(s)+1, 0))
	}
	if expired == 0 {
		t.Fatal("nothing expired")
	}
	pl.startIngest(nats.URL)
	healed := time.Now()
	pl.converge("hub: retention expiry + backfill", healed, 45*time.Second, nats.URL)
	pl.waitQueueDrained(30 * time.Second)
	retention := 0
	for _, g := range pl.gapList() {
		if g.Kind == ingest.GapRetention {
			retention++
		}
	}
	if retention == 0 {
		t.Fatalf("no retention gap was reported after %d events expired: %+v", expired, pl.gapList())
	}
	t.Logf("%d events expired, %d retention gaps repaired by backfill", expired, retention)
}
