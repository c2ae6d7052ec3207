//go:build faults

package faults

import (
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// TestFaultBaseline is the reference line of the table: the same pipeline
// with no fault, on one nats-server, so a fault scenario's recovery time
// can be read against it.
func TestFaultBaseline(t *testing.T) {
	nats := testsupport.StartNATSServer(t)
	pl := newPipeline(t, devnet.Options{Seed: 100, FIDs: 40, Preload: 1500, Rate: 400, Duration: 4 * time.Second}, "")
	pl.startIngest(nats.URL)
	pl.startSink(nats.URL, 2)
	pl.converge("baseline: no fault", time.Time{}, 45*time.Second, nats.URL)
}
