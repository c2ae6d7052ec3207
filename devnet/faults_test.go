package devnet_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/waypointhq/waypoint/devnet"
	pb "github.com/waypointhq/waypoint/proto"
)

// TestDroppedEventIsDetectable: a live stream misses the event, the block's
// confirmation still counts it, and the node still serves it.
func TestDroppedEventIsDetectable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts devnet.Options
		drop func(*devnet.Sim)
	}{
		{name: "DropNext", drop: func(sim *devnet.Sim) { sim.DropNext(1, 1) }},
		{name: "Faults.DropEvery", opts: devnet.Options{Faults: devnet.Faults{DropEvery: 3}}, drop: func(*devnet.Sim) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim, c := dial(t, tc.opts)
			s := devnet.NewSigner(1)
			shard := uint32(1)
			es := openStream(t, c, &pb.SubscribeRequest{EventTypes: allTypes, ShardIndex: &shard})
			waitLive(t, sim, es, fidA)
			tc.drop(sim)
			submit(t, sim, s.CastAdd(fidA, t0, "a"), s.CastAdd(fidA, t0+1, "b"), s.CastAdd(fidA, t0+2, "c"))
			evs := es.drain(300 * time.Millisecond)
			if len(evs) != 3 {
				t.Fatalf("live stream got %d events, want 3 of 4", len(evs))
			}
			conf := evs[0].GetBlockConfirmedBody()
			if conf.GetTotalEvents() != 4 || conf.EventCountsByType[int32(pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE)] != 3 {
				t.Fatalf("confirmation %v", conf)
			}
			if got := uint64(len(evs)); got == conf.TotalEvents {
				t.Fatal("gap not detectable from the counts")
			}
			// Repair: the events are still stored.
			block := evs[0].BlockNumber
			resp, err := c.GetEvents(context.Background(), &pb.EventsRequest{
				ShardIndex: &shard, StartId: devnet.EventID(block, 0), StopId: u64(devnet.EventID(block+1, 0))})
			if err != nil || uint64(len(resp.Events)) != conf.TotalEvents {
				t.Fatalf("GetEvents of the block: %d events, %v", len(resp.GetEvents()), err)
			}
			if got := replay(t, c, 1, devnet.EventID(block, 0)); len(got) != 4 {
				t.Errorf("replay of the block: %d events, want 4", len(got))
			}
		})
	}
}

func TestUnavailableEveryN(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{})
	s := devnet.NewSigner(1)
	for i := range 6 {
		submit(t, sim, s.CastAdd(fidA, t0+uint32(i), "cast"))
	}
	want := replay(t, c, 1, 0) // 12 events
	sim.SetUnavailableEvery(5)
	var got []*pb.HubEvent
	from := uint64(0)
	shard := uint32(1)
	for resets := 0; len(got) < len(want); resets++ {
		if resets > 5 {
			t.Fatalf("no progress after %d resets", resets)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		stream, err := c.Subscribe(ctx, &pb.SubscribeRequest{EventTypes: allTypes, FromId: &from, ShardIndex: &shard})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			ev, err := stream.Recv()
			if err != nil {
				if status.Code(err) != codes.Unavailable || n != 5 {
					t.Fatalf("stream ended after %d events with %v, want UNAVAILABLE after 5", n, err)
				}
				break
			}
			got = append(got, ev)
			from = ev.Id + 1
			n++
			if len(got) == len(want) {
				break
			}
		}
		cancel()
	}
	for i := range want {
		if got[i].Id != want[i].Id {
			t.Fatalf("resumed stream: event %d has id %d, want %d", i, got[i].Id, want[i].Id)
		}
	}
	sim.SetUnavailableEvery(0)
	if evs := replay(t, c, 1, 0); len(evs) != len(want) {
		t.Errorf("with the fault off: %d events", len(evs))
	}
}

func TestStall(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{})
	submit(t, sim, devnet.NewSigner(1).CastAdd(fidA, t0, "x"))
	const stall = 500 * time.Millisecond
	sim.Stall(stall)
	start := time.Now()
	shard, from := uint32(1), uint64(0)
	es := openStream(t, c, &pb.SubscribeRequest{EventTypes: allTypes, FromId: &from, ShardIndex: &shard})
	evs := es.recvN(t, 2, 5*time.Second)
	if waited := time.Since(start); waited < stall-50*time.Millisecond {
		t.Errorf("first events after %v, during a %v stall", waited, stall)
	}
	if len(evs) != 2 {
		t.Errorf("after the stall: %d events", len(evs))
	}
}

func TestFaultOptions(t *testing.T) {
	t.Parallel()
	t.Run("UnavailableEvery", func(t *testing.T) {
		t.Parallel()
		sim, c := dial(t, devnet.Options{Faults: devnet.Faults{UnavailableEvery: 3}})
		for i := range 3 {
			submit(t, sim, devnet.NewSigner(1).CastAdd(fidA, t0+uint32(i), "cast"))
		}
		shard, from := uint32(1), uint64(0)
		es := openStream(t, c, &pb.SubscribeRequest{EventTypes: allTypes, FromId: &from, ShardIndex: &shard})
		if evs := es.drain(300 * time.Millisecond); len(evs) != 3 {
			t.Errorf("got %d events before the reset, want 3", len(evs))
		}
		wantCode(t, es.err(), codes.Unavailable, "stream after 3 events")
	})
	t.Run("StallEvery", func(t *testing.T) {
		t.Parallel()
		sim, c := dial(t, devnet.Options{Faults: devnet.Faults{StallEvery: 50 * time.Millisecond, StallFor: time.Hour}})
		submit(t, sim, devnet.NewSigner(1).CastAdd(fidA, t0, "cast"))
		time.Sleep(200 * time.Millisecond) // the first stall has begun
		shard, from := uint32(1), uint64(0)
		es := openStream(t, c, &pb.SubscribeRequest{EventTypes: allTypes, FromId: &from, ShardIndex: &shard})
		if evs := es.drain(300 * time.Millisecond); len(evs) != 0 {
			t.Errorf("stalled stream delivered %d events", len(evs))
		}
	})
}
