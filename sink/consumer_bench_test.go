package sink

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/waypointhq/waypoint/message"
)

// BenchmarkSinkEndToEnd publishes a workload to the embedded stream, then
// drains it into Postgres with 1, 2 and 4 replicas; msgs/s is the drain
// rate (publishing is not timed).
func BenchmarkSinkEndToEnd(b *testing.B) {
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			w := newWorkload(b, 1, 400)
			msgs := make([]*nats.Msg, len(w.events))
			for i, ev := range w.events {
				msgs[i] = busMsg(ev, nil)
			}
			var total time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				bs := openTestBus(b)
				pool := migratedPool(b)
				publish(b, bs, msgs...)
				opts := testOptions(bs, pool)
				opts.BatchSize, opts.BatchTimeout = 1000, 100*time.Millisecond
				opts.Replicas = n
				opts.Validate = message.CheckHash
				s, err := New(context.Background(), opts)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				stop := runSink(b, s)
				waitDrained(b, bs, DefaultGroup, 5*time.Minute)
				total += time.Since(start)
				b.StopTimer()
				stop()
			}
			b.ReportMetric(float64(len(msgs)*b.N)/total.Seconds(), "msgs/s")
		})
	}
}
