package ingest

import (
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	pb "github.com/waypointhq/waypoint/proto"
)

// benchEvents are typical events: a cast merge that deleted a message, a
// reaction and a link merge, and a block confirmation.
func benchEvents() [][]byte {
	cast := msgWith(1234, 1, true)
	evs := []*pb.HubEvent{
		{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, Id: 1<<14 | 1, BlockNumber: 1, ShardIndex: 1, Timestamp: 1,
			Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: cast, DeletedMessages: []*pb.Message{msgWith(1234, 2, true)}}}},
		{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, Id: 1<<14 | 2, BlockNumber: 1, ShardIndex: 1, Timestamp: 1,
			Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: msgWith(99, 3, true)}}},
		{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, Id: 1<<14 | 3, BlockNumber: 1, ShardIndex: 1, Timestamp: 1,
			Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: msgWith(7, 4, true)}}},
		{Type: pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED, Id: 2 << 14, BlockNumber: 2, ShardIndex: 1,
			Body: &pb.HubEvent_BlockConfirmedBody{BlockConfirmedBody: &pb.BlockConfirmedBody{BlockNumber: 2, ShardIndex: 1, TotalEvents: 3, EventCountsByType: map[int32]uint64{1: 2, 11: 1}}}},
	}
	out := make([][]byte, len(evs))
	for i, ev := range evs {
		out[i], _ = proto.Marshal(ev)
	}
	return out
}

// BenchmarkReceiveRaw is what the ingest codec does per event: copy the
// received bytes and read the routing fields.
func BenchmarkReceiveRaw(b *testing.B) {
	evs := benchEvents()
	c := &rawCodec{}
	var n int
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		raw := evs[i%len(evs)]
		var m pb.HubEvent
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(raw)}, &m); err != nil {
			b.Fatal(err)
		}
		e := c.take(&m)
		n += len(e.data)
	}
	b.SetBytes(int64(n / max(b.N, 1)))
}

// BenchmarkReceiveDecodeReencode is the alternative: unmarshal the whole
// event with the generated code, read the same fields, and marshal it
// again to publish.
func BenchmarkReceiveDecodeReencode(b *testing.B) {
	evs := benchEvents()
	var n int
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		raw := evs[i%len(evs)]
		var m pb.HubEvent
		if err := proto.Unmarshal(raw, &m); err != nil {
			b.Fatal(err)
		}
		var fid uint64
		var hashes [][]byte
		if mm := m.GetMergeMessageBody(); mm != nil {
			fid = mm.GetMessage().GetData().GetFid()
			if fid == 0 && len(mm.GetMessage().GetDataBytes()) > 0 {
				var d pb.MessageData
				if err := proto.Unmarshal(mm.GetMessage().GetDataBytes(), &d); err != nil {
					b.Fatal(err)
				}
				fid = d.Fid
			}
			hashes = append(hashes, mm.GetMessage().GetHash())
			for _, d := range mm.GetDeletedMessages() {
				hashes = append(hashes, d.GetHash())
			}
		}
		_, _ = fid, hashes
		out, err := proto.Marshal(&m)
		if err != nil {
			b.Fatal(err)
		}
		n += len(out)
	}
	b.SetBytes(int64(n / max(b.N, 1)))
}
