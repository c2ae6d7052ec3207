package devnet_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/waypointhq/waypoint/devnet"
	pb "github.com/waypointhq/waypoint/proto"
)

func TestMessagePagination(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{})
	s := devnet.NewSigner(1)
	var casts []*pb.Message
	for i := range 4 {
		// Two casts share each timestamp: the hash orders them.
		casts = append(casts, s.CastAdd(fidA, t0+uint32(i/2), string(rune('a'+i))))
	}
	submit(t, sim, casts...)
	byOrder := append([]*pb.Message(nil), casts...)
	for i := 0; i < 4; i += 2 {
		if bytes.Compare(byOrder[i].Hash, byOrder[i+1].Hash) > 0 {
			byOrder[i], byOrder[i+1] = byOrder[i+1], byOrder[i]
		}
	}
	ctx := context.Background()

	for _, reverse := range []bool{false, true} {
		want := append([]*pb.Message(nil), byOrder...)
		if reverse {
			for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
				want[i], want[j] = want[j], want[i]
			}
		}
		var got []*pb.Message
		var token []byte
		for page := 0; page < 3; page++ {
			resp, err := c.GetCastsByFid(ctx, &pb.FidRequest{Fid: fidA, PageSize: u32(2), PageToken: token, Reverse: &reverse})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, resp.Messages...)
			switch page {
			case 0, 1:
				// A full page has a token, even the last one.
				if len(resp.Messages) != 2 || len(resp.NextPageToken) == 0 {
					t.Fatalf("reverse=%v page %d: %d messages, token %x", reverse, page, len(resp.Messages), resp.NextPageToken)
				}
			case 2:
				if len(resp.Messages) != 0 || len(resp.NextPageToken) != 0 {
					t.Fatalf("reverse=%v page after the last: %d messages, token %x", reverse, len(resp.Messages), resp.NextPageToken)
				}
			}
			token = resp.NextPageToken
		}
		for i := range want {
			if !bytes.Equal(got[i].Hash, want[i].Hash) {
				t.Errorf("reverse=%v: message %d is %s, want %s", reverse, i, hexOf(got[i]), hexOf(want[i]))
			}
		}
	}

	// A short page has no token.
	resp, err := c.GetCastsByFid(ctx, &pb.FidRequest{Fid: fidA, PageSize: u32(3)})
	if err != nil || len(resp.Messages) != 3 || len(resp.NextPageToken) == 0 {
		t.Fatalf("first of two pages: %v %v", resp, err)
	}
	resp, err = c.GetCastsByFid(ctx, &pb.FidRequest{Fid: fidA, PageSize: u32(3), PageToken: resp.NextPageToken})
	if err != nil || len(resp.Messages) != 1 || len(resp.NextPageToken) != 0 || !bytes.Equal(resp.Messages[0].Hash, byOrder[3].Hash) {
		t.Fatalf("short last page: %v %v", resp, err)
	}

	// Timestamp filters are inclusive.
	all, err := c.GetAllCastMessagesByFid(ctx, &pb.FidTimestampRequest{Fid: fidA, StartTimestamp: u64(t0 + 1), StopTimestamp: u64(t0 + 1)})
	if err != nil || len(all.Messages) != 2 {
		t.Errorf("casts at t0+1: %v %v", all, err)
	}

	_, err = c.GetCastsByFid(ctx, &pb.FidRequest{Fid: fidA, PageToken: []byte("not a token")})
	wantCode(t, err, codes.InvalidArgument, "GetCastsByFid with a bad token")
	got, err := c.GetCast(ctx, &pb.CastId{Fid: fidA, Hash: casts[0].Hash})
	if err != nil || !bytes.Equal(got.Hash, casts[0].Hash) {
		t.Errorf("GetCast: %v %v", got, err)
	}
	_, err = c.GetCast(ctx, &pb.CastId{Fid: fidA, Hash: make([]byte, 20)})
	wantCode(t, err, codes.NotFound, "GetCast of an unknown hash")
}

func TestDefaultPageSize(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{Limits: devnet.Limits{Reactions: 20000}})
	s := devnet.NewSigner(1)
	var rs []*pb.Message
	for i := range 10001 {
		h := make([]byte, 20)
		h[0], h[1] = byte(i>>8), byte(i)
		rs = append(rs, s.Reaction(fidA, t0, true, pb.ReactionType_REACTION_TYPE_LIKE, &pb.CastId{Fid: fidB, Hash: h}))
	}
	submit(t, sim, rs...)
	resp, err := c.GetReactionsByFid(context.Background(), &pb.ReactionsByFidRequest{Fid: fidA})
	if err != nil || len(resp.Messages) != 10000 || len(resp.NextPageToken) == 0 {
		t.Fatalf("default page: %d messages, token %x, %v", len(resp.GetMessages()), resp.GetNextPageToken(), err)
	}
	next := resp.NextPageToken
	resp, err = c.GetReactionsByFid(context.Background(), &pb.ReactionsByFidRequest{Fid: fidA, PageSize: u32(20000)})
	if err != nil || len(resp.Messages) != devnet.DefaultMaxPageSize || len(resp.NextPageToken) == 0 {
		t.Fatalf("page_size 20000: %d messages, token %x, %v; want the %d-message cap", len(resp.GetMessages()), resp.GetNextPageToken(), err, devnet.DefaultMaxPageSize)
	}
	resp, err = c.GetReactionsByFid(context.Background(), &pb.ReactionsByFidRequest{Fid: fidA, PageToken: next})
	if err != nil || len(resp.Messages) != 1 {
		t.Fatalf("second page: %d messages, %v", len(resp.GetMessages()), err)
	}
}

func TestFidsAndOnChainReads(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{})
	ctx := context.Background()
	s := devnet.NewSigner(1)
	var onShard1 []uint64
	for fid := uint64(1); fid <= 12; fid++ {
		if err := sim.Register(fid, s, 1); err != nil {
			t.Fatal(err)
		}
		if sim.ShardFor(fid) == 1 {
			onShard1 = append(onShard1, fid)
		}
	}
	if err := sim.Register(1, s, 1); err != nil {
		t.Fatalf("a second registration batch for fid 1: %v", err)
	}
	var got []uint64
	var token []byte
	for {
		resp, err := c.GetFids(ctx, &pb.FidsRequest{ShardId: 1, PageSize: u32(2), PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, resp.Fids...)
		if token = resp.NextPageToken; len(token) == 0 {
			break
		}
	}
	if len(got) != len(onShard1) {
		t.Fatalf("GetFids shard 1: %v, want %v", got, onShard1)
	}
	for i := range got {
		if got[i] != onShard1[i] {
			t.Fatalf("GetFids shard 1: %v, want %v", got, onShard1)
		}
	}
	_, err := c.GetFids(ctx, &pb.FidsRequest{ShardId: 0})
	wantCode(t, err, codes.InvalidArgument, "GetFids on shard 0")
	_, err = c.GetFids(ctx, &pb.FidsRequest{ShardId: 1, PageToken: []byte{1, 2}})
	wantCode(t, err, codes.InvalidArgument, "GetFids with a bad token")

	// GetOnChainEvents ignores paging and returns every event of the type.
	resp, err := c.GetOnChainEvents(ctx, &pb.OnChainEventRequest{Fid: 1, EventType: pb.OnChainEventType_EVENT_TYPE_SIGNER, PageSize: u32(1)})
	if err != nil || len(resp.Events) != 2 || len(resp.NextPageToken) != 0 {
		t.Errorf("GetOnChainEvents: %v %v", resp, err)
	}
	if !bytes.Equal(resp.GetEvents()[0].GetSignerEventBody().GetKey(), s.PublicKey()) {
		t.Errorf("signer event key %x, want %x", resp.GetEvents()[0].GetSignerEventBody().GetKey(), s.PublicKey())
	}
	reg, err := c.GetIdRegistryOnChainEvent(ctx, &pb.FidRequest{Fid: 3})
	if err != nil || reg.Fid != 3 || reg.Type != pb.OnChainEventType_EVENT_TYPE_ID_REGISTER {
		t.Errorf("GetIdRegistryOnChainEvent: %v %v", reg, err)
	}
	_, err = c.GetIdRegistryOnChainEvent(ctx, &pb.FidRequest{Fid: 999})
	wantCode(t, err, codes.NotFound, "GetIdRegistryOnChainEvent of an unregistered fid")
	// On-chain events are on the fid's shard only.
	for _, ev := range replay(t, c, 2, 0) {
		if b := ev.GetMergeOnChainEventBody(); b != nil && sim.ShardFor(b.OnChainEvent.Fid) != 2 {
			t.Errorf("on-chain event of fid %d on shard 2", b.OnChainEvent.Fid)
		}
	}
	if err := sim.SubmitOnChainEvents(sim.State().OnChainEvents[pb.OnChainEventType_EVENT_TYPE_ID_REGISTER][3][0]); mergeCode(err) != "bad_request.duplicate" {
		t.Errorf("resubmitting an on-chain event: %v", err)
	}
}

// TestFilteredPagination pages through a store whose adds and removes
// interleave, with filters that skip some of them, in both directions:
// every kept message comes exactly once, in order, and the pages are full
// until the last.
func TestFilteredPagination(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{})
	s := devnet.NewSigner(1)
	var adds, stored []*pb.Message // stored: the store's content, ascending
	for i := range 30 {
		cast := s.CastAdd(fidA, t0+uint32(2*i), fmt.Sprint("cast ", i))
		submit(t, sim, cast)
		if i%3 == 0 {
			// The remove takes the add's place, between the later adds.
			rm := s.CastRemove(fidA, t0+uint32(2*i+1), cast.Hash)
			submit(t, sim, rm)
			stored = append(stored, rm)
			continue
		}
		adds = append(adds, cast)
		stored = append(stored, cast)
	}
	ctx := context.Background()
	type page func(token []byte, reverse bool) (*pb.MessagesResponse, error)
	for _, tc := range []struct {
		name string
		want []*pb.Message
		page page
	}{
		{"adds only", adds, func(token []byte, reverse bool) (*pb.MessagesResponse, error) {
			return c.GetCastsByFid(ctx, &pb.FidRequest{Fid: fidA, PageSize: u32(4), PageToken: token, Reverse: &reverse})
		}},
		{"time range", stored[5:25], func(token []byte, reverse bool) (*pb.MessagesResponse, error) {
			return c.GetAllCastMessagesByFid(ctx, &pb.FidTimestampRequest{Fid: fidA, PageSize: u32(4), PageToken: token, Reverse: &reverse,
				StartTimestamp: u64(uint64(stored[5].Data.Timestamp)), StopTimestamp: u64(uint64(stored[24].Data.Timestamp))})
		}},
	} {
		for _, reverse := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s reverse=%v", tc.name, reverse), func(t *testing.T) {
				want := append([]*pb.Message(nil), tc.want...)
				if reverse {
					slices.Reverse(want)
				}
				var got []*pb.Message
				var token []byte
				for {
					resp, err := tc.page(token, reverse)
					if err != nil {
						t.Fatal(err)
					}
					if len(resp.NextPageToken) > 0 && len(resp.Messages) != 4 {
						t.Fatalf("page %d has %d messages and a token", len(got)/4, len(resp.Messages))
					}
					got = append(got, resp.Messages...)
					if token = resp.NextPageToken; len(token) == 0 || len(got) > len(want) {
						break
					}
				}
				if len(got) != len(want) {
					t.Fatalf("got %d messages, want %d", len(got), len(want))
				}
				for i := range want {
					if !bytes.Equal(got[i].Hash, want[i].Hash) {
						t.Errorf("message %d is %s, want %s", i, hexOf(got[i]), hexOf(want[i]))
					}
				}
			})
		}
	}
}
