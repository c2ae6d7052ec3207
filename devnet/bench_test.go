package devnet_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

// BenchmarkReplay measures how fast one subscriber replays a preloaded
// backlog over real gRPC on loopback: "decoded" decodes every event with
// the default proto codec, as a generic client does; "raw" takes the wire
// bytes, as ingest's raw-bytes codec does, and so measures the server.
func BenchmarkReplay(b *testing.B) {
	// One second blocks of 10k actions; the workload ends right after the
	// preload so that live traffic does not compete with the replay.
	sim, addr := testsupport.StartDevnet(b, devnet.Options{Seed: 1, FIDs: 2000, Preload: 200000, Rate: 10000, BlockInterval: time.Second, Duration: time.Nanosecond})
	_ = sim
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewHubServiceClient(conn)
	shard := uint32(1)
	resp, err := c.GetEvents(context.Background(), &pb.EventsRequest{ShardIndex: &shard, Reverse: yes(), PageSize: u32(1)})
	if err != nil || len(resp.Events) != 1 {
		b.Fatalf("last event: %v", err)
	}
	last := resp.Events[0].Id
	req := &pb.SubscribeRequest{EventTypes: allTypes, FromId: u64(0), ShardIndex: &shard}

	run := func(b *testing.B, replay func(ctx context.Context) int) {
		var events int
		cpu0 := cpuTime()
		start := time.Now()
		for range b.N {
			ctx, cancel := context.WithCancel(context.Background())
			events += replay(ctx)
			cancel()
		}
		b.ReportMetric(float64(events)/time.Since(start).Seconds(), "events/s")
		// Server and client share the process: events per CPU second is
		// the figure that holds on a machine busy with other work.
		b.ReportMetric(float64(events)/(cpuTime()-cpu0).Seconds(), "events/cpu-s")
		b.ReportMetric(float64(events)/float64(b.N), "events/op")
	}
	b.Run("decoded", func(b *testing.B) {
		run(b, func(ctx context.Context) int {
			stream, err := c.Subscribe(ctx, req)
			if err != nil {
				b.Fatal(err)
			}
			for n := 1; ; n++ {
				ev, err := stream.Recv()
				if err != nil {
					b.Fatal(err)
				}
				if ev.Id >= last {
					return n
				}
			}
		})
	})
	b.Run("raw", func(b *testing.B) {
		codec := rawCodec{encoding.GetCodecV2("proto")}
		run(b, func(ctx context.Context) int {
			stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/HubService/Subscribe", grpc.ForceCodecV2(codec))
			if err != nil {
				b.Fatal(err)
			}
			if err := stream.SendMsg(req); err != nil {
				b.Fatal(err)
			}
			if err := stream.CloseSend(); err != nil {
				b.Fatal(err)
			}
			for n := 1; ; n++ {
				var raw []byte
				if err := stream.RecvMsg(&raw); err != nil {
					b.Fatal(err)
				}
				if eventID(raw) >= last {
					return n
				}
			}
		})
	})
}

// eventID reads field 2 (id) of an encoded HubEvent.
func eventID(b []byte) uint64 {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0
		}
		b = b[n:]
		if num == 2 && typ == protowire.VarintType {
			v, _ := protowire.ConsumeVarint(b)
			return v
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0
		}
		b = b[n:]
	}
	return 0
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

// BenchmarkLoad measures how fast one account's history of n casts goes
// into the simulator, from unsigned data to merged and cut into blocks:
// "submit" signs on every core and submits the signed messages, which
// Submit verifies again; "load" hands the data to Load, which signs on
// every core and skips that verification.
func BenchmarkLoad(b *testing.B) {
	const n, chunk = 40000, 20000
	data := make([]*pb.MessageData, n)
	for i := range data {
		data[i] = &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD, Fid: 1, Timestamp: t0 + uint32(i),
			Network: pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET,
			Body:    &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: fmt.Sprintf("cast %d of a very active account", i)}}}
	}
	signer := devnet.NewSigner(1)
	for _, tc := range []struct {
		name string
		load func(*devnet.Sim, []*pb.MessageData) error
	}{
		{"submit", func(sim *devnet.Sim, data []*pb.MessageData) error {
			msgs := make([]*pb.Message, len(data))
			var wg sync.WaitGroup
			workers := runtime.GOMAXPROCS(0)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < len(data); i += workers {
						msgs[i], _ = signer.Sign(data[i])
					}
				}()
			}
			wg.Wait()
			return sim.Submit(msgs...)
		}},
		{"load", func(sim *devnet.Sim, data []*pb.MessageData) error { return sim.Load(signer, data...) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var elapsed time.Duration
			for range b.N {
				sim, err := devnet.New(devnet.Options{Limits: devnet.Limits{Casts: n}})
				if err != nil {
					b.Fatal(err)
				}
				if err := sim.Register(1, signer, 1); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				for lo := 0; lo < n; lo += chunk {
					if err := tc.load(sim, data[lo:lo+chunk]); err != nil {
						b.Fatal(err)
					}
				}
				elapsed += time.Since(start)
			}
			b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "msgs/s")
		})
	}
}
