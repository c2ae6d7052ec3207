package ingest

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/waypointhq/waypoint/proto"
)

func msgWith(fid uint64, hash byte, viaDataBytes bool) *pb.Message {
	data := &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD, Fid: fid, Timestamp: 100, Network: pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET,
		Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: "hello"}}}
	m := &pb.Message{Hash: bytes.Repeat([]byte{hash}, 20), HashScheme: pb.HashScheme_HASH_SCHEME_BLAKE3, Signer: make([]byte, 32), Signature: make([]byte, 64)}
	if viaDataBytes {
		b, _ := proto.Marshal(data)
		m.DataBytes = b
	} else {
		m.Data = data
	}
	return m
}

func h(b byte) []byte { return bytes.Repeat([]byte{b}, 20) }

func TestParseEvent(t *testing.T) {
	tests := []struct {
		name    string
		ev      *pb.HubEvent
		fid     uint64
		hasFID  bool
		hashes  [][]byte
		confirm bool
	}{
		{
			name: "merge with deletes",
			ev: &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, Id: 5<<14 | 2, BlockNumber: 5, ShardIndex: 1,
				Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: msgWith(77, 1, false), DeletedMessages: []*pb.Message{msgWith(77, 2, false), msgWith(77, 3, true)}}}},
			fid: 77, hasFID: true, hashes: [][]byte{h(1), h(2), h(3)},
		},
		{
			name: "fid from data_bytes",
			ev: &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_PRUNE_MESSAGE, Id: 9, ShardIndex: 2,
				Body: &pb.HubEvent_PruneMessageBody{PruneMessageBody: &pb.PruneMessageBody{Message: msgWith(123456789, 4, true)}}},
			fid: 123456789, hasFID: true, hashes: [][]byte{h(4)},
		},
		{
			name: "revoke",
			ev: &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_REVOKE_MESSAGE, Id: 10,
				Body: &pb.HubEvent_RevokeMessageBody{RevokeMessageBody: &pb.RevokeMessageBody{Message: msgWith(3, 5, false)}}},
			fid: 3, hasFID: true, hashes: [][]byte{h(5)},
		},
		{
			name: "on-chain event",
			ev: &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_ON_CHAIN_EVENT, Id: 11,
				Body: &pb.HubEvent_MergeOnChainEventBody{MergeOnChainEventBody: &pb.MergeOnChainEventBody{OnChainEvent: &pb.OnChainEvent{Type: pb.OnChainEventType_EVENT_TYPE_ID_REGISTER, Fid: 4242, TransactionHash: h(9)}}}},
			fid: 4242, hasFID: true,
		},
		{
			name: "fname proof",
			ev: &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF, Id: 12,
				Body: &pb.HubEvent_MergeUsernameProofBody{MergeUsernameProofBody: &pb.MergeUserNameProofBody{UsernameProof: &pb.UserNameProof{Name: []byte("alice"), Fid: 8}}}},
			fid: 8, hasFID: true,
		},
		{
			name: "fname transfer away (fid 0) belongs to the previous owner",
			ev: &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF, Id: 13,
				Body: &pb.HubEvent_MergeUsernameProofBody{MergeUsernameProofBody: &pb.MergeUserNameProofBody{
					UsernameProof:        &pb.UserNameProof{Name: []byte("alice"), Fid: 0},
					DeletedUsernameProof: &pb.UserNameProof{Name: []byte("alice"), Fid: 8},
				}}},
			fid: 8, hasFID: true,
		},
		{
			name: "username proof message",
			ev: &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF, Id: 14,
				Body: &pb.HubEvent_MergeUsernameProofBody{MergeUsernameProofBody: &pb.MergeUserNameProofBody{
					UsernameProof:        &pb.UserNameProof{Name: []byte("bob.eth"), Fid: 21},
					UsernameProofMessage: msgWith(21, 6, false),
				}}},
			fid: 21, hasFID: true, hashes: [][]byte{h(6)},
		},
		{
			name: "block confirmed",
			ev: &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED, Id: 7 << 14, BlockNumber: 7, ShardIndex: 1,
				Body: &pb.HubEvent_BlockConfirmedBody{BlockConfirmedBody: &pb.BlockConfirmedBody{BlockNumber: 7, ShardIndex: 1, TotalEvents: 4,
					EventCountsByType: map[int32]uint64{1: 2, 11: 1, 10: 1}}}},
			confirm: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := proto.Marshal(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			e := parseEvent(raw)
			if e.err != nil {
				t.Fatal(e.err)
			}
			if e.typ != tt.ev.Type || e.id != tt.ev.Id || e.block != tt.ev.BlockNumber || e.shard != tt.ev.ShardIndex {
				t.Fatalf("header fields: %+v", e)
			}
			if e.fid != tt.fid || e.hasFID != tt.hasFID {
				t.Fatalf("fid %d/%v, want %d/%v", e.fid, e.hasFID, tt.fid, tt.hasFID)
			}
			if len(e.hashes) != len(tt.hashes) {
				t.Fatalf("hashes %x, want %x", e.hashes, tt.hashes)
			}
			for i := range e.hashes {
				if !bytes.Equal(e.hashes[i], tt.hashes[i]) {
					t.Fatalf("hash %d = %x, want %x", i, e.hashes[i], tt.hashes[i])
				}
			}
			if tt.confirm {
				if e.confirm == nil || e.confirm.total != 4 || e.confirm.byType[1] != 2 || e.confirm.byType[11] != 1 || e.confirm.byType[10] != 1 {
					t.Fatalf("confirm %+v", e.confirm)
				}
			}
			if !bytes.Equal(e.data, raw) {
				t.Fatal("data is not the received bytes")
			}
		})
	}
}

func TestParseEventMalformed(t *testing.T) {
	good, _ := proto.Marshal(&pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, Id: 99,
		Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: msgWith(5, 1, false)}}})
	for _, raw := range [][]byte{
		good[:len(good)-3],
		{0xff, 0xff, 0xff},
		append([]byte{0x08}, 0xff), // truncated varint
		{0x1a, 0x05, 0x0a, 0x10},   // body claims more bytes than it has
	} {
		e := parseEvent(raw)
		if e.err == nil {
			t.Errorf("parseEvent(%x) accepted malformed bytes", raw)
		}
	}
	if e := parseEvent(nil); e.err != nil || e.id != 0 {
		t.Errorf("empty event: %+v", e)
	}
}

func TestCodecKeepsBytes(t *testing.T) {
	ev := &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, Id: 1<<14 | 1, BlockNumber: 1, ShardIndex: 1,
		Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: msgWith(5, 1, true)}}}
	raw, _ := proto.Marshal(ev)
	c := &rawCodec{}
	var got pb.HubEvent
	// Split across buffers as gRPC may deliver it.
	data := mem.BufferSlice{mem.SliceBuffer(raw[:7]), mem.SliceBuffer(raw[7:])}
	if err := c.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Id != ev.Id || got.Type != ev.Type {
		t.Fatalf("decoded %+v", &got)
	}
	e := c.take(&got)
	if !bytes.Equal(e.data, raw) || e.fid != 5 {
		t.Fatalf("event %+v", e)
	}
	// A call that bypassed the codec falls back to encoding the message.
	e = c.take(ev)
	if !bytes.Equal(e.data, raw) {
		t.Fatal("fallback re-encoding differs")
	}

	var resp pb.EventsResponse
	var b []byte
	for i := range 3 {
		one, _ := proto.Marshal(&pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, Id: uint64(i + 1)})
		b = append(b, 0x0a, byte(len(one)))
		b = append(b, one...)
	}
	b = append(b, 0x12, 2, 'p', 't')
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &resp); err != nil {
		t.Fatal(err)
	}
	evs := c.takeEvents(&resp)
	if len(evs) != 3 || evs[2].id != 3 || string(resp.NextPageToken) != "pt" {
		t.Fatalf("events response: %d events, token %q", len(evs), resp.NextPageToken)
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x09})}, &resp); err == nil {
		t.Fatal("truncated EventsResponse accepted")
	}
	out, err := c.Marshal(&pb.SubscribeRequest{FromId: proto.Uint64(3)})
	if err != nil || len(out.Materialize()) == 0 {
		t.Fatalf("marshal request: %v", err)
	}
	if _, err := c.Marshal(42); err == nil {
		t.Fatal("marshal of a non-message accepted")
	}
}
