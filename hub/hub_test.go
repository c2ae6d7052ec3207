package hub_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

// fastRetry keeps retry tests quick while still exercising the backoff.
var fastRetry = hub.WithRetry(4, time.Millisecond, 5*time.Millisecond)

func dial(t *testing.T, url string, opts ...hub.Option) *hub.Client {
	t.Helper()
	c, err := hub.Dial(context.Background(), url, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPlaintextURLs(t *testing.T) {
	h := &testHub{}
	addr := serve(t, h)
	for _, url := range []string{"http://" + addr, addr, "http://" + addr + "/"} {
		t.Run(url, func(t *testing.T) {
			info, err := dial(t, url).Info(ctxT(t))
			if err != nil {
				t.Fatalf("Info: %v", err)
			}
			if info.GetNumShards() != 2 || info.GetVersion() != "test" {
				t.Fatalf("Info = %v", info)
			}
		})
	}
}

func TestHeadersAreSentAsMetadata(t *testing.T) {
	h := &testHub{
		subscribe: func(_ *pb.SubscribeRequest, s grpc.ServerStreamingServer[pb.HubEvent]) error { return nil },
		messages: func(context.Context, uint64, *uint32, []byte) (*pb.MessagesResponse, error) {
			return &pb.MessagesResponse{}, nil
		},
	}
	c := dial(t, serve(t, h),
		hub.WithHeaders(map[string]string{"X-Api-Key": "secret"}),
		hub.WithHeaders(map[string]string{"x-client": "waypoint"}),
		hub.WithDialOptions(grpc.WithUserAgent("waypoint-test")))
	ctx := ctxT(t)
	if _, err := c.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Raw().GetInfo(ctx, &pb.GetInfoRequest{}); err != nil {
		t.Fatal(err)
	}
	s, err := c.Subscribe(ctx, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("Recv = %v, want EOF", err)
	}
	for _, err := range c.Messages(ctx, hub.KindCasts, 1, 10) {
		if err != nil {
			t.Fatal(err)
		}
	}
	calls := h.recorded()
	if len(calls) != 4 {
		t.Fatalf("%d calls recorded, want 4", len(calls))
	}
	for _, c := range calls {
		if got := c.md.Get("x-api-key"); len(got) != 1 || got[0] != "secret" {
			t.Errorf("%s: x-api-key = %q", c.method, got)
		}
		if got := c.md.Get("x-client"); len(got) != 1 || got[0] != "waypoint" {
			t.Errorf("%s: x-client = %q", c.method, got)
		}
		if ua := c.md.Get("user-agent"); len(ua) != 1 || !strings.HasPrefix(ua[0], "waypoint-test") {
			t.Errorf("%s: user-agent = %q (WithDialOptions not applied)", c.method, ua)
		}
	}
}

func TestRetry(t *testing.T) {
	cases := []struct {
		name     string
		failures []codes.Code // what the first calls fail with
		attempts int          // calls the server must see
		want     codes.Code   // final outcome
	}{
		{"unavailable then success", []codes.Code{codes.Unavailable, codes.Unavailable}, 3, codes.OK},
		{"resource exhausted then success", []codes.Code{codes.ResourceExhausted}, 2, codes.OK},
		{"invalid argument is not retried", []codes.Code{codes.InvalidArgument}, 1, codes.InvalidArgument},
		{"not found is not retried", []codes.Code{codes.NotFound}, 1, codes.NotFound},
		{"internal is not retried", []codes.Code{codes.Internal}, 1, codes.Internal},
		{"attempts are bounded", []codes.Code{codes.Unavailable, codes.Unavailable, codes.Unavailable, codes.Unavailable, codes.Unavailable}, 4, codes.Unavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &testHub{info: func(_ context.Context, n int) (*pb.GetInfoResponse, error) {
				if n <= len(c.failures) {
					return nil, status.Errorf(c.failures[n-1], "scripted failure %d", n)
				}
				return &pb.GetInfoResponse{NumShards: 2}, nil
			}}
			var logs testsupport.SyncBuffer
			client := dial(t, serve(t, h), fastRetry, hub.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			_, err := client.Info(ctxT(t))
			if got := status.Code(err); got != c.want {
				t.Fatalf("Info error %v (code %v), want code %v", err, got, c.want)
			}
			if got := h.count("GetInfo"); got != c.attempts {
				t.Fatalf("server saw %d attempts, want %d", got, c.attempts)
			}
			if retries := strings.Count(logs.String(), "retrying"); retries != c.attempts-1 {
				t.Fatalf("logged %d retries, want %d:\n%s", retries, c.attempts-1, logs.String())
			}
		})
	}
}

func TestRetryDisabled(t *testing.T) {
	h := &testHub{info: func(context.Context, int) (*pb.GetInfoResponse, error) {
		return nil, status.Error(codes.Unavailable, "down")
	}}
	_, err := dial(t, serve(t, h), hub.WithRetry(1, 0, 0)).Info(ctxT(t))
	if status.Code(err) != codes.Unavailable || h.count("GetInfo") != 1 {
		t.Fatalf("err %v after %d attempts, want one UNAVAILABLE attempt", err, h.count("GetInfo"))
	}
}

func TestRetryStopsWithContext(t *testing.T) {
	h := &testHub{info: func(context.Context, int) (*pb.GetInfoResponse, error) {
		return nil, status.Error(codes.Unavailable, "down")
	}}
	c := dial(t, serve(t, h), hub.WithRetry(100, time.Second, time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Info(ctx)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err %v, want DEADLINE_EXCEEDED", err)
	}
	if !strings.Contains(err.Error(), "down") {
		t.Errorf("error %q does not mention the last failure", err)
	}
	if waited := time.Since(start); waited > 900*time.Millisecond {
		t.Fatalf("returned after %v: the backoff ignored the context", waited)
	}
	if n := h.count("GetInfo"); n != 1 {
		t.Fatalf("%d attempts, want 1", n)
	}
}

func TestCallTimeout(t *testing.T) {
	cases := []struct {
		name string
		opts []hub.Option
		min  time.Duration // 0: the call must carry no deadline
		max  time.Duration
	}{
		{"default", nil, 29 * time.Second, 30 * time.Second},
		{"configured", []hub.Option{hub.WithCallTimeout(2 * time.Second)}, time.Second, 2 * time.Second},
		{"disabled", []hub.Option{hub.WithCallTimeout(0)}, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := &testHub{subscribe: func(_ *pb.SubscribeRequest, s grpc.ServerStreamingServer[pb.HubEvent]) error { return nil }}
			client := dial(t, serve(t, h), c.opts...)
			if _, err := client.Info(context.Background()); err != nil {
				t.Fatal(err)
			}
			s, err := client.Subscribe(context.Background(), 1, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err != io.EOF {
				t.Fatalf("Recv: %v", err)
			}
			for _, call := range h.recorded() {
				switch call.method {
				case "/HubService/GetInfo":
					if c.min == 0 && call.deadline != 0 {
						t.Errorf("GetInfo had a %v deadline, want none", call.deadline)
					}
					if c.min != 0 && (call.deadline < c.min || call.deadline > c.max) {
						t.Errorf("GetInfo deadline %v, want within [%v, %v]", call.deadline, c.min, c.max)
					}
				case "/HubService/Subscribe":
					if call.deadline != 0 {
						t.Errorf("Subscribe had a %v deadline; streams must not get the call timeout", call.deadline)
					}
				}
			}
		})
	}

	t.Run("expires", func(t *testing.T) {
		h := &testHub{info: func(ctx context.Context, _ int) (*pb.GetInfoResponse, error) {
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		}}
		// The outer bound only keeps a regression from hanging the suite.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		_, err := dial(t, serve(t, h), hub.WithCallTimeout(100*time.Millisecond), fastRetry).Info(ctx)
		if status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("err %v, want DEADLINE_EXCEEDED", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("took %v", d)
		}
		if n := h.count("GetInfo"); n != 1 {
			t.Fatalf("%d attempts: a deadline is not retried", n)
		}
	})
}

func msgs(n int) []*pb.Message {
	out := make([]*pb.Message, n)
	for i := range out {
		out[i] = &pb.Message{Hash: []byte{byte(i >> 8), byte(i)}}
	}
	return out
}

func TestMessagesPagination(t *testing.T) {
	cases := []struct {
		name     string
		total    int
		size     uint32
		emptyEnd bool
		calls    int // requests the loop must make
	}{
		{"short last page", 25, 10, false, 3},
		{"full last page carries a token", 30, 10, false, 4},
		{"end on empty token", 25, 10, true, 3},
		{"full last page then empty token", 30, 10, true, 4},
		{"nothing", 0, 10, false, 1},
		{"one page", 7, 10, false, 1},
		{"default page size", 2500, 0, false, 3},
		{"page size capped", 25000, 50000, false, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			all := msgs(c.total)
			h := &testHub{messages: func(_ context.Context, _ uint64, size *uint32, token []byte) (*pb.MessagesResponse, error) {
				page, next, err := pager(all, size, token, c.emptyEnd)
				return &pb.MessagesResponse{Messages: page, NextPageToken: next}, err
			}}
			client := dial(t, serve(t, h))
			var got []*pb.Message
			for page, err := range client.Messages(ctxT(t), hub.KindCasts, 42, c.size) {
				if err != nil {
					t.Fatal(err)
				}
				if len(page) == 0 {
					t.Fatal("yielded an empty page")
				}
				got = append(got, page...)
			}
			if len(got) != len(all) {
				t.Fatalf("got %d messages, want %d", len(got), len(all))
			}
			for i := range got {
				if !proto.Equal(got[i], all[i]) {
					t.Fatalf("message %d out of order", i)
				}
			}
			calls := h.recorded()
			if len(calls) != c.calls {
				t.Fatalf("%d requests, want %d", len(calls), c.calls)
			}
			wantSize := min(c.size, hub.MaxPageSize)
			if wantSize == 0 {
				wantSize = hub.DefaultPageSize
			}
			for i, call := range calls {
				if call.size == nil || *call.size != wantSize {
					t.Errorf("request %d: page_size %v, want %d", i, call.size, wantSize)
				}
				if call.fid != 42 {
					t.Errorf("request %d: fid %d", i, call.fid)
				}
				if (i == 0) != (call.token == nil) {
					t.Errorf("request %d: token %q", i, call.token)
				}
			}
		})
	}
}

func TestMessagesStopsEarlyAndOnErrors(t *testing.T) {
	all := msgs(50)
	failOn := map[string]bool{}
	var mu sync.Mutex
	h := &testHub{messages: func(_ context.Context, _ uint64, size *uint32, token []byte) (*pb.MessagesResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		if failOn[string(token)] {
			return nil, status.Error(codes.InvalidArgument, "bad page token")
		}
		page, next, err := pager(all, size, token, false)
		return &pb.MessagesResponse{Messages: page, NextPageToken: next}, err
	}}
	client := dial(t, serve(t, h), fastRetry)
	ctx := ctxT(t)

	pages := 0
	for _, err := range client.Messages(ctx, hub.KindLinks, 1, 10) {
		if err != nil {
			t.Fatal(err)
		}
		pages++
		break
	}
	if pages != 1 || h.count("GetAllLinkMessagesByFid") != 1 {
		t.Fatalf("breaking after one page made %d requests", h.count("GetAllLinkMessagesByFid"))
	}

	mu.Lock()
	failOn["after:20"] = true
	mu.Unlock()
	var got int
	var last error
	for page, err := range client.Messages(ctx, hub.KindReactions, 1, 10) {
		if err != nil {
			last = err
			continue
		}
		got += len(page)
	}
	if got != 20 || status.Code(last) != codes.InvalidArgument {
		t.Fatalf("got %d messages then %v; want 20 then INVALID_ARGUMENT", got, last)
	}
	if !strings.Contains(last.Error(), "page 3") || !strings.Contains(last.Error(), "reactions of fid 1") {
		t.Errorf("error %q does not say what failed", last)
	}
}

func TestMessagesRepeatedToken(t *testing.T) {
	h := &testHub{messages: func(context.Context, uint64, *uint32, []byte) (*pb.MessagesResponse, error) {
		return &pb.MessagesResponse{Messages: msgs(1), NextPageToken: []byte("same")}, nil
	}}
	var err error
	for _, e := range dial(t, serve(t, h)).Messages(ctxT(t), hub.KindCasts, 1, 1) {
		if e != nil {
			err = e
		}
	}
	if err == nil || !strings.Contains(err.Error(), "same page token") {
		t.Fatalf("err %v, want a repeated-token error", err)
	}
	if n := len(h.recorded()); n != 2 {
		t.Fatalf("%d requests, want 2", n)
	}
}

func TestMessageKinds(t *testing.T) {
	want := map[hub.Kind]string{
		hub.KindCasts:            "GetAllCastMessagesByFid",
		hub.KindReactions:        "GetAllReactionMessagesByFid",
		hub.KindLinks:            "GetAllLinkMessagesByFid",
		hub.KindVerifications:    "GetAllVerificationMessagesByFid",
		hub.KindUserData:         "GetAllUserDataMessagesByFid",
		hub.KindLendStorage:      "GetAllLendStorageMessagesByFid",
		hub.KindCastAdds:         "GetCastsByFid",
		hub.KindReactionAdds:     "GetReactionsByFid",
		hub.KindLinkAdds:         "GetLinksByFid",
		hub.KindVerificationAdds: "GetVerificationsByFid",
		hub.KindUserDataAdds:     "GetUserDataByFid",
		hub.KindLinkCompactState: "GetLinkCompactStateMessageByFid",
	}
	h := &testHub{messages: func(_ context.Context, _ uint64, size *uint32, token []byte) (*pb.MessagesResponse, error) {
		page, next, err := pager(msgs(3), size, token, false)
		return &pb.MessagesResponse{Messages: page, NextPageToken: next}, err
	}}
	client := dial(t, serve(t, h))
	for kind, method := range want {
		t.Run(string(kind), func(t *testing.T) {
			if k, err := hub.ParseKind(string(kind)); err != nil || k != kind {
				t.Fatalf("ParseKind(%q) = %q, %v", kind, k, err)
			}
			before := h.count(method)
			n := 0
			for page, err := range client.Messages(ctxT(t), kind, 7, 2) {
				if err != nil {
					t.Fatal(err)
				}
				n += len(page)
			}
			if n != 3 || h.count(method)-before != 2 {
				t.Fatalf("read %d messages in %d calls of %s, want 3 in 2", n, h.count(method)-before, method)
			}
		})
	}
	if _, err := hub.ParseKind("likes"); err == nil {
		t.Fatal("ParseKind accepted an unknown kind")
	}
	for _, err := range client.Messages(ctxT(t), hub.Kind("likes"), 1, 1) {
		if err == nil || !strings.Contains(err.Error(), "likes") {
			t.Fatalf("unknown kind: err %v", err)
		}
	}
}

func TestMaxRecvMsgSize(t *testing.T) {
	big := &pb.Message{Data: &pb.MessageData{Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{
		Text: strings.Repeat("x", 5<<20),
	}}}}
	h := &testHub{messages: func(context.Context, uint64, *uint32, []byte) (*pb.MessagesResponse, error) {
		return &pb.MessagesResponse{Messages: []*pb.Message{big}}, nil
	}}
	addr := serve(t, h)

	n := 0
	for page, err := range dial(t, addr).Messages(ctxT(t), hub.KindCastAdds, 1, 1) {
		if err != nil {
			t.Fatalf("a >4 MiB page with the default limit: %v", err)
		}
		n += len(page)
		if got := len(page[0].GetData().GetCastAddBody().GetText()); got != 5<<20 {
			t.Fatalf("text of %d bytes", got)
		}
	}
	if n != 1 {
		t.Fatalf("%d messages", n)
	}

	before := h.count("GetCastsByFid")
	for _, err := range dial(t, addr, hub.WithMaxRecvMsgSize(4<<20), fastRetry).Messages(ctxT(t), hub.KindCastAdds, 1, 1) {
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("over the limit: err %v, want RESOURCE_EXHAUSTED", err)
		}
	}
	if got := h.count("GetCastsByFid") - before; got != 1 {
		t.Fatalf("an over-limit response was requested %d times; it cannot succeed on retry", got)
	}
}

func TestSubscribe(t *testing.T) {
	reqs := make(chan *pb.SubscribeRequest, 2)
	h := &testHub{subscribe: func(req *pb.SubscribeRequest, s grpc.ServerStreamingServer[pb.HubEvent]) error {
		reqs <- req
		for i := range 3 {
			if err := s.Send(&pb.HubEvent{Id: req.GetFromId() + uint64(i), ShardIndex: req.GetShardIndex()}); err != nil {
				return err
			}
		}
		return nil
	}}
	c := dial(t, serve(t, h))
	ctx := ctxT(t)

	from := uint64(5 << 14)
	s, err := c.Subscribe(ctx, 2, &from)
	if err != nil {
		t.Fatal(err)
	}
	from = 0 // the request must not alias the caller's variable
	var ids []uint64
	for {
		ev, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev.GetId())
		if ev.GetShardIndex() != 2 {
			t.Fatalf("event from shard %d", ev.GetShardIndex())
		}
	}
	if len(ids) != 3 || ids[0] != 5<<14 {
		t.Fatalf("ids %v", ids)
	}
	req := <-reqs
	if req.ShardIndex == nil || *req.ShardIndex != 2 || req.FromId == nil || *req.FromId != 5<<14 {
		t.Fatalf("request %v", req)
	}
	if len(req.EventTypes) != 7 {
		t.Fatalf("no types given should ask for all 7 event types, asked for %v", req.EventTypes)
	}

	s, err = c.Subscribe(ctx, 1, nil, pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
	}
	req = <-reqs
	if req.FromId != nil {
		t.Fatalf("live-only subscribe sent from_id %d", *req.FromId)
	}
	if len(req.EventTypes) != 1 || req.EventTypes[0] != pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE {
		t.Fatalf("types %v", req.EventTypes)
	}

	if _, err := c.Subscribe(ctx, 0, nil); err == nil || !strings.Contains(err.Error(), "shard 0") {
		t.Fatalf("shard 0: err %v", err)
	}
	if n := h.count("Subscribe"); n != 2 {
		t.Fatalf("server saw %d subscriptions, want 2", n)
	}
}

func TestSubscribeIsNotRetried(t *testing.T) {
	h := &testHub{subscribe: func(*pb.SubscribeRequest, grpc.ServerStreamingServer[pb.HubEvent]) error {
		return status.Error(codes.Unavailable, "shard not ready")
	}}
	s, err := dial(t, serve(t, h), fastRetry).Subscribe(ctxT(t), 1, nil)
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err %v", err)
	}
	if n := h.count("Subscribe"); n != 1 {
		t.Fatalf("%d subscribe attempts, want 1", n)
	}
}

func TestFidsEventsOnChainProofs(t *testing.T) {
	fids := make([]uint64, 23)
	for i := range fids {
		fids[i] = uint64(i + 1)
	}
	events := make([]*pb.HubEvent, 12)
	for i := range events {
		events[i] = &pb.HubEvent{Id: uint64(100 + i)}
	}
	var stop []*uint64
	var mu sync.Mutex
	h := &testHub{
		fids: func(_ context.Context, req *pb.FidsRequest) (*pb.FidsResponse, error) {
			if req.ShardId != 2 {
				return nil, status.Errorf(codes.InvalidArgument, "shard %d", req.ShardId)
			}
			if req.PageSize == nil || *req.PageSize < 3 {
				return nil, status.Error(codes.InvalidArgument, "page_size not sent")
			}
			// Short pages that still carry a token, as GetFids serves them.
			short := *req.PageSize - 2
			page, next, err := pager(fids, &short, req.PageToken, false)
			return &pb.FidsResponse{Fids: page, NextPageToken: next}, err
		},
		events: func(_ context.Context, req *pb.EventsRequest) (*pb.EventsResponse, error) {
			mu.Lock()
			stop = append(stop, req.StopId)
			mu.Unlock()
			if req.GetStartId() != 100 || req.GetShardIndex() != 1 {
				return nil, status.Errorf(codes.InvalidArgument, "start %d shard %d", req.GetStartId(), req.GetShardIndex())
			}
			page, next, err := pager(events, req.PageSize, req.PageToken, true)
			return &pb.EventsResponse{Events: page, NextPageToken: next}, err
		},
	}
	c := dial(t, serve(t, h))
	ctx := ctxT(t)

	var got []uint64
	for page, err := range c.Fids(ctx, 2, 5) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
	}
	if len(got) != 23 || got[22] != 23 {
		t.Fatalf("fids %v", got)
	}
	for _, err := range c.Fids(ctx, 0, 5) {
		if err == nil || !strings.Contains(err.Error(), "shard 0") {
			t.Fatalf("shard 0: %v", err)
		}
	}

	n := 0
	for page, err := range c.EventsPages(ctx, 1, 100, 0, 4) {
		if err != nil {
			t.Fatal(err)
		}
		n += len(page)
	}
	all, err := c.Events(ctx, 1, 100, 200)
	if err != nil {
		t.Fatal(err)
	}
	if n != 12 || len(all) != 12 || all[11].GetId() != 111 {
		t.Fatalf("events: %d paged, %d collected", n, len(all))
	}
	mu.Lock()
	if stop[0] != nil || stop[len(stop)-1] == nil || *stop[len(stop)-1] != 200 {
		t.Errorf("stop ids sent: first %v, last %v", stop[0], stop[len(stop)-1])
	}
	mu.Unlock()

	var onchain []*pb.OnChainEvent
	for page, err := range c.OnChainEvents(ctx, 9, pb.OnChainEventType_EVENT_TYPE_SIGNER) {
		if err != nil {
			t.Fatal(err)
		}
		onchain = append(onchain, page...)
	}
	if len(onchain) != 3 || onchain[0].GetFid() != 9 || onchain[0].GetType() != pb.OnChainEventType_EVENT_TYPE_SIGNER {
		t.Fatalf("on-chain events %v", onchain)
	}

	proofs, err := c.UsernameProofs(ctx, 9)
	if err != nil || len(proofs) != 1 || string(proofs[0].GetName()) != "alice" {
		t.Fatalf("proofs %v, %v", proofs, err)
	}
}

// selfSigned returns a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "waypoint hub test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	addr := serve(t, &testHub{}, grpc.Creds(credentials.NewServerTLSFromCert(&cert)))
	noRetry := hub.WithRetry(1, 0, 0)
	cases := []struct {
		name string
		url  string
		opts []hub.Option
		ok   bool
		msg  string // in the error when not ok
	}{
		{"trusted CA", "https://" + addr, []hub.Option{hub.WithTLSConfig(&tls.Config{RootCAs: pool})}, true, ""},
		{"skip verify", "https://" + addr, []hub.Option{hub.WithTLSConfig(&tls.Config{InsecureSkipVerify: true})}, true, ""},
		{"system roots reject a self-signed cert", "https://" + addr, nil, false, "certificate"},
		{"plaintext against TLS", "http://" + addr, nil, false, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client := dial(t, c.url, append(c.opts, noRetry, hub.WithKeepalive(keepalive.ClientParameters{Time: time.Minute}))...)
			info, err := client.Info(ctxT(t))
			if c.ok {
				if err != nil || info.GetNumShards() != 2 {
					t.Fatalf("Info = %v, %v", info, err)
				}
				return
			}
			if err == nil {
				t.Fatal("call succeeded, want a TLS failure")
			}
			if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err %v, want UNAVAILABLE mentioning %q", err, c.msg)
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	cases := []struct {
		name string
		url  string
		opts []hub.Option
		msg  string
	}{
		{"empty", "", nil, "empty"},
		{"blank", "   ", nil, "empty"},
		{"scheme", "ftp://node:3383", nil, `unsupported scheme "ftp"`},
		{"grpc scheme", "grpc://node:3383", nil, "unsupported scheme"},
		{"no host", "http://", nil, "no host"},
		{"no host with port", "https://:443", nil, "no host"},
		{"port zero", "http://node:0", nil, "port"},
		{"port too big", "http://node:70000", nil, "port"},
		{"port not a number", "node:abc", nil, "port"},
		{"path", "https://node:3383/v1", nil, "without credentials, path or query"},
		{"credentials", "https://user:pw@node:3383", nil, "without credentials"},
		{"query", "http://node:3383?x=1", nil, "query"},
		{"bare with path", "node:3383/x", nil, "port"},
		{"unbracketed ipv6", "::1", nil, "host:port"},
		{"tls config for plaintext", "http://node:3383", []hub.Option{hub.WithTLSConfig(&tls.Config{})}, "use https://"},
		{"reserved header", "node:3383", []hub.Option{hub.WithHeaders(map[string]string{"grpc-timeout": "1"})}, "reserved"},
		{"bad header name", "node:3383", []hub.Option{hub.WithHeaders(map[string]string{"x api key": "1"})}, "header"},
		{"no attempts", "node:3383", []hub.Option{hub.WithRetry(0, time.Second, time.Second)}, "attempts"},
		{"max below base", "node:3383", []hub.Option{hub.WithRetry(3, 2*time.Second, time.Second)}, "below base"},
		{"negative timeout", "node:3383", []hub.Option{hub.WithCallTimeout(-time.Second)}, "negative"},
		{"zero recv size", "node:3383", []hub.Option{hub.WithMaxRecvMsgSize(0)}, "receive size"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			client, err := hub.Dial(context.Background(), c.url, c.opts...)
			if err == nil {
				_ = client.Close()
				t.Fatalf("Dial(%q) succeeded", c.url)
			}
			if !strings.Contains(err.Error(), c.msg) || !strings.Contains(err.Error(), `"`+c.url+`"`) {
				t.Fatalf("error %q should name the url and mention %q", err, c.msg)
			}
		})
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := hub.Dial(ctx, "node:3383"); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled context: %v", err)
	}
}

func TestDialDoesNotWaitForTheNode(t *testing.T) {
	// Nothing listens on this port: Dial must still succeed, and calls fail
	// with UNAVAILABLE (after the configured attempts).
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	c := dial(t, addr, hub.WithRetry(2, time.Millisecond, time.Millisecond))
	if _, err := c.Info(ctxT(t)); status.Code(err) != codes.Unavailable {
		t.Fatalf("err %v, want UNAVAILABLE", err)
	}
}

func TestShardFor(t *testing.T) {
	cases := []struct {
		fid    uint64
		shards uint32
		want   uint32
	}{
		// The examples in the wire contract, for mainnet's two shards.
		{1, 2, 1},
		{2, 2, 2},
		{3, 2, 1},
		{1234, 2, 1},
		{1, 1, 1},
		{1234, 1, 1},
		{1, 0, 0},
		// The node hashes the fid as 32 bits.
		{1<<32 + 2, 2, 2},
	}
	for _, c := range cases {
		if got := hub.ShardFor(c.fid, c.shards); got != c.want {
			t.Errorf("ShardFor(%d, %d) = %d, want %d", c.fid, c.shards, got, c.want)
		}
	}
	for _, n := range []uint32{2, 3, 7} {
		seen := map[uint32]int{}
		for fid := range uint64(1000) {
			s := hub.ShardFor(fid, n)
			if s < 1 || s > n {
				t.Fatalf("ShardFor(%d, %d) = %d, outside 1..%d", fid, n, s, n)
			}
			seen[s]++
		}
		if len(seen) != int(n) {
			t.Errorf("1000 fids over %d shards used only %v", n, seen)
		}
	}
}
