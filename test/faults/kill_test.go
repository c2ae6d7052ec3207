//go:build faults

package faults

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// TestFaultKills crashes components at random moments, over and over,
// while the workload runs and a full backfill overlaps it: ingest, one
// of two sink replicas and the backfill worker are killed in-process
// (context cancelled and connections closed at once, losing whatever was
// in flight), and a sink and a backfill worker running as child processes
// are SIGKILLed. Each victim is started again after a random pause; at the
// end Postgres must equal the simulator.
func TestFaultKills(t *testing.T) {
	nats := testsupport.StartNATSServer(t)
	pl := newPipeline(t, devnet.Options{Seed: 107, FIDs: 50, Preload: 2000, Rate: 400, Duration: 10 * time.Second}, "")
	rng := rand.New(rand.NewPCG(107, 1))
	ingest := pl.startIngest(nats.URL)
	sinkA := pl.startSink(nats.URL, 1)
	pl.startSink(nats.URL, 1)
	worker := pl.startBackfill()
	pl.enqueueAll()
	childSink := pl.startChild("sink", nats.URL)
	childWorker := pl.startChild("backfill", nats.URL)

	pause := func() { time.Sleep(time.Duration(150+rng.IntN(600)) * time.Millisecond) }
	kills := map[string]int{}
	for range 12 {
		pause()
		switch rng.IntN(5) {
		case 0:
			ingest.kill()
			pause()
			ingest = pl.startIngest(nats.URL)
			kills["ingest"]++
		case 1:
			sinkA.kill()
			pause()
			sinkA = pl.startSink(nats.URL, 1)
			kills["sink"]++
		case 2:
			worker.kill()
			pause()
			worker = pl.startBackfill()
			kills["backfill"]++
		case 3:
			sigkill(t, childSink)
			pause()
			childSink = pl.startChild("sink", nats.URL)
			kills["SIGKILL sink"]++
		case 4:
			sigkill(t, childWorker)
			pause()
			childWorker = pl.startChild("backfill", nats.URL)
			kills["SIGKILL backfill"]++
		}
	}
	healed := time.Now()
	t.Logf("kills: %v", kills)
	pl.converge("kills: ingest/sink/backfill x12 (SIGKILL too)", healed, 45*time.Second, nats.URL)
	st := pl.waitQueueDrained(30 * time.Second)
	if st.Done.FIDs < int64(pl.fids) {
		t.Errorf("backfill completed %d FIDs, want at least %d: a job was lost", st.Done.FIDs, pl.fids)
	}
}
