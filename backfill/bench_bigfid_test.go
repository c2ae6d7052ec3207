package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// bigFIDEnv switches the test binary into the worker process of
// BenchmarkBackfillBigFID: it backfills the FID at the hub address the
// variable holds and prints its counters.
const bigFIDEnv = "WAYPOINT_BACKFILL_BENCH_BIG_FID"

// bigFIDMessages is the size of the FID; WAYPOINT_BENCH_BIG_FID_MESSAGES
// overrides it for quicker runs.
func bigFIDMessages() int {
	if n, err := strconv.Atoi(os.Getenv("WAYPOINT_BENCH_BIG_FID_MESSAGES")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

type bigFIDResult struct {
	Messages int64
	Seconds  float64
	PeakRSS  int64 // bytes, VmHWM of the worker process
}

// runBigFIDChild backfills fid 1 from the hub at addr with full validation
// into a writer that only counts, so the process's peak RSS is the
// worker's own: fetching, decoding, validating and batching.
func runBigFIDChild(addr string) int {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer conn.Close()
	var n atomic.Int64
	w := NewWorker(nil, pb.NewHubServiceClient(conn), WriterFunc(func(_ context.Context, ev []*pb.HubEvent) error {
		n.Add(int64(len(ev)))
		return nil
	}), WorkerOptions{MaxRate: 1e6, InitialRate: 1e6, Validation: message.CheckFull, Logger: discardLogger()})
	start := time.Now()
	if err := w.Backfill(context.Background(), 1); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	res := bigFIDResult{Messages: w.Stats().Messages, Seconds: time.Since(start).Seconds()}
	// The child's own VmHWM: the rusage a parent gets from wait is no use,
	// since Linux keeps ru_maxrss across execve, so it can report the
	// parent's footprint instead of the child's.
	peak, err := testsupport.PeakRSS(os.Getpid())
	res.PeakRSS = int64(peak)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// loadBigFID registers fid 1 on sim and gives it n casts, signed by the
// simulator itself (Load) in chunks so the unsigned data stay small.
func loadBigFID(b *testing.B, sim *devnet.Sim, n int) {
	b.Helper()
	signer := devnet.NewSigner(1)
	if err := sim.Register(1, signer, 1); err != nil {
		b.Fatal(err)
	}
	const chunk = 20000
	first := uint32(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Unix() - message.FarcasterEpoch.Unix())
	data := make([]*pb.MessageData, chunk)
	for lo := 0; lo < n; lo += chunk {
		data = data[:min(chunk, n-lo)]
		for i := range data {
			data[i] = &pb.MessageData{
				Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD, Fid: 1, Timestamp: first + uint32(lo+i), Network: sim.Network(),
				Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: "cast " + strconv.Itoa(lo+i) + " of a very active account"}},
			}
		}
		if err := sim.Load(signer, data...); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackfillBigFID backfills one FID holding a million casts (see
// bigFIDMessages) from the simulator in a separate worker process and
// reports that process's peak RSS (target: at most 200 MB) and its rate.
func BenchmarkBackfillBigFID(b *testing.B) {
	n := bigFIDMessages()
	sim, addr := testsupport.StartDevnet(b, devnet.Options{Limits: devnet.Limits{Casts: n}})
	start := time.Now()
	loadBigFID(b, sim, n)
	b.Logf("loaded %d casts in %v", n, time.Since(start).Round(time.Millisecond))
	b.ResetTimer()
	var peak int64
	var msgs int64
	var secs float64
	for range b.N {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), bigFIDEnv+"="+addr)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("worker process: %v", err)
		}
		var res bigFIDResult
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatalf("worker process output %q: %v", out, err)
		}
		if res.Messages != int64(n) {
			b.Fatalf("worker wrote %d messages, want %d", res.Messages, n)
		}
		peak = max(peak, res.PeakRSS)
		msgs += res.Messages
		secs += res.Seconds
	}
	b.ReportMetric(float64(peak)/1e6, "peak-rss-MB")
	b.ReportMetric(float64(msgs)/secs, "msgs/s")
	b.ReportMetric(float64(n), "fid-msgs")
}
