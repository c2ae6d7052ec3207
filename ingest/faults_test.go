package ingest

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/devnet"
	pb "github.com/waypointhq/waypoint/proto"
)

func sumStats(in *Ingester) (s ShardStats) {
	for _, x := range in.Stats().Shards {
		s.Received += x.Received
		s.Published += x.Published
		s.Duplicates += x.Duplicates
		s.Repaired += x.Repaired
		s.Gaps += x.Gaps
		s.Reconnects += x.Reconnects
	}
	return s
}

// TestDroppedEventsRepaired: the simulator hides events from live streams;
// each block's BLOCK_CONFIRMED counts reveal them and GetEvents supplies
// them, in order, with no gap left.
func TestDroppedEventsRepaired(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 17, FIDs: 200, Rate: 3000, Duration: 2 * time.Second, Faults: devnet.Faults{DropEvery: 37}}, bus.Options{})
	o := e.options(e.srv)
	o.FromID = u64(0)
	gaps := &gapRecorder{}
	o.GapHandler = gaps
	st := sumStats(runToEnd(t, e, o))
	if st.Repaired == 0 {
		t.Fatal("no event was repaired: the drop fault did not happen or went unnoticed")
	}
	if st.Gaps != 0 || len(gaps.list()) != 0 {
		t.Fatalf("repairable drops were reported as gaps: %+v", gaps.list())
	}
	t.Logf("repaired %d dropped events of %d", st.Repaired, st.Received+st.Repaired)
}

// TestUnavailableMidStream: the node ends every stream with UNAVAILABLE
// after some events; ingest reconnects where it left off.
func TestUnavailableMidStream(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 19, FIDs: 200, Preload: 20000, Rate: 2000, Duration: time.Second, Faults: devnet.Faults{UnavailableEvery: 777}}, bus.Options{})
	o := e.options(e.srv)
	o.FromID = u64(0)
	st := sumStats(runToEnd(t, e, o))
	if st.Reconnects < 10 || st.Gaps != 0 || st.Duplicates != 0 {
		t.Fatalf("stats %+v: want many reconnects, no gaps, nothing republished", st)
	}
}

// TestStallReconnects: a stream that goes quiet (no events, not even block
// confirmations) is reopened from where it stopped; time spent blocked on
// our own backpressure is not mistaken for a stall.
func TestStallReconnects(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 23, FIDs: 100, Rate: 500, BlockInterval: 40 * time.Millisecond}, bus.Options{})
	o := e.options(e.srv)
	o.FromID = u64(0)
	o.StallTimeout = 400 * time.Millisecond
	in, stop := startIngest(t, o)
	time.Sleep(1500 * time.Millisecond)
	if st := sumStats(in); st.Reconnects != 0 || st.Published == 0 {
		t.Fatalf("before the stall: %+v", st)
	}
	e.sim.Stall(1500 * time.Millisecond)
	time.Sleep(2500 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	st := sumStats(in)
	if st.Reconnects == 0 {
		t.Fatal("the stall was not detected")
	}
	cps := map[uint32]uint64{}
	for _, s := range in.Stats().Shards {
		cps[s.Shard] = s.Checkpoint
		// The stream must have moved on after the stall ended.
		if blockOf(s.Checkpoint)+3 < e.sim.Height(s.Shard)-uint64(time.Second/(40*time.Millisecond)) {
			t.Errorf("shard %d stuck at block %d, node at %d", s.Shard, blockOf(s.Checkpoint), e.sim.Height(s.Shard))
		}
	}
	checkExactlyOnce(t, readStream(t, e.srv), truthAll(t, e, 1, 2), cps)
	t.Logf("stall: %d reconnects", st.Reconnects)
}

// TestRetentionGap: the node expired the events right after a shard's
// checkpoint (and, on the other shard, after the configured from_id); the
// jump is detected, logged, counted and handed to the gap handler.
func TestRetentionGap(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 29, FIDs: 200, Preload: 20000, Duration: time.Nanosecond}, bus.Options{})
	ctx := context.Background()
	before := truthAll(t, e, 1, 2)
	cp := before[1][len(before[1])/3].GetId()
	if err := e.srv.SaveCheckpoint(ctx, 1, cp); err != nil {
		t.Fatal(err)
	}
	e.sim.ExpireEvents(1, before[1][len(before[1])/2].GetId())
	e.sim.ExpireEvents(2, before[2][len(before[2])/2].GetId())
	oldest1, oldest2 := e.sim.OldestEventID(1), e.sim.OldestEventID(2)
	if oldest1 <= cp+1 || oldest2 <= 1 {
		t.Fatalf("expiry did not happen: oldest %d %d", oldest1, oldest2)
	}

	o := e.options(e.srv)
	o.FromID = u64(1)
	gaps := &gapRecorder{}
	o.GapHandler = gaps
	in, stop := startIngest(t, o)
	truth := truthAll(t, e, 1, 2)
	waitCheckpoints(t, in, lastIDs(truth), 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, readStream(t, e.srv), truth, nil)

	want := map[uint32][2]uint64{1: {cp + 1, oldest1}, 2: {1, oldest2}}
	got := gaps.list()
	if len(got) != 2 {
		t.Fatalf("gaps %+v, want one per shard", got)
	}
	for _, g := range got {
		w := want[g.Shard]
		if g.Kind != GapRetention || g.FromID != w[0] || g.ToID != w[1] {
			t.Errorf("shard %d gap %+v, want retention [%d, %d)", g.Shard, g, w[0], w[1])
		}
	}
	for _, s := range in.Stats().Shards {
		if s.Gaps != 1 {
			t.Errorf("shard %d counted %d gaps", s.Shard, s.Gaps)
		}
	}
}

// TestMalformedEvents: bytes that are not a HubEvent, and an event of
// another shard, are reported as unpublishable; ingest goes on.
func TestMalformedEvents(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 31, FIDs: 50, Preload: 2000, Duration: time.Nanosecond}, bus.Options{})
	o := e.options(e.srv)
	o.FromID = u64(0)
	gaps := &gapRecorder{}
	o.GapHandler = gaps
	before := truthAll(t, e, 1, 2)
	in, stop := startIngest(t, o)
	waitCheckpoints(t, in, lastIDs(before), 30*time.Second)

	if err := e.sim.InjectRawEvent(1, []byte{0x08, 0x01, 0x10, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	foreign, _ := proto.Marshal(&pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_ON_CHAIN_EVENT, Id: (e.sim.Height(1)+5)<<seqBits | 1, BlockNumber: e.sim.Height(1) + 5, ShardIndex: 2,
		Body: &pb.HubEvent_MergeOnChainEventBody{MergeOnChainEventBody: &pb.MergeOnChainEventBody{OnChainEvent: &pb.OnChainEvent{Fid: 3}}}})
	if err := e.sim.InjectRawEvent(1, foreign); err != nil {
		t.Fatal(err)
	}
	// The blocks carrying them still complete: their confirmations are
	// published and the checkpoint passes them.
	waitCheckpoints(t, in, map[uint32]uint64{1: blockStart(e.sim.Height(1)), 2: lastIDs(before)[2]}, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := gaps.list()
	if len(got) != 2 {
		t.Fatalf("gaps %+v, want two", got)
	}
	for _, g := range got {
		if g.Shard != 1 || g.Kind != GapUnpublishable || g.Err == nil {
			t.Errorf("gap %+v", g)
		}
	}
	if !strings.Contains(got[1].Err.Error(), "shard 2") {
		t.Errorf("foreign event gap: %v", got[1].Err)
	}
	stream := readStream(t, e.srv)
	if n := len(stream[1]); n != len(before[1])+2 {
		t.Fatalf("shard 1 stream has %d events, want the %d before plus two block confirmations", n, len(before[1]))
	}
}

// failingEvents is the real hub client, except that GetEvents fails: a
// repair can never succeed.
type failingEvents struct {
	pb.HubServiceClient
	calls atomic.Int64
}

func (f *failingEvents) GetEvents(context.Context, *pb.EventsRequest, ...grpc.CallOption) (*pb.EventsResponse, error) {
	f.calls.Add(1)
	return nil, status.Error(codes.Unavailable, "test: GetEvents unavailable")
}

// TestUnrepairableGap: dropped events that GetEvents cannot supply are
// reported as gaps covering exactly the blocks that lost events, and
// ingest continues past them.
func TestUnrepairableGap(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 37, FIDs: 100, Rate: 1000, Duration: time.Second, Faults: devnet.Faults{DropEvery: 101}}, bus.Options{})
	o := e.options(e.srv)
	o.FromID = u64(0)
	hubc := &failingEvents{HubServiceClient: e.hub.Raw()}
	o.Hub = hubc
	gaps := &gapRecorder{}
	o.GapHandler = gaps
	_, truth := ingestAll(t, e, o)
	stream := readStream(t, e.srv)
	got := gaps.list()
	if len(got) == 0 {
		t.Fatal("no gap reported")
	}
	for shard, want := range truth {
		have := map[uint64]bool{}
		for i, s := range stream[shard] {
			if i > 0 && s.ev.ID <= stream[shard][i-1].ev.ID {
				t.Fatalf("shard %d out of order at %d", shard, s.ev.ID)
			}
			have[s.ev.ID] = true
		}
		for _, ev := range want {
			if have[ev.GetId()] {
				continue
			}
			covered := false
			for _, g := range got {
				if g.Shard == shard && g.Kind == GapMissingEvents && ev.GetId() >= g.FromID && ev.GetId() < g.ToID && g.Missing[ev.GetType()] > 0 {
					covered = true
				}
			}
			if !covered {
				t.Fatalf("shard %d: event %d missing from the stream without a gap report", shard, ev.GetId())
			}
		}
	}
	if hubc.calls.Load() < 3 {
		t.Fatalf("GetEvents called %d times: repairs were not attempted", hubc.calls.Load())
	}
	t.Logf("%d gaps reported after %d failed GetEvents calls", len(got), hubc.calls.Load())
}

// skippingHub hides whole blocks (confirmations included) from the first
// `sessions` subscriptions of shard 1, as a node that skipped a slow
// consumer ahead would.
type skippingHub struct {
	pb.HubServiceClient
	from, to uint64 // blocks [from, to)
	sessions int
	mu       sync.Mutex
	opened   int
}

func (h *skippingHub) Subscribe(ctx context.Context, req *pb.SubscribeRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[pb.HubEvent], error) {
	st, err := h.HubServiceClient.Subscribe(ctx, req, opts...)
	if err != nil || req.GetShardIndex() != 1 {
		return st, err
	}
	h.mu.Lock()
	h.opened++
	skip := h.opened <= h.sessions
	h.mu.Unlock()
	if !skip {
		return st, nil
	}
	return &skippingStream{ServerStreamingClient: st, h: h}, nil
}

type skippingStream struct {
	grpc.ServerStreamingClient[pb.HubEvent]
	h *skippingHub
}

func (s *skippingStream) Recv() (*pb.HubEvent, error) {
	for {
		ev, err := s.ServerStreamingClient.Recv()
		if err != nil {
			return nil, err
		}
		if b := blockOf(ev.GetId()); b >= s.h.from && b < s.h.to {
			continue
		}
		return ev, nil
	}
}

// TestSkippedBlocks: a subscription that jumps over whole blocks is
// repaired with GetEvents when the jump is short, replayed from the
// checkpoint when it is long, and reported when replaying does not help.
func TestSkippedBlocks(t *testing.T) {
	tests := []struct {
		name     string
		blocks   uint64
		sessions int
		wantGap  bool
	}{
		{"short jump repaired", 5, 1000, false},
		{"long jump replayed", 100, 1, false},
		{"long jump reported", 100, 1000, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, devnet.Options{Seed: 41, FIDs: 100, Preload: 3000, Duration: time.Nanosecond}, bus.Options{})
			truth := truthAll(t, e, 1, 2)
			first := blockOf(truth[1][0].GetId())
			h := &skippingHub{HubServiceClient: e.hub.Raw(), from: first + 10, to: first + 10 + tt.blocks, sessions: tt.sessions}
			if h.to >= e.sim.Height(1) {
				t.Fatalf("preload too small: height %d", e.sim.Height(1))
			}
			o := e.options(e.srv)
			o.FromID = u64(0)
			o.Hub = h
			o.MaxRepairBlocks = 16
			gaps := &gapRecorder{}
			o.GapHandler = gaps
			in, stop := startIngest(t, o)
			waitCheckpoints(t, in, lastIDs(truth), 30*time.Second)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			stream := readStream(t, e.srv)
			if !tt.wantGap {
				checkExactlyOnce(t, stream, truth, nil)
				if len(gaps.list()) != 0 {
					t.Fatalf("gaps %+v", gaps.list())
				}
				return
			}
			got := gaps.list()
			// The replay from the checkpoint starts right before the
			// skipped blocks, and the node still has them.
			if len(got) != 1 || got[0].Kind != GapSkipped || got[0].FromID <= blockStart(h.from-1) || got[0].FromID > blockStart(h.from) || got[0].ToID != blockStart(h.to) {
				t.Fatalf("gaps %+v, want skipped blocks %d..%d", got, h.from, h.to-1)
			}
			// Everything outside the reported blocks is there, once.
			trimmed := map[uint32][]*pb.HubEvent{2: truth[2]}
			for _, ev := range truth[1] {
				if b := blockOf(ev.GetId()); b < h.from || b >= h.to {
					trimmed[1] = append(trimmed[1], ev)
				}
			}
			checkExactlyOnce(t, stream, trimmed, nil)
		})
	}
}

// TestBackpressure: with tight in-flight bounds, no more than the bound is
// ever unacknowledged, and everything still arrives.
func TestBackpressure(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 43, FIDs: 200, Preload: 20000, Duration: time.Nanosecond}, bus.Options{})
	o := e.options(e.srv)
	o.FromID = u64(0)
	o.MaxInFlight = 16
	o.MaxInFlightBytes = 4 << 10
	in, stop := startIngest(t, o)
	var peakN, peakBytes, violations atomic.Int64
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			st := in.Stats()
			peakN.Store(max(peakN.Load(), int64(st.InFlight)))
			peakBytes.Store(max(peakBytes.Load(), int64(st.InFlightBytes)))
			// One message larger than the byte bound may go alone.
			if st.InFlight > 16 || (st.InFlightBytes > 4<<10 && st.InFlight > 1) {
				violations.Add(1)
			}
		}
	}()
	truth := truthAll(t, e, 1, 2)
	waitCheckpoints(t, in, lastIDs(truth), 60*time.Second)
	close(done)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, readStream(t, e.srv), truth, nil)
	if violations.Load() > 0 {
		t.Fatalf("the in-flight bounds were exceeded %d times (peaks %d messages, %d bytes)", violations.Load(), peakN.Load(), peakBytes.Load())
	}
	if peakN.Load() < 2 {
		t.Fatalf("in flight peaked at %d: nothing was pipelined", peakN.Load())
	}
	t.Logf("in flight peaked at %d messages, %d bytes", peakN.Load(), peakBytes.Load())
}

// TestStreamFull: with the stream at its byte limit the server rejects
// publishes (DiscardNew); ingest holds its checkpoint, backs off and
// retries, and finishes once there is room, without losing anything.
func TestStreamFull(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 47, FIDs: 200, Preload: 10000, Duration: time.Nanosecond}, bus.Options{MaxBytes: 512 << 10})
	o := e.options(e.srv)
	o.FromID = u64(0)
	gaps := &gapRecorder{}
	o.GapHandler = gaps
	in, stop := startIngest(t, o)
	truth := truthAll(t, e, 1, 2)

	deadline := time.Now().Add(20 * time.Second)
	for sumStats(in).Reconnects < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("ingest never hit the full stream: %+v", in.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	held := in.Stats()
	time.Sleep(300 * time.Millisecond)
	for i, s := range in.Stats().Shards {
		if s.Checkpoint != held.Shards[i].Checkpoint {
			t.Fatalf("shard %d checkpoint moved from %d to %d while the stream was full", s.Shard, held.Shards[i].Checkpoint, s.Checkpoint)
		}
	}
	ctx := context.Background()
	info, err := e.srv.StreamInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.MaxBytes = -1
	if _, err := e.srv.JetStream().UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitCheckpoints(t, in, lastIDs(truth), 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(gaps.list()) != 0 {
		t.Fatalf("gaps %+v", gaps.list())
	}
	checkOnceAnyOrder(t, readStream(t, e.srv), truth)
}

// checkOnceAnyOrder is checkExactlyOnce without the order requirement:
// when the full stream rejects a publish, a later, smaller message of the
// same pipeline may still fit and be stored ahead of it.
func checkOnceAnyOrder(t testing.TB, got map[uint32][]streamed, truth map[uint32][]*pb.HubEvent) {
	t.Helper()
	reordered := 0
	for shard, want := range truth {
		seen := map[uint64]bool{}
		for i, s := range got[shard] {
			if seen[s.ev.ID] {
				t.Fatalf("shard %d: event %d stored twice", shard, s.ev.ID)
			}
			seen[s.ev.ID] = true
			if i > 0 && s.ev.ID < got[shard][i-1].ev.ID {
				reordered++
			}
		}
		for _, ev := range want {
			if !seen[ev.GetId()] {
				t.Fatalf("shard %d: event %d missing", shard, ev.GetId())
			}
		}
		if len(seen) != len(want) {
			t.Fatalf("shard %d: %d events stored, node has %d", shard, len(seen), len(want))
		}
	}
	t.Logf("%d events stored out of order after rejected publishes", reordered)
}

// TestShutdownMidReplay: cancelling during a large replay returns nil
// promptly, having waited for in-flight acks and saved a checkpoint that
// covers exactly what is in the stream.
func TestShutdownMidReplay(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 53, FIDs: 300, Preload: 60000, Duration: time.Nanosecond}, bus.Options{})
	o := e.options(e.srv)
	o.FromID = u64(0)
	o.ShutdownTimeout = 5 * time.Second
	in, stop := startIngest(t, o)
	for sumStats(in).Published < 10000 {
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	took := time.Since(start)
	if took > 2*time.Second {
		t.Fatalf("shutdown took %s", took)
	}
	cps := map[uint32]uint64{}
	for _, s := range in.Stats().Shards {
		saved, ok, err := e.srv.LoadCheckpoint(context.Background(), s.Shard)
		if err != nil || !ok || saved != s.Checkpoint {
			t.Fatalf("shard %d: saved %d %v %v, acknowledged %d", s.Shard, saved, ok, err, s.Checkpoint)
		}
		cps[s.Shard] = s.Checkpoint
	}
	stream := readStream(t, e.srv)
	checkExactlyOnce(t, stream, truthAll(t, e, 1, 2), cps)
	if in.Stats().InFlight != 0 {
		t.Fatal("publishes left in flight")
	}
	t.Logf("shutdown after %d events took %s", len(stream[1])+len(stream[2]), took)
}

// TestLiveStartAndShardSelection: with no checkpoint and no from_id a
// shard starts live; only the configured shards are followed.
func TestLiveStartAndShardSelection(t *testing.T) {
	e := newEnv(t, devnet.Options{Seed: 59, FIDs: 200, Preload: 5000, Rate: 2000, Duration: 1500 * time.Millisecond}, bus.Options{})
	o := e.options(e.srv)
	o.Shards = []uint32{2}
	in, stop := startIngest(t, o)
	e.waitWorkload(t, 1, 2)
	truth := truthAll(t, e, 2)
	waitCheckpoints(t, in, lastIDs(truth), 60*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	stream := readStream(t, e.srv)
	if len(stream[1]) != 0 {
		t.Fatalf("shard 1 is not configured but has %d events", len(stream[1]))
	}
	first := stream[2][0].ev.ID
	var live []*pb.HubEvent
	for _, ev := range truth[2] {
		if ev.GetId() >= first {
			live = append(live, ev)
		}
	}
	if len(live) == len(truth[2]) {
		t.Fatal("the live start replayed the whole history")
	}
	checkExactlyOnce(t, stream, map[uint32][]*pb.HubEvent{2: live}, nil)
}

func TestNewValidates(t *testing.T) {
	e := newEnv(t, devnet.Options{}, bus.Options{})
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"no hub", Options{Bus: e.srv}, "hub client"},
		{"no bus", Options{Hub: e.hub.Raw()}, "bus"},
		{"shard 0", Options{Hub: e.hub.Raw(), Bus: e.srv, Shards: []uint32{0, 1}}, "shard 0"},
	}
	for _, tt := range tests {
		if _, err := New(tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	// A node that reports no shards is an error, not a silent no-op.
	in, err := New(Options{Hub: noShards{e.hub.Raw()}, Bus: e.srv})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := in.Run(ctx); err == nil || !strings.Contains(err.Error(), "no data shards") {
		t.Fatalf("run against a node without shards: %v", err)
	}
}

type noShards struct{ pb.HubServiceClient }

func (noShards) GetInfo(context.Context, *pb.GetInfoRequest, ...grpc.CallOption) (*pb.GetInfoResponse, error) {
	return &pb.GetInfoResponse{ShardInfos: []*pb.ShardInfo{{ShardId: 0}}}, nil
}

// TestDroppedEventInLastBlock: an event missing from the last block, with
// no later block to reveal it, is repaired once the quiet stream trips the
// stall watchdog.
func TestDroppedEventInLastBlock(t *testing.T) {
	e := newEnv(t, devnet.Options{}, bus.Options{})
	o := e.options(e.srv)
	o.FromID = u64(0)
	o.StallTimeout = 300 * time.Millisecond
	o.Shards = []uint32{1}
	in, stop := startIngest(t, o)
	submit := func(n int, base uint32) {
		var evs []*pb.OnChainEvent
		for i := range n {
			evs = append(evs, &pb.OnChainEvent{Type: pb.OnChainEventType_EVENT_TYPE_STORAGE_RENT, Fid: 1, BlockNumber: base + uint32(i), LogIndex: 1,
				TransactionHash: []byte{byte(base), byte(i)}, Body: &pb.OnChainEvent_StorageRentEventBody{StorageRentEventBody: &pb.StorageRentEventBody{Units: 1}}})
		}
		if err := e.sim.SubmitOnChainEvents(evs...); err != nil {
			t.Fatal(err)
		}
	}
	submit(3, 10)
	waitCheckpoints(t, in, map[uint32]uint64{1: lastIDs(truthAll(t, e, 1))[1]}, 10*time.Second)
	e.sim.DropNext(1, 1)
	submit(3, 20)
	truth := truthAll(t, e, 1)
	waitCheckpoints(t, in, lastIDs(truth), 10*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, readStream(t, e.srv), truth, nil)
	if st := in.Stats().Shards[0]; st.Repaired != 1 || st.Gaps != 0 || st.Reconnects == 0 {
		t.Fatalf("shard 1 stats %+v: want one repaired event after a stall reconnect", st)
	}
}
