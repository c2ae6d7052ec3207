package sink

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/message"
)

// benchFIDs makes a backlog of 48,000 events (16 per FID), ten batches of
// the default size: enough that start-up and the first BatchTimeout weigh
// little in the drain time.
const benchFIDs = 3000

// BenchmarkSinkEndToEnd publishes a workload to the embedded stream, then
// drains it into Postgres with 1, 2 and 4 replicas; msgs/s is the drain
// rate (publishing is not timed). writer-only writes the same events into
// a fresh database straight through one Writer in batches of the sink's
// default size: the ceiling the consumers are measured against, in the
// same run. The sinks run with the default batch and pull sizes.
func BenchmarkSinkEndToEnd(b *testing.B) {
	b.Run("writer-only", func(b *testing.B) {
		w := newWorkload(b, 1, benchFIDs)
		const size = DefaultBatchSize
		var total time.Duration
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			wr := newTestWriter(b, migratedPool(b))
			b.StartTimer()
			start := time.Now()
			for lo := 0; lo < len(w.events); lo += size {
				if _, err := wr.Write(context.Background(), w.events[lo:min(lo+size, len(w.events))]); err != nil {
					b.Fatal(err)
				}
			}
			total += time.Since(start)
		}
		b.ReportMetric(float64(len(w.events)*b.N)/total.Seconds(), "msgs/s")
	})
	// cluster=3 runs two replicas against one node of a three-node cluster
	// with the stream at three replicas, so every publish and ack is
	// replicated.
	for _, c := range []struct {
		name     string
		replicas int
		cluster  bool
	}{{"replicas=1", 1, false}, {"replicas=2", 2, false}, {"replicas=4", 4, false}, {"cluster=3/replicas=2", 2, true}} {
		n := c.replicas
		b.Run(c.name, func(b *testing.B) {
			w := newWorkload(b, 1, benchFIDs)
			msgs := make([]*nats.Msg, len(w.events))
			for i, ev := range w.events {
				msgs[i] = busMsg(ev, nil)
			}
			var total time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var bs *bus.Bus
				if c.cluster {
					bs = openClusterBus(b, testsupport.StartNATSCluster(b, 3).URLs[i%3], "bench")
				} else {
					bs = openTestBus(b)
				}
				pool := migratedPool(b)
				publish(b, bs, msgs...)
				opts := testOptions(bs, pool)
				opts.BatchSize, opts.BatchTimeout = DefaultBatchSize, DefaultBatchTimeout
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

// BenchmarkSinkLatency publishes events at a steady 1,000 a second, with
// the default batch size and timeout, and reports percentiles of the time
// from publish to the commit of the event's batch.
func BenchmarkSinkLatency(b *testing.B) {
	const rate = 1000
	w := newWorkload(b, 3, 250)
	msgs := make([]*nats.Msg, len(w.events))
	for i, ev := range w.events {
		msgs[i] = busMsg(ev, nil)
	}
	var lat []time.Duration
	var batches, messages int64
	for i := 0; i < b.N; i++ {
		bs := openTestBus(b)
		pool := migratedPool(b)
		var mu sync.Mutex
		sent, committed := map[uint64]time.Time{}, map[uint64]time.Time{}
		opts := testOptions(bs, pool)
		opts.BatchSize, opts.BatchTimeout = DefaultBatchSize, DefaultBatchTimeout
		opts.Validate = message.CheckHash
		opts.OnBatch = func(bi BatchInfo) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			for _, p := range bi.Partitions {
				for _, seq := range p.Seqs {
					committed[seq] = now
				}
			}
		}
		s, err := New(context.Background(), opts)
		if err != nil {
			b.Fatal(err)
		}
		stop := runSink(b, s)
		tick := time.NewTicker(time.Second / rate)
		for _, m := range msgs {
			<-tick.C
			at := time.Now()
			f, err := bs.PublishAsync(m)
			if err != nil {
				b.Fatal(err)
			}
			select {
			case ack := <-f.Ok():
				sent[ack.Sequence] = at
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
		tick.Stop()
		waitDrained(b, bs, DefaultGroup, time.Minute)
		stop()
		st := s.Stats()
		batches, messages = batches+st.Batches, messages+st.Messages
		for seq, at := range sent {
			lat = append(lat, committed[seq].Sub(at))
		}
	}
	slices.Sort(lat)
	pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Milliseconds()) }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(messages)/float64(batches), "msgs/batch")
}
