//go:build !race

// The race detector makes sync.Pool drop items at random, so allocation
// counts are only meaningful without it.

package embedding

import "testing"

func TestLocalEmbedIntoAllocs(t *testing.T) {
	e := NewLocal(0).(*Local)
	dst := make([]float32, e.Dimensions())
	for _, text := range benchCasts {
		allocs := testing.AllocsPerRun(100, func() {
			if err := e.EmbedInto(text, dst); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("EmbedInto(%q) allocates %v times per call, want 0", text, allocs)
		}
	}
}
