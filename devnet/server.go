package devnet

import (
	"context"
	"encoding/binary"
	"sort"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the proto codec the raw codec falls back to
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/waypointhq/waypoint/proto"
)

// rawFrame is an already-encoded protobuf message sent as is. Events are
// stored encoded, so streams and event reads never marshal them again.
type rawFrame []byte

// splitFrame is a stored event sent as the three pieces of its full
// encoding (see dupLayout).
type splitFrame [3][]byte

// rawCodec is the proto codec, except that it passes rawFrame and
// splitFrame values through. It keeps the name "proto": on the wire nothing
// changes.
type rawCodec struct{ proto encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch r := v.(type) {
	case rawFrame:
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	case *splitFrame:
		return mem.BufferSlice{mem.SliceBuffer(r[0]), mem.SliceBuffer(r[1]), mem.SliceBuffer(r[2])}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c rawCodec) Name() string { return "proto" }

const (
	defaultPageSize       = 10000 // message and fid reads, as the node
	defaultEventsPageSize = 1000
	replayBatch           = 512
)

type hubServer struct {
	pb.UnimplementedHubServiceServer
	s *Sim
}

func (s *Sim) grpcServer() *grpc.Server {
	srv := grpc.NewServer(
		grpc.ForceServerCodecV2(rawCodec{proto: encoding.GetCodecV2("proto")}),
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<22),
		grpc.MaxRecvMsgSize(s.opts.Serving.MaxRequestBytes),
		grpc.MaxConcurrentStreams(s.opts.Serving.MaxStreamsPerConn),
	)
	h := &hubServer{s: s}
	// The generated descriptor, with the event reads answering from the
	// stored encodings (a handler may return any value the codec knows).
	desc := pb.HubService_ServiceDesc
	desc.Methods = append([]grpc.MethodDesc(nil), desc.Methods...)
	for i := range desc.Methods {
		switch desc.Methods[i].MethodName {
		case "GetEvents":
			desc.Methods[i].Handler = rawUnary(h.getEvents)
		case "GetEvent":
			desc.Methods[i].Handler = rawUnary(h.getEvent)
		}
	}
	srv.RegisterService(&desc, h)
	return srv
}

func rawUnary[Req any, PReq interface {
	*Req
	proto.Message
}](f func(context.Context, PReq) (rawFrame, error)) grpc.MethodHandler {
	return func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := PReq(new(Req))
		if err := dec(in); err != nil {
			return nil, err
		}
		if interceptor == nil {
			return f(ctx, in)
		}
		return interceptor(ctx, in, &grpc.UnaryServerInfo{}, func(ctx context.Context, req any) (any, error) {
			return f(ctx, req.(PReq))
		})
	}
}

func (s *Sim) dataShard(shard uint32) error {
	if shard == 0 {
		return status.Error(codes.InvalidArgument, "shard 0 is the block shard; it has no events")
	}
	if shard > s.opts.Shards {
		return status.Errorf(codes.InvalidArgument, "shard %d does not exist (data shards are 1..%d)", shard, s.opts.Shards)
	}
	return nil
}

// requestShards returns the shards a request with an optional shard index
// addresses: one, or every data shard.
func (s *Sim) requestShards(idx *uint32) ([]*shard, error) {
	if idx == nil {
		return s.shards[1:], nil
	}
	if err := s.dataShard(*idx); err != nil {
		return nil, err
	}
	return []*shard{s.shards[*idx]}, nil
}

func (h *hubServer) Subscribe(req *pb.SubscribeRequest, stream grpc.ServerStreamingServer[pb.HubEvent]) error {
	shards, err := h.s.requestShards(req.ShardIndex)
	if err != nil {
		return err
	}
	select {
	case h.s.subscribers <- struct{}{}:
		defer func() { <-h.s.subscribers }()
	default:
		return status.Errorf(codes.ResourceExhausted, "devnet: %d Subscribe streams are open, the most this node serves", cap(h.s.subscribers))
	}
	ctx := stream.Context()
	var want [256]bool
	anyType := false
	for _, t := range req.EventTypes {
		if t >= 0 && t < typeUnknown {
			want[t], anyType = true, true
		}
	}
	if !anyType {
		// Like the node: a stream that asked for nothing gets nothing.
		<-ctx.Done()
		return nil
	}
	type cursor struct {
		log      *eventLog
		pos      uint64
		liveFrom uint64 // events from here on were appended after the stream began
	}
	cursors := make([]cursor, len(shards))
	for i, sh := range shards {
		end := sh.log.end()
		pos := end
		if req.FromId != nil {
			pos = sh.log.seek(*req.FromId)
		}
		cursors[i] = cursor{log: &sh.log, pos: pos, liveFrom: end}
	}
	h.s.subscriptions.Add(1)
	every := int(h.s.unavailableEvery.Load())
	sent := 0
	buf := make([]item, 0, replayBatch)
	for {
		wake := h.s.waitCh()
		progressed := false
		for i := range cursors {
			c := &cursors[i]
			var next uint64
			buf, next = c.log.read(buf[:0], c.pos, replayBatch)
			c.pos = next
			if len(buf) == 0 {
				continue
			}
			progressed = true
			first := next - uint64(len(buf))
			for j, it := range buf {
				if err := h.s.waitStall(ctx); err != nil {
					return nil
				}
				if it.flags&flagHidden != 0 && first+uint64(j) >= c.liveFrom {
					continue
				}
				if it.typ != typeUnknown && !want[it.typ] {
					continue
				}
				var err error
				if it.dup.n == 0 {
					err = stream.SendMsg(rawFrame(it.b))
				} else {
					f := splitFrame(it.dup.segments(it.b))
					err = stream.SendMsg(&f)
				}
				if err != nil {
					return err
				}
				sent++
				if every > 0 && sent >= every {
					h.s.opts.Logger.Debug("devnet: resetting stream (fault injection)", "events", sent)
					return status.Errorf(codes.Unavailable, "devnet: stream reset after %d events (fault injection)", sent)
				}
			}
		}
		if !progressed {
			select {
			case <-ctx.Done():
				return nil
			case <-wake:
			}
		}
	}
}

// waitStall blocks while a stall fault is active.
func (s *Sim) waitStall(ctx context.Context) error {
	for {
		until := s.stallUntil.Load()
		if until == 0 {
			return nil
		}
		d := time.Until(time.Unix(0, until))
		if d <= 0 {
			return nil
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (h *hubServer) getEvent(_ context.Context, req *pb.EventRequest) (rawFrame, error) {
	if err := h.s.dataShard(req.ShardIndex); err != nil {
		return nil, err
	}
	it, ok := h.s.shards[req.ShardIndex].log.get(req.Id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "event %d not found on shard %d", req.Id, req.ShardIndex)
	}
	return rawFrame(it.full()), nil
}

// Event page tokens hold, per shard addressed, whether the shard is
// unstarted, resumable after an id, or done.
const (
	tokenEvents   = 'E'
	tokenMessages = 'M'
	tokenFids     = 'F'
	shardFresh    = 0
	shardResume   = 1
	shardDone     = 2
)

func (h *hubServer) getEvents(_ context.Context, req *pb.EventsRequest) (rawFrame, error) {
	shards, err := h.s.requestShards(req.ShardIndex)
	if err != nil {
		return nil, err
	}
	size := defaultEventsPageSize
	if req.PageSize != nil && *req.PageSize > 0 {
		size = int(*req.PageSize)
	}
	size = min(size, h.s.opts.Serving.MaxPageSize)
	states := make([]byte, len(shards))
	cursors := make([]uint64, len(shards))
	if len(req.PageToken) > 0 {
		t := req.PageToken
		if len(t) != 2+9*len(shards) || t[0] != tokenEvents || int(t[1]) != len(shards) {
			return nil, status.Error(codes.InvalidArgument, "invalid page token")
		}
		for i := range shards {
			states[i] = t[2+9*i]
			cursors[i] = binary.BigEndian.Uint64(t[3+9*i:])
			if states[i] > shardDone {
				return nil, status.Error(codes.InvalidArgument, "invalid page token")
			}
		}
	}
	reverse := req.Reverse != nil && *req.Reverse
	var out []byte
	more := false
	next := []byte{tokenEvents, byte(len(shards))}
	for i, sh := range shards {
		var items []item
		if states[i] != shardDone {
			items = sh.log.rangeIDs(req.StartId, req.StopId, reverse, states[i] == shardResume, cursors[i], size)
		}
		for _, it := range items {
			out = protowire.AppendTag(out, 1, protowire.BytesType)
			out = protowire.AppendVarint(out, uint64(len(it.b))+uint64(it.dup.n))
			if it.dup.n == 0 {
				out = append(out, it.b...)
			} else {
				for _, seg := range it.dup.segments(it.b) {
					out = append(out, seg...)
				}
			}
		}
		st, cur := byte(shardDone), uint64(0)
		if len(items) == size {
			st, cur, more = shardResume, items[len(items)-1].id, true
		}
		next = append(next, st)
		next = binary.BigEndian.AppendUint64(next, cur)
	}
	if more {
		out = protowire.AppendTag(out, 2, protowire.BytesType)
		out = protowire.AppendBytes(out, next)
	}
	return rawFrame(out), nil
}

func (h *hubServer) GetInfo(context.Context, *pb.GetInfoRequest) (*pb.GetInfoResponse, error) {
	s := h.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	perShard := make([]struct{ msgs, regs, onchain uint64 }, s.opts.Shards+1)
	for fid, f := range s.fids {
		sh := s.shardFor(fid)
		for k := range f.stores {
			perShard[sh].msgs += uint64(len(f.stores[k].sorted))
		}
		perShard[sh].msgs += uint64(len(f.compact))
		if f.registered {
			perShard[sh].regs++
		}
		for _, evs := range f.onchain {
			perShard[sh].onchain += uint64(len(evs))
		}
	}
	resp := &pb.GetInfoResponse{
		Version:   "devnet",
		PeerId:    "devnet",
		NumShards: s.opts.Shards,
		DbStats:   &pb.DbStats{NumMessages: uint64(s.numMessages), NumFidRegistrations: uint64(s.numRegistered)},
	}
	resp.ShardInfos = append(resp.ShardInfos, &pb.ShardInfo{ShardId: 0, MaxHeight: s.height0})
	for _, sh := range s.shards[1:] {
		_, size, _ := sh.log.stats()
		ps := perShard[sh.id]
		resp.ShardInfos = append(resp.ShardInfos, &pb.ShardInfo{
			ShardId: sh.id, MaxHeight: sh.height, NumMessages: ps.msgs, NumFidRegistrations: ps.regs,
			ApproxSize: size, MempoolSize: uint64(len(sh.pending)), NumOnchainEvents: ps.onchain,
		})
		resp.DbStats.ApproxSize += size
	}
	return resp, nil
}

func (h *hubServer) GetFids(_ context.Context, req *pb.FidsRequest) (*pb.FidsResponse, error) {
	s := h.s
	if err := s.dataShard(req.ShardId); err != nil {
		return nil, err
	}
	var after uint64
	hasAfter := false
	if len(req.PageToken) > 0 {
		if len(req.PageToken) != 9 || req.PageToken[0] != tokenFids {
			return nil, status.Error(codes.InvalidArgument, "invalid page token")
		}
		after, hasAfter = binary.BigEndian.Uint64(req.PageToken[1:]), true
	}
	s.mu.RLock()
	var fids []uint64
	for fid, f := range s.fids {
		if f.registered && s.shardFor(fid) == req.ShardId {
			fids = append(fids, fid)
		}
	}
	s.mu.RUnlock()
	reverse := req.Reverse != nil && *req.Reverse
	sort.Slice(fids, func(i, j int) bool { return (fids[i] < fids[j]) != reverse })
	if hasAfter {
		i := sort.Search(len(fids), func(i int) bool {
			if reverse {
				return fids[i] < after
			}
			return fids[i] > after
		})
		fids = fids[i:]
	}
	size := h.pageSize(req.PageSize)
	resp := &pb.FidsResponse{}
	if len(fids) >= size {
		fids = fids[:size]
		resp.NextPageToken = binary.BigEndian.AppendUint64([]byte{tokenFids}, fids[size-1])
	}
	resp.Fids = fids
	return resp, nil
}

func (h *hubServer) pageSize(p *uint32) int {
	if p == nil || *p == 0 {
		return min(defaultPageSize, h.s.opts.Serving.MaxPageSize)
	}
	return min(int(*p), h.s.opts.Serving.MaxPageSize)
}

// page selects one page of the entries keep returns true for (entries in
// ascending order) and decodes it. It seeks to the page token and reads
// only as far as the page goes, so paging through a store of n messages
// costs O(n) in all rather than O(n) a page.
func (h *hubServer) page(entries []*entry, keep func(*entry) bool, size *uint32, token []byte, reverse *bool) (*pb.MessagesResponse, error) {
	rev := reverse != nil && *reverse
	if len(token) > 0 {
		if len(token) != 25 || token[0] != tokenMessages {
			return nil, status.Error(codes.InvalidArgument, "invalid page token")
		}
		cur := &entry{ts: binary.BigEndian.Uint32(token[1:])}
		copy(cur.hash[:], token[5:])
		if rev {
			i := sort.Search(len(entries), func(i int) bool { return !entries[i].less(cur) })
			entries = entries[:i]
		} else {
			i := sort.Search(len(entries), func(i int) bool { return cur.less(entries[i]) })
			entries = entries[i:]
		}
	}
	n := h.pageSize(size)
	resp := &pb.MessagesResponse{Messages: make([]*pb.Message, 0, min(n, len(entries)))}
	var last *entry
	for i := range entries {
		if len(resp.Messages) == n {
			break
		}
		e := entries[i]
		if rev {
			e = entries[len(entries)-1-i]
		}
		if !keep(e) {
			continue
		}
		last = e
		m := new(pb.Message)
		if err := proto.Unmarshal(e.full(), m); err != nil {
			return nil, status.Errorf(codes.Internal, "decode stored message: %v", err)
		}
		resp.Messages = append(resp.Messages, m)
	}
	if len(resp.Messages) == n && last != nil {
		t := binary.BigEndian.AppendUint32([]byte{tokenMessages}, last.ts)
		resp.NextPageToken = append(t, last.hash[:]...)
	}
	return resp, nil
}

// listFid pages through fid's messages in store k that keep returns true
// for.
func (h *hubServer) listFid(fid uint64, k kind, keep func(*entry) bool, size *uint32, token []byte, reverse *bool) (*pb.MessagesResponse, error) {
	s := h.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	var entries []*entry
	if f := s.fids[fid]; f != nil {
		entries = f.stores[k].sorted
	}
	return h.page(entries, keep, size, token, reverse)
}

func adds(e *entry) bool { return !e.remove }

func all(*entry) bool { return true }

func inRange(req *pb.FidTimestampRequest) func(*entry) bool {
	return func(e *entry) bool {
		if req.StartTimestamp != nil && uint64(e.ts) < *req.StartTimestamp {
			return false
		}
		if req.StopTimestamp != nil && uint64(e.ts) > *req.StopTimestamp {
			return false
		}
		return true
	}
}

func (h *hubServer) GetCast(_ context.Context, req *pb.CastId) (*pb.Message, error) {
	s := h.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	if f := s.fids[req.Fid]; f != nil {
		if e := f.stores[kindCasts].byKey[string(req.Hash)]; e != nil && !e.remove {
			m := new(pb.Message)
			if err := proto.Unmarshal(e.full(), m); err != nil {
				return nil, status.Errorf(codes.Internal, "decode stored message: %v", err)
			}
			return m, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "cast %d/0x%x not found", req.Fid, req.Hash)
}

func (h *hubServer) GetCastsByFid(_ context.Context, req *pb.FidRequest) (*pb.MessagesResponse, error) {
	return h.listFid(req.Fid, kindCasts, adds, req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetReactionsByFid(_ context.Context, req *pb.ReactionsByFidRequest) (*pb.MessagesResponse, error) {
	keep := adds
	if req.ReactionType != nil && *req.ReactionType != pb.ReactionType_REACTION_TYPE_NONE {
		t := byte(*req.ReactionType)
		keep = func(e *entry) bool { return !e.remove && e.key[0] == t }
	}
	return h.listFid(req.Fid, kindReactions, keep, req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetLinksByFid(_ context.Context, req *pb.LinksByFidRequest) (*pb.MessagesResponse, error) {
	keep := adds
	if req.LinkType != nil && *req.LinkType != "" {
		t := *req.LinkType
		keep = func(e *entry) bool { return !e.remove && e.aux == t }
	}
	return h.listFid(req.Fid, kindLinks, keep, req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetUserDataByFid(_ context.Context, req *pb.FidRequest) (*pb.MessagesResponse, error) {
	return h.listFid(req.Fid, kindUserData, all, req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetVerificationsByFid(_ context.Context, req *pb.FidRequest) (*pb.MessagesResponse, error) {
	return h.listFid(req.Fid, kindVerifications, adds, req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetLinkCompactStateMessageByFid(_ context.Context, req *pb.FidRequest) (*pb.MessagesResponse, error) {
	s := h.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	var entries []*entry
	if f := s.fids[req.Fid]; f != nil {
		for _, cs := range f.compact {
			entries = append(entries, cs.e)
		}
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].less(entries[j]) })
	return h.page(entries, all, req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetAllCastMessagesByFid(_ context.Context, req *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.listFid(req.Fid, kindCasts, inRange(req), req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetAllReactionMessagesByFid(_ context.Context, req *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.listFid(req.Fid, kindReactions, inRange(req), req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetAllVerificationMessagesByFid(_ context.Context, req *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.listFid(req.Fid, kindVerifications, inRange(req), req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetAllUserDataMessagesByFid(_ context.Context, req *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.listFid(req.Fid, kindUserData, inRange(req), req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetAllLinkMessagesByFid(_ context.Context, req *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.listFid(req.Fid, kindLinks, inRange(req), req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetAllLendStorageMessagesByFid(_ context.Context, req *pb.FidTimestampRequest) (*pb.MessagesResponse, error) {
	return h.listFid(req.Fid, kindLends, inRange(req), req.PageSize, req.PageToken, req.Reverse)
}

func (h *hubServer) GetOnChainEvents(_ context.Context, req *pb.OnChainEventRequest) (*pb.OnChainEventResponse, error) {
	s := h.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	resp := &pb.OnChainEventResponse{}
	if f := s.fids[req.Fid]; f != nil {
		for _, ev := range f.onchain[req.EventType] {
			resp.Events = append(resp.Events, proto.Clone(ev).(*pb.OnChainEvent))
		}
	}
	return resp, nil
}

func (h *hubServer) GetIdRegistryOnChainEvent(_ context.Context, req *pb.FidRequest) (*pb.OnChainEvent, error) {
	s := h.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	if f := s.fids[req.Fid]; f != nil {
		if evs := f.onchain[pb.OnChainEventType_EVENT_TYPE_ID_REGISTER]; len(evs) > 0 {
			return proto.Clone(evs[len(evs)-1]).(*pb.OnChainEvent), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no id registration for fid %d", req.Fid)
}

func (h *hubServer) GetUserNameProofsByFid(_ context.Context, req *pb.FidRequest) (*pb.UsernameProofsResponse, error) {
	s := h.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	return &pb.UsernameProofsResponse{Proofs: s.proofsOfLocked(req.Fid)}, nil
}

// proofsOfLocked returns the fid's fname proofs and the proofs of its
// USERNAME_PROOF messages, by name.
func (s *Sim) proofsOfLocked(fid uint64) []*pb.UserNameProof {
	var out []*pb.UserNameProof
	for _, p := range s.names {
		if p.Fid == fid {
			out = append(out, proto.Clone(p).(*pb.UserNameProof))
		}
	}
	if f := s.fids[fid]; f != nil {
		for _, e := range f.stores[kindUsernameProofs].sorted {
			m := new(pb.Message)
			if err := proto.Unmarshal(e.full(), m); err == nil {
				if d, err := messageData(m); err == nil && d.GetUsernameProofBody() != nil {
					out = append(out, d.GetUsernameProofBody())
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i].Name) < string(out[j].Name) })
	return out
}

// messageData returns the data of a stored message, decoding data_bytes
// when they are present since the hash covers those.
func messageData(m *pb.Message) (*pb.MessageData, error) {
	if m.DataBytes == nil {
		return m.Data, nil
	}
	d := new(pb.MessageData)
	if err := proto.Unmarshal(m.DataBytes, d); err != nil {
		return nil, err
	}
	return d, nil
}
