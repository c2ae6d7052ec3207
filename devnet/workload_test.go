package devnet_test

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// workload is a preloaded generated workload that no live block touches
// while a test reads it: hour-long blocks.
var workload = devnet.Options{
	Seed: 42, FIDs: 40, Preload: 10000, Rate: 0.5, BlockInterval: time.Hour, Retention: 100000 * time.Hour,
}

func allEvents(t *testing.T, c pb.HubServiceClient, shards uint32) []*pb.HubEvent {
	t.Helper()
	var out []*pb.HubEvent
	for shard := uint32(1); shard <= shards; shard++ {
		var token []byte
		for {
			resp, err := c.GetEvents(context.Background(), &pb.EventsRequest{ShardIndex: &shard, PageSize: u32(5000), PageToken: token})
			if err != nil {
				t.Fatalf("GetEvents: %v", err)
			}
			out = append(out, resp.Events...)
			if token = resp.NextPageToken; len(token) == 0 {
				break
			}
		}
	}
	return out
}

// TestWorkload checks that the generated traffic is valid and covers what
// it should, and that the stream, the reads and the ground truth agree.
func TestWorkload(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, workload)
	evs := allEvents(t, c, 2)
	if len(evs) < workload.Preload {
		t.Fatalf("%d events, want the preload of %d", len(evs), workload.Preload)
	}

	t.Run("subscribe and GetEvents agree", func(t *testing.T) {
		var fromGet []*pb.HubEvent
		for _, ev := range evs {
			if ev.ShardIndex == 1 {
				fromGet = append(fromGet, ev)
			}
		}
		streamed := replay(t, c, 1, 0)
		if len(streamed) != len(fromGet) {
			t.Fatalf("subscribe replayed %d events, GetEvents returned %d", len(streamed), len(fromGet))
		}
		for i := range streamed {
			if !proto.Equal(streamed[i], fromGet[i]) {
				t.Fatalf("event %d differs between Subscribe and GetEvents", streamed[i].Id)
			}
		}
	})

	t.Run("every message validates", func(t *testing.T) {
		n := 0
		for _, ev := range evs {
			msg, deleted := eventMessage(ev)
			for _, m := range append(deleted, msg) {
				if m == nil {
					continue
				}
				n++
				if err := message.Validate(m, message.CheckFull, pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET); err != nil {
					t.Fatalf("event %d: %v", ev.Id, err)
				}
				if m.DataBytes == nil {
					t.Fatalf("event %d: message without data_bytes", ev.Id)
				}
			}
		}
		if n < workload.Preload/2 {
			t.Errorf("only %d messages in %d events", n, len(evs))
		}
	})

	t.Run("coverage", func(t *testing.T) {
		events := map[pb.HubEventType]int{}
		messages := map[string]int{}
		onchain := map[pb.OnChainEventType]int{}
		for _, ev := range evs {
			events[ev.Type]++
			if b := ev.GetMergeOnChainEventBody(); b != nil {
				onchain[b.OnChainEvent.Type]++
			}
			m := ev.GetMergeMessageBody().GetMessage()
			if m == nil {
				continue
			}
			d := m.Data
			messages[d.Type.String()]++
			switch b := d.Body.(type) {
			case *pb.MessageData_CastAddBody:
				cb := b.CastAddBody
				if !utf8.ValidString(cb.Text) {
					t.Errorf("cast text is not UTF-8: %q", cb.Text)
				}
				if len(cb.Text) != utf8.RuneCountInString(cb.Text) {
					messages["unicode cast"]++
				}
				if len(cb.Mentions) != len(cb.MentionsPositions) {
					t.Errorf("cast with %d mentions and %d positions", len(cb.Mentions), len(cb.MentionsPositions))
				}
				for _, p := range cb.MentionsPositions {
					if int(p) > len(cb.Text) {
						t.Errorf("mention at byte %d of a %d-byte text", p, len(cb.Text))
					}
				}
				if len(cb.Mentions) > 0 {
					messages["mention"]++
				}
				if cb.GetParentCastId() != nil {
					messages["reply"]++
				}
				if cb.GetParentUrl() != "" {
					messages["channel"]++
				}
				for _, e := range cb.Embeds {
					if e.GetUrl() != "" {
						messages["url embed"]++
					} else if e.GetCastId() != nil {
						messages["cast embed"]++
					}
				}
				limit := map[pb.CastType]int{pb.CastType_CAST: 320, pb.CastType_LONG_CAST: 1024, pb.CastType_TEN_K_CAST: 10000}[cb.Type]
				if len(cb.Text) > limit {
					t.Errorf("%v of %d bytes", cb.Type, len(cb.Text))
				}
				if cb.Type == pb.CastType_LONG_CAST {
					messages["long cast"]++
				}
				if strings.ContainsAny(cb.Text, "🚀🔥💜") {
					messages["emoji"]++
				}
			case *pb.MessageData_VerificationAddAddressBody:
				messages["verification "+b.VerificationAddAddressBody.Protocol.String()]++
			case *pb.MessageData_UserDataBody:
				messages[b.UserDataBody.Type.String()]++
			case *pb.MessageData_ReactionBody:
				messages[b.ReactionBody.Type.String()]++
			}
		}
		for _, typ := range allTypes {
			if events[typ] == 0 {
				t.Errorf("no %v events", typ)
			}
		}
		for _, typ := range []pb.OnChainEventType{pb.OnChainEventType_EVENT_TYPE_ID_REGISTER, pb.OnChainEventType_EVENT_TYPE_SIGNER,
			pb.OnChainEventType_EVENT_TYPE_STORAGE_RENT, pb.OnChainEventType_EVENT_TYPE_TIER_PURCHASE} {
			if onchain[typ] == 0 {
				t.Errorf("no %v on-chain events", typ)
			}
		}
		for _, want := range []string{"MESSAGE_TYPE_CAST_ADD", "MESSAGE_TYPE_CAST_REMOVE", "MESSAGE_TYPE_REACTION_ADD",
			"MESSAGE_TYPE_REACTION_REMOVE", "MESSAGE_TYPE_LINK_ADD", "MESSAGE_TYPE_LINK_REMOVE", "MESSAGE_TYPE_LINK_COMPACT_STATE",
			"MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS", "MESSAGE_TYPE_VERIFICATION_REMOVE", "MESSAGE_TYPE_USER_DATA_ADD",
			"MESSAGE_TYPE_LEND_STORAGE", "MESSAGE_TYPE_KEY_ADD", "MESSAGE_TYPE_KEY_REMOVE",
			"USER_DATA_TYPE_USERNAME", "USER_DATA_PRIMARY_ADDRESS_ETHEREUM", "USER_DATA_PRIMARY_ADDRESS_SOLANA",
			"verification PROTOCOL_ETHEREUM", "verification PROTOCOL_SOLANA", "REACTION_TYPE_LIKE", "REACTION_TYPE_RECAST",
			"unicode cast", "emoji", "mention", "reply", "channel", "url embed", "cast embed", "long cast"} {
			if messages[want] == 0 {
				t.Errorf("no %s in the workload", want)
			}
		}
		t.Logf("events %v", events)
		t.Logf("messages %v", messages)
	})

	st := sim.State()
	t.Run("stream replays to the state", func(t *testing.T) {
		got := applyStream(evs)
		want := map[string]bool{}
		for _, side := range []map[devnet.Store]map[uint64][]*pb.Message{st.Messages, st.Removes} {
			for _, byFid := range side {
				for _, ms := range byFid {
					for _, m := range ms {
						want[hexOf(m)] = true
					}
				}
			}
		}
		var missing, extra []string
		for h := range want {
			if !got[h] {
				missing = append(missing, h)
			}
		}
		for h := range got {
			if !want[h] {
				extra = append(extra, h)
			}
		}
		if len(missing) > 0 || len(extra) > 0 {
			t.Errorf("replaying the stream: %d messages missing, %d extra (of %d)", len(missing), len(extra), len(want))
		}
	})

	t.Run("reads match the state", func(t *testing.T) {
		ctx := context.Background()
		hashes := func(ms []*pb.Message) []string {
			var out []string
			for _, m := range ms {
				out = append(out, hexOf(m))
			}
			sort.Strings(out)
			return out
		}
		type read func(fid uint64) ([]*pb.Message, error)
		reads := map[devnet.Store]read{
			devnet.StoreCasts: func(fid uint64) ([]*pb.Message, error) {
				r, err := c.GetCastsByFid(ctx, &pb.FidRequest{Fid: fid})
				return r.GetMessages(), err
			},
			devnet.StoreReactions: func(fid uint64) ([]*pb.Message, error) {
				r, err := c.GetReactionsByFid(ctx, &pb.ReactionsByFidRequest{Fid: fid})
				return r.GetMessages(), err
			},
			devnet.StoreLinks: func(fid uint64) ([]*pb.Message, error) {
				r, err := c.GetLinksByFid(ctx, &pb.LinksByFidRequest{Fid: fid})
				return r.GetMessages(), err
			},
			devnet.StoreVerifications: func(fid uint64) ([]*pb.Message, error) {
				r, err := c.GetVerificationsByFid(ctx, &pb.FidRequest{Fid: fid})
				return r.GetMessages(), err
			},
			devnet.StoreUserData: func(fid uint64) ([]*pb.Message, error) {
				r, err := c.GetUserDataByFid(ctx, &pb.FidRequest{Fid: fid})
				return r.GetMessages(), err
			},
			devnet.StoreLinkCompactState: func(fid uint64) ([]*pb.Message, error) {
				r, err := c.GetLinkCompactStateMessageByFid(ctx, &pb.FidRequest{Fid: fid})
				return r.GetMessages(), err
			},
		}
		allReads := map[devnet.Store]func(context.Context, *pb.FidTimestampRequest, ...grpc.CallOption) (*pb.MessagesResponse, error){
			devnet.StoreCasts: c.GetAllCastMessagesByFid, devnet.StoreReactions: c.GetAllReactionMessagesByFid,
			devnet.StoreLinks: c.GetAllLinkMessagesByFid, devnet.StoreVerifications: c.GetAllVerificationMessagesByFid,
			devnet.StoreUserData: c.GetAllUserDataMessagesByFid, devnet.StoreLendStorage: c.GetAllLendStorageMessagesByFid,
		}
		for fid := uint64(1); fid <= uint64(workload.FIDs); fid++ {
			for store, r := range reads {
				ms, err := r(fid)
				if err != nil {
					t.Fatalf("%s of fid %d: %v", store, fid, err)
				}
				for _, m := range ms {
					if err := message.Validate(m, message.CheckFull, pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET); err != nil {
						t.Fatalf("%s of fid %d: %v", store, fid, err)
					}
				}
				if got, want := hashes(ms), hashes(st.Messages[store][fid]); !slices.Equal(got, want) {
					t.Errorf("%s of fid %d: read %d messages, state has %d", store, fid, len(got), len(want))
				}
			}
			for store, r := range allReads {
				resp, err := r(ctx, &pb.FidTimestampRequest{Fid: fid})
				if err != nil {
					t.Fatalf("all %s of fid %d: %v", store, fid, err)
				}
				want := hashes(append(slices.Clone(st.Messages[store][fid]), st.Removes[store][fid]...))
				if got := hashes(resp.Messages); !slices.Equal(got, want) {
					t.Errorf("all %s of fid %d: read %d messages, state has %d", store, fid, len(got), len(want))
				}
				for i := 1; i < len(resp.Messages); i++ {
					a, b := resp.Messages[i-1], resp.Messages[i]
					if a.Data.Timestamp > b.Data.Timestamp || a.Data.Timestamp == b.Data.Timestamp && bytes.Compare(a.Hash, b.Hash) > 0 {
						t.Fatalf("all %s of fid %d not in (timestamp, hash) order", store, fid)
					}
				}
			}
			proofs, err := c.GetUserNameProofsByFid(ctx, &pb.FidRequest{Fid: fid})
			if err != nil || len(proofs.Proofs) != len(st.UsernameProofs[fid]) {
				t.Errorf("proofs of fid %d: %d, state has %d (%v)", fid, len(proofs.GetProofs()), len(st.UsernameProofs[fid]), err)
			}
			for typ, byFid := range st.OnChainEvents {
				resp, err := c.GetOnChainEvents(ctx, &pb.OnChainEventRequest{Fid: fid, EventType: typ, PageSize: u32(1)})
				if err != nil || len(resp.Events) != len(byFid[fid]) {
					t.Errorf("%v of fid %d: %d, state has %d (%v)", typ, fid, len(resp.GetEvents()), len(byFid[fid]), err)
				}
			}
		}
		var fids []uint64
		for shard := uint32(1); shard <= 2; shard++ {
			resp, err := c.GetFids(ctx, &pb.FidsRequest{ShardId: shard})
			if err != nil {
				t.Fatal(err)
			}
			for _, fid := range resp.Fids {
				if sim.ShardFor(fid) != shard {
					t.Errorf("GetFids(%d) lists fid %d of shard %d", shard, fid, sim.ShardFor(fid))
				}
			}
			fids = append(fids, resp.Fids...)
		}
		if len(fids) != len(st.OnChainEvents[pb.OnChainEventType_EVENT_TYPE_ID_REGISTER]) {
			t.Errorf("GetFids lists %d fids, %d registered", len(fids), len(st.OnChainEvents[pb.OnChainEventType_EVENT_TYPE_ID_REGISTER]))
		}
		info, err := c.GetInfo(ctx, &pb.GetInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if info.NumShards != 2 || len(info.ShardInfos) != 3 || info.ShardInfos[0].ShardId != 0 {
			t.Fatalf("GetInfo: %v", info)
		}
		for _, si := range info.ShardInfos[1:] {
			if si.MaxHeight != sim.Height(si.ShardId) || si.MaxHeight == 0 || si.NumMessages == 0 {
				t.Errorf("shard info %v, height %d", si, sim.Height(si.ShardId))
			}
		}
		if int(info.DbStats.NumFidRegistrations) != len(fids) {
			t.Errorf("GetInfo counts %d registrations, GetFids %d", info.DbStats.NumFidRegistrations, len(fids))
		}
	})
}

// applyStream is a minimal consumer: it applies merges, deleted messages,
// prunes, revokes and compact states, and returns the hashes left.
func applyStream(evs []*pb.HubEvent) map[string]bool {
	live := map[string]*pb.Message{}
	for _, ev := range evs {
		switch b := ev.Body.(type) {
		case *pb.HubEvent_MergeMessageBody:
			for _, d := range b.MergeMessageBody.DeletedMessages {
				delete(live, hexOf(d))
			}
			m := b.MergeMessageBody.Message
			if cs := m.Data.GetLinkCompactStateBody(); cs != nil {
				for h, l := range live {
					ld := l.Data
					if ld.Fid != m.Data.Fid || ld.Timestamp > m.Data.Timestamp {
						continue
					}
					if ld.GetLinkCompactStateBody().GetType() == cs.Type {
						delete(live, h)
					}
					if lb := ld.GetLinkBody(); lb != nil && lb.Type == cs.Type && ld.Timestamp < m.Data.Timestamp &&
						(ld.Type == pb.MessageType_MESSAGE_TYPE_LINK_REMOVE || !slices.Contains(cs.TargetFids, lb.GetTargetFid())) {
						delete(live, h)
					}
				}
			}
			live[hexOf(m)] = m
		case *pb.HubEvent_PruneMessageBody:
			delete(live, hexOf(b.PruneMessageBody.Message))
		case *pb.HubEvent_RevokeMessageBody:
			delete(live, hexOf(b.RevokeMessageBody.Message))
		}
	}
	out := map[string]bool{}
	for h := range live {
		out[h] = true
	}
	return out
}

// rawCodec receives messages as their wire bytes.
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

func eventBytes(t *testing.T, opts devnet.Options) ([][]byte, string) {
	t.Helper()
	sim, addr := testsupport.StartDevnet(t, opts)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	codec := rawCodec{encoding.GetCodecV2("proto")}
	var pages [][]byte
	for shard := uint32(1); shard <= opts.Shards; shard++ {
		var raw []byte
		err := conn.Invoke(context.Background(), "/HubService/GetEvents",
			&pb.EventsRequest{ShardIndex: &shard, PageSize: u32(1 << 20)}, &raw, grpc.ForceCodecV2(codec))
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, raw)
	}
	var dump strings.Builder
	if err := sim.DumpState(&dump); err != nil {
		t.Fatal(err)
	}
	return pages, dump.String()
}

func TestDeterminism(t *testing.T) {
	t.Parallel()
	opts := devnet.Options{Seed: 9, FIDs: 25, Preload: 5000, Rate: 0.02, BlockInterval: time.Hour, Retention: 100000 * time.Hour, Shards: 2}
	a, dumpA := eventBytes(t, opts)
	b, dumpB := eventBytes(t, opts)
	for i := range a {
		if len(a[i]) < 100000 {
			t.Fatalf("shard %d: only %d bytes of events", i+1, len(a[i]))
		}
		if !bytes.Equal(a[i], b[i]) {
			t.Errorf("shard %d: two runs with seed %d differ", i+1, opts.Seed)
		}
	}
	if dumpA != dumpB || strings.Count(dumpA, "\n") < 500 {
		t.Errorf("state dumps differ or are small (%d lines)", strings.Count(dumpA, "\n"))
	}
	opts.Seed++
	c, _ := eventBytes(t, opts)
	if bytes.Equal(a[0], c[0]) {
		t.Error("a different seed produced the same events")
	}
	t.Logf("first state line: %s", dumpA[:strings.IndexByte(dumpA, '\n')])
}

// blockBytes returns the wire bytes of the shard's events in blocks
// 1..blocks, waiting for them to be produced.
func blockBytes(t *testing.T, addr string, shard uint32, blocks uint64) []byte {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewHubServiceClient(conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := c.GetInfo(context.Background(), &pb.GetInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if info.ShardInfos[shard].MaxHeight > blocks {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shard %d at height %d, want %d", shard, info.ShardInfos[shard].MaxHeight, blocks)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var raw []byte
	err = conn.Invoke(context.Background(), "/HubService/GetEvents",
		&pb.EventsRequest{ShardIndex: &shard, StopId: u64(devnet.EventID(blocks+1, 0)), PageSize: u32(1 << 20)},
		&raw, grpc.ForceCodecV2(rawCodec{encoding.GetCodecV2("proto")}))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestLiveMatchesPreload: the live workload produces, block for block, the
// bytes a preload of the same options does; the wall clock only decides
// when they appear.
func TestLiveMatchesPreload(t *testing.T) {
	t.Parallel()
	opts := devnet.Options{Seed: 5, FIDs: 10, Rate: 1000, BlockInterval: 10 * time.Millisecond}
	live, liveAddr := testsupport.StartDevnet(t, opts)
	opts.Preload = 1000
	_, preAddr := testsupport.StartDevnet(t, opts)
	const blocks = 40
	for shard := uint32(1); shard <= 2; shard++ {
		a, b := blockBytes(t, preAddr, shard, blocks), blockBytes(t, liveAddr, shard, blocks)
		if len(a) < 10000 || !bytes.Equal(a, b) {
			t.Errorf("shard %d: blocks 1..%d differ between preload (%d bytes) and live (%d bytes)", shard, blocks, len(a), len(b))
		}
	}
	if live.Height(0) < blocks {
		t.Errorf("block shard at height %d", live.Height(0))
	}
}

// TestLiveWorkloadWithoutBlockInterval runs the workload with a block per
// step, paced by Rate, and stops it after Duration.
func TestLiveWorkloadWithoutBlockInterval(t *testing.T) {
	t.Parallel()
	sim, c := dial(t, devnet.Options{Seed: 8, FIDs: 10, Rate: 400, Duration: 500 * time.Millisecond})
	shard := uint32(1)
	es := openStream(t, c, &pb.SubscribeRequest{EventTypes: allTypes, ShardIndex: &shard})
	evs := es.drain(time.Second)
	msgs := withoutBlocks(evs)
	if len(msgs) < 20 {
		t.Fatalf("live workload delivered %d events", len(msgs))
	}
	for _, ev := range msgs {
		m, _ := eventMessage(ev)
		if m != nil {
			if err := message.Validate(m, message.CheckFull, pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET); err != nil {
				t.Fatalf("event %d: %v", ev.Id, err)
			}
		}
	}
	h := sim.Height(1)
	time.Sleep(200 * time.Millisecond)
	if sim.Height(1) != h {
		t.Errorf("blocks still produced after the workload's duration: %d then %d", h, sim.Height(1))
	}
}
