package hub_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/waypointhq/waypoint/proto"
)

// testHub is a HubService over real gRPC whose behavior each test scripts.
// It records every call it receives.
type testHub struct {
	pb.UnimplementedHubServiceServer

	// info answers GetInfo; n counts GetInfo calls so far, from 1.
	info func(ctx context.Context, n int) (*pb.GetInfoResponse, error)
	// subscribe serves Subscribe.
	subscribe func(req *pb.SubscribeRequest, s grpc.ServerStreamingServer[pb.HubEvent]) error
	// messages serves every per-fid message RPC (the method tells which).
	messages func(ctx context.Context, fid uint64, size *uint32, token []byte) (*pb.MessagesResponse, error)
	fids     func(ctx context.Context, req *pb.FidsRequest) (*pb.FidsResponse, error)
	events   func(ctx context.Context, req *pb.EventsRequest) (*pb.EventsResponse, error)

	mu    sync.Mutex
	calls []call
}

type call struct {
	method   string
	md       metadata.MD
	deadline time.Duration // 0 if the call had none
	size     *uint32
	token    []byte
	fid      uint64
}

func (h *testHub) record(ctx context.Context, c call) int {
	c.method, _ = grpc.Method(ctx)
	c.md, _ = metadata.FromIncomingContext(ctx)
	if dl, ok := ctx.Deadline(); ok {
		c.deadline = time.Until(dl)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, c)
	n := 0
	for _, o := range h.calls {
		if o.method == c.method {
			n++
		}
	}
	return n
}

func (h *testHub) recorded() []call {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]call(nil), h.calls...)
}

func (h *testHub) count(method string) int {
	n := 0
	for _, c := range h.recorded() {
		if c.method == "/HubService/"+method {
			n++
		}
	}
	return n
}

func (h *testHub) GetInfo(ctx context.Context, _ *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	n := h.record(ctx, call{})
	if h.info == nil {
		return &pb.GetInfoResponse{Version: "test", NumShards: 2}, nil
	}
	return h.info(ctx, n)
}

func (h *testHub) Subscribe(req *pb.SubscribeRequest, s grpc.ServerStreamingServer[pb.HubEvent]) error {
	h.record(s.Context(), call{})
	if h.subscribe == nil {
		return status.Error(codes.Unimplemented, "no subscribe in this test")
	}
	return h.subscribe(req, s)
}

func (h *testHub) GetFids(ctx context.Context, req *pb.FidsRequest) (*pb.FidsResponse, error) {
	h.record(ctx, call{size: req.PageSize, token: req.PageToken})
	return h.fids(ctx, req)
}

func (h *testHub) GetEvents(ctx context.Context, req *pb.EventsRequest) (*pb.EventsResponse, error) {
	h.record(ctx, call{size: req.PageSize, token: req.PageToken})
	return h.events(ctx, req)
}

func (h *testHub) GetOnChainEvents(ctx context.Context, req *pb.OnChainEventRequest) (*pb.OnChainEventResponse, error) {
	h.record(ctx, call{size: req.PageSize, token: req.PageToken, fid: req.Fid})
	var evs []*pb.OnChainEvent
	for i := range 3 {
		evs = append(evs, &pb.OnChainEvent{Type: req.EventType, Fid: req.Fid, LogIndex: uint32(i)})
	}
	return &pb.OnChainEventResponse{Events: evs}, nil
}

func (h *testHub) GetUserNameProofsByFid(ctx context.Context, req *pb.FidRequest) (*pb.UsernameProofsResponse, error) {
	h.record(ctx, call{fid: req.Fid})
	return &pb.UsernameProofsResponse{Proofs: []*pb.UserNameProof{{Fid: req.Fid, Name: []byte("alice")}}}, nil
}

func (h *testHub) msgs(ctx context.Context, fid uint64, size *uint32, token []byte) (*pb.MessagesResponse, error) {
	h.record(ctx, call{size: size, token: token, fid: fid})
	return h.messages(ctx, fid, size, token)
}

func (h *testHub) GetCastsByFid(ctx context.Context, r *pb.FidRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetUserDataByFid(ctx context.Context, r *pb.FidRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetVerificationsByFid(ctx context.Context, r *pb.FidRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetLinkCompactStateMessageByFid(ctx context.Context, r *pb.FidRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetReactionsByFid(ctx context.Context, r *pb.ReactionsByFidRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetLinksByFid(ctx context.Context, r *pb.LinksByFidRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllCastMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllReactionMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllVerificationMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllUserDataMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllLinkMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllLendStorageMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.msgs(ctx, r.Fid, r.PageSize, r.PageToken)
}

// serve starts h on a loopback TCP port and returns its host:port.
func serve(t *testing.T, h *testHub, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	s := grpc.NewServer(opts...)
	pb.RegisterHubServiceServer(s, h)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String()
}

// pager serves items the way the node pages: the token is opaque to the
// client (here "after:<offset>"), a full page always carries a token, even
// when nothing follows, and the last short page ends with no token or, with
// emptyEnd, a present but empty one. It refuses requests without page_size,
// since relying on the node's default is a bug.
func pager[T any](items []T, size *uint32, token []byte, emptyEnd bool) ([]T, []byte, error) {
	if size == nil || *size == 0 {
		return nil, nil, status.Error(codes.InvalidArgument, "page_size not sent")
	}
	off := 0
	if len(token) > 0 {
		n, ok := strings.CutPrefix(string(token), "after:")
		v, err := strconv.Atoi(n)
		if !ok || err != nil || v > len(items) {
			return nil, nil, status.Errorf(codes.InvalidArgument, "bad page token %q", token)
		}
		off = v
	}
	end := min(off+int(*size), len(items))
	page := items[off:end]
	switch {
	case len(page) == int(*size):
		return page, []byte(fmt.Sprintf("after:%d", end)), nil
	case emptyEnd:
		return page, []byte{}, nil
	}
	return page, nil, nil
}
