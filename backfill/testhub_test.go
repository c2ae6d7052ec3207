package backfill

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// testHub is a HubService over real gRPC whose data and faults a test
// controls exactly: fixed per-FID lists, Snapchain's paging behaviour (a
// full page carries a token even when it is the last), injected
// RESOURCE_EXHAUSTED or other errors, and latency. The simulator in devnet
// covers protocol realism; this server covers what a test must provoke.
type testHub struct {
	pb.UnimplementedHubServiceServer

	mu      sync.Mutex
	all     map[uint64]map[DataType][]*pb.Message // GetAll*MessagesByFid
	live    map[uint64]map[DataType][]*pb.Message // Get*ByFid
	compact map[uint64][]*pb.Message
	onchain map[uint64]map[pb.OnChainEventType][]*pb.OnChainEvent
	proofs  map[uint64][]*pb.UserNameProof
	shards  map[uint32][]uint64

	requests  atomic.Int64
	byMethod  sync.Map // method → *atomic.Int64
	failEvery atomic.Int64
	delay     atomic.Int64 // ns
	// failFID makes every request for that FID fail with failCode.
	failFID  atomic.Uint64
	failCode codes.Code
	// before, when set, runs at the start of each request; after runs once
	// the response is computed, before it is sent.
	before func(method string, fid uint64)
	after  func(method string, fid uint64)
}

func newTestHub() *testHub {
	return &testHub{
		all:     map[uint64]map[DataType][]*pb.Message{},
		live:    map[uint64]map[DataType][]*pb.Message{},
		compact: map[uint64][]*pb.Message{},
		onchain: map[uint64]map[pb.OnChainEventType][]*pb.OnChainEvent{},
		proofs:  map[uint64][]*pb.UserNameProof{},
		shards:  map[uint32][]uint64{},
	}
}

// serve starts the hub on a loopback port and returns a client for it.
func (h *testHub) serve(t testing.TB) (pb.HubServiceClient, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	pb.RegisterHubServiceServer(s, h)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewHubServiceClient(conn), l.Addr().String()
}

func (h *testHub) count(method string) int64 {
	v, ok := h.byMethod.Load(method)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

func (h *testHub) enter(ctx context.Context, method string, fid uint64) error {
	n := h.requests.Add(1)
	v, _ := h.byMethod.LoadOrStore(method, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
	if h.before != nil {
		h.before(method, fid)
	}
	if d := time.Duration(h.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if every := h.failEvery.Load(); every > 0 && n%every == 0 {
		return status.Error(codes.ResourceExhausted, "test hub: slow down")
	}
	if f := h.failFID.Load(); f != 0 && f == fid {
		return status.Errorf(h.failCode, "test hub: fid %d is broken", fid)
	}
	return nil
}

func (h *testHub) leave(method string, fid uint64) {
	if h.after != nil {
		h.after(method, fid)
	}
}

// page returns the page of list after token, Snapchain style.
func page[T any](list []T, size *uint32, token []byte) ([]T, []byte, error) {
	off := 0
	if len(token) > 0 {
		if len(token) != 4 {
			return nil, nil, status.Error(codes.InvalidArgument, "bad page token")
		}
		off = int(binary.BigEndian.Uint32(token))
	}
	n := 10000
	if size != nil && *size > 0 {
		n = int(*size)
	}
	if off > len(list) {
		off = len(list)
	}
	end := min(off+n, len(list))
	out := append([]T(nil), list[off:end]...)
	if end-off < n {
		return out, nil, nil
	}
	return out, binary.BigEndian.AppendUint32(nil, uint32(end)), nil
}

func (h *testHub) messages(ctx context.Context, method string, src map[uint64]map[DataType][]*pb.Message, t DataType, fid uint64, size *uint32, token []byte) (*pb.MessagesResponse, error) {
	if err := h.enter(ctx, method, fid); err != nil {
		return nil, err
	}
	h.mu.Lock()
	msgs, next, err := page(src[fid][t], size, token)
	h.mu.Unlock()
	if err != nil {
		return nil, err
	}
	h.leave(method, fid)
	return &pb.MessagesResponse{Messages: msgs, NextPageToken: next}, nil
}

func (h *testHub) GetAllCastMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetAllCastMessagesByFid", h.all, Casts, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllReactionMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetAllReactionMessagesByFid", h.all, Reactions, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllLinkMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetAllLinkMessagesByFid", h.all, Links, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllVerificationMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetAllVerificationMessagesByFid", h.all, Verifications, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllUserDataMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetAllUserDataMessagesByFid", h.all, UserData, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetAllLendStorageMessagesByFid(ctx context.Context, r *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetAllLendStorageMessagesByFid", h.all, LendStorage, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetCastsByFid(ctx context.Context, r *pb.FidRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetCastsByFid", h.live, Casts, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetReactionsByFid(ctx context.Context, r *pb.ReactionsByFidRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetReactionsByFid", h.live, Reactions, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetLinksByFid(ctx context.Context, r *pb.LinksByFidRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetLinksByFid", h.live, Links, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetVerificationsByFid(ctx context.Context, r *pb.FidRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetVerificationsByFid", h.live, Verifications, r.Fid, r.PageSize, r.PageToken)
}
func (h *testHub) GetUserDataByFid(ctx context.Context, r *pb.FidRequest) (*pb.MessagesResponse, error) {
	return h.messages(ctx, "GetUserDataByFid", h.live, UserData, r.Fid, r.PageSize, r.PageToken)
}

func (h *testHub) GetLinkCompactStateMessageByFid(ctx context.Context, r *pb.FidRequest) (*pb.MessagesResponse, error) {
	if err := h.enter(ctx, "GetLinkCompactStateMessageByFid", r.Fid); err != nil {
		return nil, err
	}
	h.mu.Lock()
	msgs, next, err := page(h.compact[r.Fid], r.PageSize, r.PageToken)
	h.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &pb.MessagesResponse{Messages: msgs, NextPageToken: next}, nil
}

// GetOnChainEvents ignores paging, as Snapchain does.
func (h *testHub) GetOnChainEvents(ctx context.Context, r *pb.OnChainEventRequest) (*pb.OnChainEventResponse, error) {
	if err := h.enter(ctx, "GetOnChainEvents", r.Fid); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return &pb.OnChainEventResponse{Events: append([]*pb.OnChainEvent(nil), h.onchain[r.Fid][r.EventType]...)}, nil
}

func (h *testHub) GetUserNameProofsByFid(ctx context.Context, r *pb.FidRequest) (*pb.UsernameProofsResponse, error) {
	if err := h.enter(ctx, "GetUserNameProofsByFid", r.Fid); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return &pb.UsernameProofsResponse{Proofs: append([]*pb.UserNameProof(nil), h.proofs[r.Fid]...)}, nil
}

func (h *testHub) GetInfo(ctx context.Context, _ *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	info := &pb.GetInfoResponse{NumShards: uint32(len(h.shards))}
	info.ShardInfos = append(info.ShardInfos, &pb.ShardInfo{ShardId: 0})
	for s := uint32(1); s <= uint32(len(h.shards)); s++ {
		info.ShardInfos = append(info.ShardInfos, &pb.ShardInfo{ShardId: s, NumFidRegistrations: uint64(len(h.shards[s]))})
	}
	return info, nil
}

func (h *testHub) GetFids(ctx context.Context, r *pb.FidsRequest) (*pb.FidsResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list, ok := h.shards[r.ShardId]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "no shard %d", r.ShardId)
	}
	fids, next, err := page(list, r.PageSize, r.PageToken)
	if err != nil {
		return nil, err
	}
	return &pb.FidsResponse{Fids: fids, NextPageToken: next}, nil
}

// fixture generates signed data for FIDs and remembers what a complete
// backfill of each must deliver.
type fixture struct {
	key ed25519.PrivateKey
	ts  uint32
}

func newFixture() *fixture {
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, "waypoint backfill test signer 01")
	return &fixture{key: ed25519.NewKeyFromSeed(seed), ts: 100_000_000}
}

func (f *fixture) sign(t testing.TB, d *pb.MessageData) *pb.Message {
	t.Helper()
	f.ts++
	d.Timestamp = f.ts
	d.Network = pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET
	m, err := message.Sign(d, f.key)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sizes is how much data addFID generates per family.
type sizes struct{ casts, reactions, links int }

// addFID fills the hub with data of every family for fid.
func (h *testHub) addFID(t testing.TB, f *fixture, fid uint64, sz sizes) {
	t.Helper()
	all := map[DataType][]*pb.Message{}
	live := map[DataType][]*pb.Message{}
	add := func(dt DataType, isLive bool, d *pb.MessageData) *pb.Message {
		d.Fid = fid
		m := f.sign(t, d)
		all[dt] = append(all[dt], m)
		if isLive {
			live[dt] = append(live[dt], m)
		}
		return m
	}
	for i := range sz.casts {
		add(Casts, i%10 != 9, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD,
			Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: fmt.Sprintf("cast %d of %d", i, fid)}}})
		if i%10 == 9 {
			prev := all[Casts][len(all[Casts])-1]
			add(Casts, false, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_CAST_REMOVE,
				Body: &pb.MessageData_CastRemoveBody{CastRemoveBody: &pb.CastRemoveBody{TargetHash: prev.Hash}}})
		}
	}
	for i := range sz.reactions {
		add(Reactions, true, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_REACTION_ADD,
			Body: &pb.MessageData_ReactionBody{ReactionBody: &pb.ReactionBody{Type: pb.ReactionType_REACTION_TYPE_LIKE,
				Target: &pb.ReactionBody_TargetUrl{TargetUrl: fmt.Sprintf("https://example.com/%d/%d", fid, i)}}}})
	}
	for i := range sz.links {
		add(Links, true, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_LINK_ADD,
			Body: &pb.MessageData_LinkBody{LinkBody: &pb.LinkBody{Type: "follow", Target: &pb.LinkBody_TargetFid{TargetFid: uint64(1_000_000 + i)}}}})
	}
	for i := range 2 {
		add(Verifications, true, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS,
			Body: &pb.MessageData_VerificationAddAddressBody{VerificationAddAddressBody: &pb.VerificationAddAddressBody{
				Address: []byte(fmt.Sprintf("addr-%08d-%08d", fid, i))}}})
	}
	for _, ut := range []pb.UserDataType{pb.UserDataType_USER_DATA_TYPE_DISPLAY, pb.UserDataType_USER_DATA_TYPE_BIO} {
		add(UserData, true, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD,
			Body: &pb.MessageData_UserDataBody{UserDataBody: &pb.UserDataBody{Type: ut, Value: fmt.Sprintf("%s of %d", ut, fid)}}})
	}
	add(LendStorage, false, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_LEND_STORAGE,
		Body: &pb.MessageData_LendStorageBody{LendStorageBody: &pb.LendStorageBody{ToFid: fid + 1, NumUnits: 1}}})
	compact := f.sign(t, &pb.MessageData{Fid: fid, Type: pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE,
		Body: &pb.MessageData_LinkCompactStateBody{LinkCompactStateBody: &pb.LinkCompactStateBody{Type: "follow", TargetFids: []uint64{1_000_000}}}})
	onchain := map[pb.OnChainEventType][]*pb.OnChainEvent{}
	for i, typ := range onChainEventTypes {
		onchain[typ] = append(onchain[typ], &pb.OnChainEvent{Type: typ, Fid: fid, BlockNumber: uint32(i + 1),
			TransactionHash: []byte(fmt.Sprintf("tx-%d-%d", fid, i)), LogIndex: uint32(i)})
	}
	proof := &pb.UserNameProof{Fid: fid, Name: []byte(fmt.Sprintf("user%d", fid)), Type: pb.UserNameType_USERNAME_TYPE_FNAME, Timestamp: uint64(f.ts)}

	h.mu.Lock()
	defer h.mu.Unlock()
	h.all[fid] = all
	h.live[fid] = live
	h.compact[fid] = []*pb.Message{compact}
	h.onchain[fid] = onchain
	h.proofs[fid] = []*pb.UserNameProof{proof}
	shard := uint32(fid%2 + 1)
	h.shards[shard] = append(h.shards[shard], fid)
	if _, ok := h.shards[3-shard]; !ok {
		h.shards[3-shard] = nil
	}
}

// expected returns the keys (see eventKey) a complete backfill of fid
// writes.
func (h *testHub) expected(fid uint64, types ...DataType) map[string]bool {
	if len(types) == 0 {
		types = allDataTypes
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]bool{}
	for _, t := range types {
		switch t {
		case OnChainEvents:
			for _, evs := range h.onchain[fid] {
				for _, e := range evs {
					out[eventKey(&pb.HubEvent{Body: &pb.HubEvent_MergeOnChainEventBody{MergeOnChainEventBody: &pb.MergeOnChainEventBody{OnChainEvent: e}}})] = true
				}
			}
		case UsernameProofs:
			for _, p := range h.proofs[fid] {
				out[eventKey(&pb.HubEvent{Body: &pb.HubEvent_MergeUsernameProofBody{MergeUsernameProofBody: &pb.MergeUserNameProofBody{UsernameProof: p}}})] = true
			}
		default:
			for _, m := range h.all[fid][t] {
				out[fmt.Sprintf("msg:%x", m.Hash)] = true
			}
			if t == Links {
				for _, m := range h.compact[fid] {
					out[fmt.Sprintf("msg:%x", m.Hash)] = true
				}
			}
		}
	}
	return out
}

// eventKey identifies what an event stores: a message hash, an on-chain
// event's transaction and log index, or a proof's name.
func eventKey(e *pb.HubEvent) string {
	switch b := e.Body.(type) {
	case *pb.HubEvent_MergeMessageBody:
		return fmt.Sprintf("msg:%x", b.MergeMessageBody.GetMessage().GetHash())
	case *pb.HubEvent_MergeOnChainEventBody:
		oc := b.MergeOnChainEventBody.GetOnChainEvent()
		return fmt.Sprintf("onchain:%d:%x:%d", oc.GetType(), oc.GetTransactionHash(), oc.GetLogIndex())
	case *pb.HubEvent_MergeUsernameProofBody:
		return fmt.Sprintf("proof:%s", b.MergeUsernameProofBody.GetUsernameProof().GetName())
	}
	return "unknown"
}

func eventFID(e *pb.HubEvent) uint64 {
	switch b := e.Body.(type) {
	case *pb.HubEvent_MergeMessageBody:
		return b.MergeMessageBody.GetMessage().GetData().GetFid()
	case *pb.HubEvent_MergeOnChainEventBody:
		return b.MergeOnChainEventBody.GetOnChainEvent().GetFid()
	case *pb.HubEvent_MergeUsernameProofBody:
		return b.MergeUsernameProofBody.GetUsernameProof().GetFid()
	}
	return 0
}

// memWriter records what was written, per FID, and the largest batch.
type memWriter struct {
	mu       sync.Mutex
	byFID    map[uint64]map[string]int
	maxBatch int
	writes   int
	fail     func(events []*pb.HubEvent) error
}

func newMemWriter() *memWriter { return &memWriter{byFID: map[uint64]map[string]int{}} }

func (w *memWriter) Write(ctx context.Context, events []*pb.HubEvent) error {
	if w.fail != nil {
		if err := w.fail(events); err != nil {
			return err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	w.maxBatch = max(w.maxBatch, len(events))
	for _, e := range events {
		if e.Id != 0 {
			return fmt.Errorf("backfill event with id %d", e.Id)
		}
		fid := eventFID(e)
		if w.byFID[fid] == nil {
			w.byFID[fid] = map[string]int{}
		}
		w.byFID[fid][eventKey(e)]++
	}
	return nil
}

// missing returns what of want fid has not been written, and what was
// written that is not in want.
func (w *memWriter) diff(fid uint64, want map[string]bool) (missing, extra []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	got := w.byFID[fid]
	for k := range want {
		if got[k] == 0 {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	return missing, extra
}
