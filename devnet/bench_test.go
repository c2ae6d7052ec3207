package devnet_test

import (
	"context"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	pb "github.com/waypointhq/waypoint/proto"
)

// BenchmarkReplay measures how fast one subscriber replays a preloaded
// backlog over real gRPC on loopback, decoding every event with the
// default proto codec as any client does.
func BenchmarkReplay(b *testing.B) {
	// One second blocks of 10k actions; the workload ends right after the
	// preload so that live traffic does not compete with the replay.
	sim, c := dial(b, devnet.Options{Seed: 1, FIDs: 2000, Preload: 200000, Rate: 10000, BlockInterval: time.Second, Duration: time.Nanosecond})
	shard := uint32(1)
	resp, err := c.GetEvents(context.Background(), &pb.EventsRequest{ShardIndex: &shard, Reverse: yes(), PageSize: u32(1)})
	if err != nil || len(resp.Events) != 1 {
		b.Fatalf("last event: %v", err)
	}
	last := resp.Events[0].Id
	_ = sim
	b.ResetTimer()
	var events int
	cpu0 := cpuTime()
	start := time.Now()
	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		from := uint64(0)
		stream, err := c.Subscribe(ctx, &pb.SubscribeRequest{EventTypes: allTypes, FromId: &from, ShardIndex: &shard})
		if err != nil {
			b.Fatal(err)
		}
		for {
			ev, err := stream.Recv()
			if err != nil {
				b.Fatal(err)
			}
			events++
			if ev.Id >= last {
				break
			}
		}
		cancel()
	}
	b.ReportMetric(float64(events)/time.Since(start).Seconds(), "events/s")
	// Server and client share the process: CPU time per event is the
	// figure that holds on a machine busy with other work.
	b.ReportMetric(float64(events)/(cpuTime()-cpu0).Seconds(), "events/cpu-s")
	b.ReportMetric(float64(events)/float64(b.N), "events/op")
}

// cpuTime returns the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkGenerate measures workload generation (draw, sign, merge, cut
// and encode blocks), the rate a preload or an unthrottled live workload
// reaches, and the memory the resulting events and state take.
func BenchmarkGenerate(b *testing.B) {
	const n = 50000
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var keep *devnet.Sim
	start := time.Now()
	for i := range b.N {
		sim, err := devnet.New(devnet.Options{Seed: uint64(i), FIDs: 1000, Preload: n, Rate: 5000, BlockInterval: time.Second})
		if err != nil {
			b.Fatal(err)
		}
		keep = sim
	}
	elapsed := time.Since(start)
	b.StopTimer()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-bytes/event")
	runtime.KeepAlive(keep)
}
