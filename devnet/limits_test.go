package devnet_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

func TestServingMaxRequestBytes(t *testing.T) {
	t.Parallel()
	_, c := dial(t, devnet.Options{Serving: devnet.ServingLimits{MaxRequestBytes: 1024}})
	ctx := ctxTimeout(t, 10*time.Second)
	for _, tc := range []struct {
		name  string
		token []byte
		want  codes.Code
	}{
		{"under the limit", nil, codes.OK},
		// Rejected for its size before the token is even looked at.
		{"over the limit", bytes.Repeat([]byte{1}, 2048), codes.ResourceExhausted},
		{"bad token under the limit", []byte{1}, codes.InvalidArgument},
	} {
		_, err := c.GetFids(ctx, &pb.FidsRequest{ShardId: 1, PageToken: tc.token})
		wantCode(t, err, tc.want, tc.name)
	}
}

// TestServingMaxPageSize checks that every paged read serves at most
// MaxPageSize items however many are asked for, with a token to go on.
func TestServingMaxPageSize(t *testing.T) {
	t.Parallel()
	const max = 5
	sim, c := dial(t, devnet.Options{Shards: 1, FIDs: 30, Preload: 300, Serving: devnet.ServingLimits{MaxPageSize: max}})
	s := devnet.NewSigner(99)
	var rs []*pb.Message
	for i := range 2 * max {
		rs = append(rs, s.Reaction(fidA, t0+uint32(i), true, pb.ReactionType_REACTION_TYPE_LIKE, &pb.CastId{Fid: fidB, Hash: bytes.Repeat([]byte{byte(i + 1)}, 20)}))
	}
	submit(t, sim, rs...)
	ctx := ctxTimeout(t, 10*time.Second)
	shard := uint32(1)
	for _, tc := range []struct {
		name string
		read func(size *uint32) (items int, token []byte, err error)
	}{
		{"messages", func(size *uint32) (int, []byte, error) {
			r, err := c.GetReactionsByFid(ctx, &pb.ReactionsByFidRequest{Fid: fidA, PageSize: size})
			return len(r.GetMessages()), r.GetNextPageToken(), err
		}},
		{"events", func(size *uint32) (int, []byte, error) {
			r, err := c.GetEvents(ctx, &pb.EventsRequest{ShardIndex: &shard, PageSize: size})
			return len(r.GetEvents()), r.GetNextPageToken(), err
		}},
		{"fids", func(size *uint32) (int, []byte, error) {
			r, err := c.GetFids(ctx, &pb.FidsRequest{ShardId: shard, PageSize: size})
			return len(r.GetFids()), r.GetNextPageToken(), err
		}},
	} {
		for _, size := range []*uint32{nil, u32(max + 1), u32(1 << 31)} {
			n, token, err := tc.read(size)
			if err != nil || n != max || len(token) == 0 {
				t.Errorf("%s, page_size %v: %d items, token %x, %v; want %d and a token", tc.name, size, n, token, err, max)
			}
		}
	}
}

// TestServingMaxSubscribers opens the most Subscribe streams allowed and
// checks that one more is refused until one of them ends.
func TestServingMaxSubscribers(t *testing.T) {
	t.Parallel()
	const max = 2
	_, c := dial(t, devnet.Options{Shards: 1, FIDs: 10, Preload: 50, Serving: devnet.ServingLimits{MaxSubscribers: max}})
	shard, from := uint32(1), uint64(0)
	open := func(ctx context.Context) error {
		s, err := c.Subscribe(ctx, &pb.SubscribeRequest{EventTypes: allTypes, ShardIndex: &shard, FromId: &from})
		if err != nil {
			return err
		}
		_, err = s.Recv() // the first event: the server holds the stream
		return err
	}
	cancels := make([]context.CancelFunc, max)
	for i := range max {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		cancels[i] = cancel
		if err := open(ctx); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	ctx := ctxTimeout(t, 20*time.Second)
	wantCode(t, open(ctx), codes.ResourceExhausted, "one stream over the limit")
	cancels[0]()
	for {
		err := open(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no stream could open after one ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServingMaxStreamsPerConn holds the only call one connection may
// have in flight and checks that a second call on it waits, while other
// connections are served.
func TestServingMaxStreamsPerConn(t *testing.T) {
	t.Parallel()
	_, addr := testsupport.StartDevnet(t, devnet.Options{Shards: 1, FIDs: 10, Preload: 50, Serving: devnet.ServingLimits{MaxStreamsPerConn: 1}})
	client := func() pb.HubServiceClient {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return pb.NewHubServiceClient(conn)
	}
	c := client()
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shard, from := uint32(1), uint64(0)
	s, err := c.Subscribe(sctx, &pb.SubscribeRequest{EventTypes: allTypes, ShardIndex: &shard, FromId: &from})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	short := ctxTimeout(t, 300*time.Millisecond)
	_, err = c.GetInfo(short, &pb.GetInfoRequest{})
	wantCode(t, err, codes.DeadlineExceeded, "a second call on the busy connection")
	_, err = client().GetInfo(ctxTimeout(t, 10*time.Second), &pb.GetInfoRequest{})
	wantCode(t, err, codes.OK, "a call on another connection")
	cancel()
	_, err = c.GetInfo(ctxTimeout(t, 10*time.Second), &pb.GetInfoRequest{})
	wantCode(t, err, codes.OK, "a call once the stream ended")
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
