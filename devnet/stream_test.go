package devnet_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

func TestSubscribeFromIDIsInclusive(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{})
	s := devnet.NewSigner(1)
	for i := range 5 {
		submit(t, sim, s.CastAdd(fidA, t0+uint32(i), "cast"))
	}
	all := replay(t, c, 1, 0)
	if len(all) != 10 {
		t.Fatalf("replayed %d events, want 10 (5 blocks of confirmation + cast)", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].Id <= all[i-1].Id {
			t.Fatalf("ids not increasing: %d then %d", all[i-1].Id, all[i].Id)
		}
	}
	from := all[3].Id
	got := replay(t, c, 1, from)
	if len(got) != len(all)-3 || got[0].Id != from {
		t.Fatalf("from_id %d: got %d events starting at %d", from, len(got), got[0].Id)
	}
	// Between two ids: starts at the next one.
	got = replay(t, c, 1, from+1)
	if got[0].Id != all[4].Id {
		t.Errorf("from_id %d: first id %d, want %d", from+1, got[0].Id, all[4].Id)
	}
}

func TestSubscribeLiveOnlyWithoutFromID(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{})
	s := devnet.NewSigner(1)
	old := s.CastAdd(fidA, t0, "before")
	submit(t, sim, old)
	shard := uint32(1)
	es := openStream(t, c, &pb.SubscribeRequest{EventTypes: allTypes, ShardIndex: &shard})
	waitLive(t, sim, es, fidA)
	live := s.CastAdd(fidA, t0+1, "after")
	submit(t, sim, live)
	evs := es.recvN(t, 2, 5*time.Second)
	if evs[0].Type != pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED {
		t.Errorf("first live event is %v, want the block confirmation", evs[0].Type)
	}
	if m := evs[1].GetMergeMessageBody().GetMessage(); !bytes.Equal(m.GetHash(), live.Hash) {
		t.Errorf("second live event is %v, want the new cast", evs[1])
	}
	// Nothing from before the subscription came through: the first event
	// the stream delivered belongs to a marker, never the old cast.
	for _, ev := range es.drain(100 * time.Millisecond) {
		if bytes.Equal(ev.GetMergeMessageBody().GetMessage().GetHash(), old.Hash) {
			t.Error("live stream replayed an old event")
		}
	}
}

func TestSubscribeEventTypes(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{})
	s := devnet.NewSigner(1)
	submit(t, sim, s.CastAdd(fidA, t0, "a"), s.CastAdd(fidA, t0+1, "b"))
	shard, from := uint32(1), uint64(0)

	t.Run("empty list delivers nothing", func(t *testing.T) {
		es := openStream(t, c, &pb.SubscribeRequest{FromId: &from, ShardIndex: &shard})
		if evs := es.drain(300 * time.Millisecond); len(evs) != 0 {
			t.Errorf("got %d events with no event types", len(evs))
		}
		if err := es.err(); err != nil {
			t.Errorf("stream with no event types ended: %v", err)
		}
	})
	t.Run("filter", func(t *testing.T) {
		es := openStream(t, c, &pb.SubscribeRequest{
			EventTypes: []pb.HubEventType{pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED}, FromId: &from, ShardIndex: &shard})
		evs := es.drain(300 * time.Millisecond)
		if len(evs) != 1 {
			t.Fatalf("got %d block confirmations, want 1", len(evs))
		}
		for _, ev := range evs {
			if ev.Type != pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED {
				t.Errorf("filtered stream delivered %v", ev.Type)
			}
		}
	})
	t.Run("all shards when shard_index is absent", func(t *testing.T) {
		submit(t, sim, s.CastAdd(fidB, t0, "other shard"))
		es := openStream(t, c, &pb.SubscribeRequest{EventTypes: allTypes, FromId: &from})
		seen := map[uint32]int{}
		for _, ev := range es.drain(300 * time.Millisecond) {
			seen[ev.ShardIndex]++
		}
		if seen[1] != 3 || seen[2] != 2 {
			t.Errorf("events per shard %v, want 1:3 2:2", seen)
		}
	})
}

func TestSubscribeBadShard(t *testing.T) {
	t.Parallel()
	_, c := dial(t, devnet.Options{Shards: 2})
	for _, shard := range []uint32{0, 3} {
		es := openStream(t, c, &pb.SubscribeRequest{EventTypes: allTypes, ShardIndex: &shard})
		if ev := es.next(5 * time.Second); ev != nil {
			t.Fatalf("shard %d delivered %v", shard, ev)
		}
		wantCode(t, es.err(), codes.InvalidArgument, "subscribe to a shard that is not a data shard")
	}
}

// TestBlocks checks block structure on a generated workload: ids, block
// numbers, BLOCK_CONFIRMED as seq 0 and its counts.
func TestBlocks(t *testing.T) {
	t.Parallel()
	_, c := dial(t, devnet.Options{Seed: 7, FIDs: 20, Preload: 3000, BlockInterval: time.Second, Rate: 200})
	for shard := uint32(1); shard <= 2; shard++ {
		evs := replay(t, c, shard, 0)
		if len(evs) < 1000 {
			t.Fatalf("shard %d: %d events", shard, len(evs))
		}
		var conf *pb.BlockConfirmedBody
		var counted map[int32]uint64
		var n, maxSeq uint64
		check := func() {
			if conf == nil {
				return
			}
			if conf.TotalEvents != n {
				t.Errorf("block %d: total_events %d, stream has %d", conf.BlockNumber, conf.TotalEvents, n)
			}
			for typ, want := range conf.EventCountsByType {
				if counted[typ] != want {
					t.Errorf("block %d: %d events of type %d, counts say %d", conf.BlockNumber, counted[typ], typ, want)
				}
			}
			if conf.MaxBlockEventSeqnum != maxSeq {
				t.Errorf("block %d: max seq %d, stream has %d", conf.BlockNumber, conf.MaxBlockEventSeqnum, maxSeq)
			}
		}
		for _, ev := range evs {
			block, seq := devnet.SplitEventID(ev.Id)
			if ev.BlockNumber != block || ev.ShardIndex != shard || ev.Id != block<<14|seq {
				t.Fatalf("event %d: block %d shard %d", ev.Id, ev.BlockNumber, ev.ShardIndex)
			}
			if b := ev.GetBlockConfirmedBody(); b != nil {
				check()
				if seq != 0 || b.BlockNumber != block || b.ShardIndex != shard || len(b.BlockHash) != 32 || b.Timestamp != ev.Timestamp {
					t.Fatalf("block confirmation %d: seq %d body %v", ev.Id, seq, b)
				}
				if conf != nil && b.BlockNumber != conf.BlockNumber+1 {
					t.Fatalf("block %d follows block %d", b.BlockNumber, conf.BlockNumber)
				}
				conf, counted, n, maxSeq = b, map[int32]uint64{}, 0, 0
			} else if conf == nil || block != conf.BlockNumber || seq == 0 {
				t.Fatalf("event %d (seq %d) outside its block", ev.Id, seq)
			}
			counted[int32(ev.Type)]++
			n++
			maxSeq = seq
		}
		check()
	}
}

func TestRetentionStartsAtOldestKept(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{Seed: 3, FIDs: 5, Preload: 2000, BlockInterval: time.Second, Rate: 20, Retention: 10 * time.Second})
	oldest := sim.OldestEventID(1)
	if block, _ := devnet.SplitEventID(oldest); block < 20 {
		t.Fatalf("oldest kept event %d is in block %d: nothing expired", oldest, block)
	}
	evs := replay(t, c, 1, 1)
	if len(evs) == 0 || evs[0].Id < oldest {
		t.Fatalf("replay from 1 started at %v, want >= %d", evs[0].GetId(), oldest)
	}
	if evs[0].Type != pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED {
		t.Errorf("retention cut inside a block: first event %v", evs[0].Type)
	}
	if blocks := len(evs) - len(withoutBlocks(evs)); blocks > 13 {
		t.Errorf("%d blocks kept with 10 s retention and 1 s blocks", blocks)
	}
	_, err := c.GetEvent(context.Background(), &pb.EventRequest{Id: 1 << 14, ShardIndex: 1})
	wantCode(t, err, codes.NotFound, "GetEvent of an expired event")

	n := sim.ExpireEvents(1, evs[len(evs)/2].Id)
	if n == 0 {
		t.Fatal("ExpireEvents dropped nothing")
	}
	// Stored messages share bytes with their events; expiring the events
	// must leave them intact.
	sim.ExpireEvents(2, 1<<62)
	checked := 0
	for _, byFid := range sim.State().Messages {
		for _, ms := range byFid {
			for _, m := range ms {
				if err := message.Validate(m, message.CheckFull, pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET); err != nil {
					t.Fatalf("stored message after expiry: %v", err)
				}
				checked++
			}
		}
	}
	if checked < 100 {
		t.Errorf("only %d stored messages checked", checked)
	}
	// Live blocks keep coming (and expiring), so the start can only move up.
	if got := replay(t, c, 1, 0); got[0].Id < evs[len(evs)/2].Id {
		t.Errorf("after ExpireEvents replay starts at %d, want >= %d", got[0].Id, evs[len(evs)/2].Id)
	}
}

func TestGetEvents(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{})
	s := devnet.NewSigner(1)
	for i := range 3 {
		submit(t, sim, s.CastAdd(fidA, t0+uint32(i), "cast"))
	}
	all := replay(t, c, 1, 0) // 6 events
	ctx := context.Background()
	shard := uint32(1)

	// Exactly full pages: the last one still has a token, the next is empty.
	var got []*pb.HubEvent
	var token []byte
	for page := 0; ; page++ {
		resp, err := c.GetEvents(ctx, &pb.EventsRequest{ShardIndex: &shard, PageSize: u32(3), PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.Events...)
		if page < 2 && len(resp.NextPageToken) == 0 {
			t.Fatalf("page %d (%d events) has no token", page, len(resp.Events))
		}
		if page == 2 {
			if len(resp.Events) != 0 || len(resp.NextPageToken) != 0 {
				t.Fatalf("page after the last: %d events, token %x", len(resp.Events), resp.NextPageToken)
			}
			break
		}
		token = resp.NextPageToken
	}
	if len(got) != len(all) {
		t.Fatalf("paged %d events, want %d", len(got), len(all))
	}
	for i := range got {
		if got[i].Id != all[i].Id {
			t.Errorf("event %d: id %d, want %d", i, got[i].Id, all[i].Id)
		}
	}
	// start_id inclusive, stop_id exclusive, reverse.
	resp, err := c.GetEvents(ctx, &pb.EventsRequest{ShardIndex: &shard, StartId: all[1].Id, StopId: u64(all[4].Id), Reverse: yes()})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Events) != 3 || resp.Events[0].Id != all[3].Id || resp.Events[2].Id != all[1].Id {
		t.Errorf("reverse range: %v", resp.Events)
	}
	// All shards at once.
	submit(t, sim, s.CastAdd(fidB, t0, "b"))
	resp, err = c.GetEvents(ctx, &pb.EventsRequest{PageSize: u32(100)})
	if err != nil || len(resp.Events) != len(all)+2 || len(resp.NextPageToken) != 0 {
		t.Errorf("all shards: %d events, token %x, %v", len(resp.GetEvents()), resp.GetNextPageToken(), err)
	}

	_, err = c.GetEvents(ctx, &pb.EventsRequest{ShardIndex: &shard, PageToken: []byte("garbage")})
	wantCode(t, err, codes.InvalidArgument, "GetEvents with a bad token")
	_, err = c.GetEvents(ctx, &pb.EventsRequest{ShardIndex: u32(0)})
	wantCode(t, err, codes.InvalidArgument, "GetEvents on shard 0")

	ev, err := c.GetEvent(ctx, &pb.EventRequest{Id: all[1].Id, ShardIndex: 1})
	if err != nil || ev.Id != all[1].Id || ev.GetMergeMessageBody() == nil {
		t.Errorf("GetEvent: %v %v", ev, err)
	}
	_, err = c.GetEvent(ctx, &pb.EventRequest{Id: all[1].Id + 100, ShardIndex: 1})
	wantCode(t, err, codes.NotFound, "GetEvent of a missing id")
	_, err = c.GetEvent(ctx, &pb.EventRequest{Id: all[1].Id, ShardIndex: 0})
	wantCode(t, err, codes.InvalidArgument, "GetEvent on shard 0")
}

func TestInjectRawEvent(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{})
	garbage := []byte{0xff, 0xff, 0xff}
	if err := sim.InjectRawEvent(1, garbage); err != nil {
		t.Fatal(err)
	}
	if err := sim.InjectRawEvent(0, garbage); err == nil {
		t.Error("inject into shard 0 succeeded")
	}
	shard, from := uint32(1), uint64(0)
	es := openStream(t, c, &pb.SubscribeRequest{EventTypes: allTypes, FromId: &from, ShardIndex: &shard})
	first := es.next(5 * time.Second)
	if first.GetBlockConfirmedBody().GetTotalEvents() != 2 {
		t.Fatalf("block confirmation: %v (stream: %v)", first, es.err())
	}
	if ev := es.next(5 * time.Second); ev != nil {
		t.Fatalf("injected garbage decoded as %v", ev)
	}
	wantCode(t, es.err(), codes.Internal, "receiving injected garbage")
}
