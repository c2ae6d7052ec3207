package testsupport_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// TestSettledStateIsFinal checks that SettledState returns the state the
// simulator keeps once its workload is over. With blocks slower than the
// height poll, heights stand still between blocks while the workload
// runs, as they do when the simulator is starved of CPU; a truth taken
// then makes every comparison fail for data that is not missing.
func TestSettledStateIsFinal(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{
		{"blocks slower than the height poll", 200 * time.Millisecond},
		{"a block per workload step", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim, _ := testsupport.StartDevnet(t, devnet.Options{
				Seed: 3, FIDs: 5, Rate: 200, Duration: time.Second, BlockInterval: tc.interval,
			})
			early := sim.State()
			truth := testsupport.SettledState(t, sim)
			select {
			case <-sim.WorkloadDone():
			default:
				t.Fatal("SettledState returned while the workload was running")
			}
			if sameState(early, truth) {
				t.Fatal("the workload changed nothing; the test cannot tell a final state from an early one")
			}
			// Blocks keep coming after the workload (with an interval);
			// the state must not change under them.
			for s := uint32(1); tc.interval > 0 && s <= sim.Shards(); s++ {
				h := sim.Height(s)
				for sim.Height(s) < h+2 {
					time.Sleep(tc.interval / 4)
				}
			}
			if !sameState(truth, sim.State()) {
				t.Fatal("the state changed after SettledState returned")
			}
		})
	}
}

func sameState(a, b *devnet.State) bool {
	for _, st := range testsupport.ComparedStores {
		if !reflect.DeepEqual(a.Hashes(st), b.Hashes(st)) {
			return false
		}
	}
	return true
}
