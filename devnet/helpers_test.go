package devnet_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

// Farcaster timestamps used by the scenarios: seconds after the epoch.
const t0 = 140_000_000

var allTypes = []pb.HubEventType{
	pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, pb.HubEventType_HUB_EVENT_TYPE_PRUNE_MESSAGE,
	pb.HubEventType_HUB_EVENT_TYPE_REVOKE_MESSAGE, pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF,
	pb.HubEventType_HUB_EVENT_TYPE_MERGE_ON_CHAIN_EVENT, pb.HubEventType_HUB_EVENT_TYPE_MERGE_FAILURE,
	pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED,
}

// dial starts a simulator and connects a plain grpc-go client to it, with
// the default proto codec: what any Farcaster client does.
func dial(t testing.TB, opts devnet.Options) (*devnet.Sim, pb.HubServiceClient) {
	t.Helper()
	sim, addr := testsupport.StartDevnet(t, opts)
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatalf("dial devnet: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return sim, pb.NewHubServiceClient(conn)
}

func u32(v uint32) *uint32 { return &v }
func u64(v uint64) *uint64 { return &v }
func yes() *bool           { b := true; return &b }

// replay subscribes to the shard from from_id and returns the events up to
// the last one stored when it was called.
func replay(t testing.TB, c pb.HubServiceClient, shard uint32, from uint64) []*pb.HubEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	last, err := c.GetEvents(ctx, &pb.EventsRequest{ShardIndex: &shard, Reverse: yes(), PageSize: u32(1)})
	if err != nil {
		t.Fatalf("last event: %v", err)
	}
	if len(last.Events) == 0 || last.Events[0].Id < from {
		return nil
	}
	stream, err := c.Subscribe(ctx, &pb.SubscribeRequest{EventTypes: allTypes, FromId: &from, ShardIndex: &shard})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	var out []*pb.HubEvent
	for {
		ev, err := stream.Recv()
		if err != nil {
			t.Fatalf("replay of shard %d from %d: after %d events: %v", shard, from, len(out), err)
		}
		out = append(out, ev)
		if ev.Id >= last.Events[0].Id {
			return out
		}
	}
}

// eventStream reads a Subscribe stream in the background so that tests
// can wait for events with timeouts.
type eventStream struct {
	ch   chan *pb.HubEvent
	errc chan error
}

func openStream(t testing.TB, c pb.HubServiceClient, req *pb.SubscribeRequest) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := c.Subscribe(ctx, req)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	es := &eventStream{ch: make(chan *pb.HubEvent, 4096), errc: make(chan error, 1)}
	go func() {
		for {
			ev, err := stream.Recv()
			if err != nil {
				es.errc <- err
				close(es.ch)
				return
			}
			es.ch <- ev
		}
	}()
	return es
}

// next returns the next event, or nil after timeout or once the stream
// has ended (err says why).
func (es *eventStream) next(timeout time.Duration) *pb.HubEvent {
	select {
	case ev := <-es.ch:
		return ev
	case <-time.After(timeout):
		return nil
	}
}

func (es *eventStream) err() error {
	select {
	case err := <-es.errc:
		es.errc <- err
		return err
	default:
		return nil
	}
}

// drain returns the events that arrive until none has for quiet.
func (es *eventStream) drain(quiet time.Duration) []*pb.HubEvent {
	var out []*pb.HubEvent
	for ev := es.next(quiet); ev != nil; ev = es.next(quiet) {
		out = append(out, ev)
	}
	return out
}

// recvN returns exactly n events, failing after timeout.
func (es *eventStream) recvN(t testing.TB, n int, timeout time.Duration) []*pb.HubEvent {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var out []*pb.HubEvent
	for len(out) < n {
		ev := es.next(time.Until(deadline))
		if ev == nil {
			t.Fatalf("got %d of %d events in %v (stream: %v)", len(out), n, timeout, es.err())
		}
		out = append(out, ev)
	}
	return out
}

// waitLive returns once the live stream has delivered a marker cast from
// fid submitted after it began: from then on the subscription is known to
// be registered. The markers' events are consumed: it returns on the last
// marker it submitted, which the stream delivers after every earlier one,
// so a marker delivered late cannot reach the caller's reads.
func waitLive(t testing.TB, sim *devnet.Sim, es *eventStream, fid uint64) {
	t.Helper()
	s := devnet.NewSigner(1 << 40)
	for i := range 100 {
		m := s.CastAdd(fid, 1, fmt.Sprintf("marker %d", i))
		if err := sim.Submit(m); err != nil {
			t.Fatal(err)
		}
		for ev := es.next(50 * time.Millisecond); ev != nil; ev = es.next(50 * time.Millisecond) {
			if bytes.Equal(ev.GetMergeMessageBody().GetMessage().GetHash(), m.Hash) {
				return
			}
		}
	}
	t.Fatalf("live stream delivered none of 100 marker casts (stream: %v)", es.err())
}

// withoutBlocks drops BLOCK_CONFIRMED events.
func withoutBlocks(evs []*pb.HubEvent) []*pb.HubEvent {
	var out []*pb.HubEvent
	for _, ev := range evs {
		if ev.Type != pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED {
			out = append(out, ev)
		}
	}
	return out
}

func wantCode(t testing.TB, err error, code codes.Code, what string) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: got %v, want %v", what, err, code)
	}
}

// mergeCode returns the code of the only merge failure in err.
func mergeCode(err error) string {
	var me *devnet.MergeError
	if errors.As(err, &me) {
		return me.Code
	}
	return ""
}
