package message_test

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// FuzzDecodeValidate feeds arbitrary bytes through decoding and validation as
// ingest does with what arrives off the wire: as a Message, and as a HubEvent
// whose messages are then validated. Nothing may panic, and every rejection
// must be a *message.Error with a reason a dead letter can record.
func FuzzDecodeValidate(f *testing.F) {
	for _, g := range goldenVectors() {
		b := unhex(f, g.want.messageBytes)
		f.Add(b)
		m, err := message.Decode(b)
		if err != nil {
			f.Fatal(err)
		}
		ev, err := proto.Marshal(&pb.HubEvent{
			Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
			Id:   1 << 14,
			Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{
				Message: m, DeletedMessages: []*pb.Message{m},
			}},
			ShardIndex: 1,
		})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ev)
	}
	f.Add([]byte{})
	f.Add([]byte{0x3a, 0x00})             // empty data_bytes
	f.Add([]byte{0x0a, 0x02, 0x2a, 0x00}) // data with an empty cast body

	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := message.Decode(b)
		if err != nil {
			if r := message.ReasonOf(err); r != message.ReasonDecode {
				t.Fatalf("decode failure classified as %q: %v", r, err)
			}
		} else {
			checkMessage(t, m)
		}
		var ev pb.HubEvent
		if proto.Unmarshal(b, &ev) == nil {
			for _, m := range eventMessages(&ev) {
				checkMessage(t, m)
			}
		}
	})
}

func checkMessage(t *testing.T, m *pb.Message) {
	t.Helper()
	networks := []pb.FarcasterNetwork{
		pb.FarcasterNetwork_FARCASTER_NETWORK_NONE,
		pb.FarcasterNetwork_FARCASTER_NETWORK_MAINNET,
		pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET,
	}
	for _, mode := range []message.Mode{message.CheckNone, message.CheckHash, message.CheckFull} {
		for _, network := range networks {
			err := message.Validate(m, mode, network)
			if err == nil {
				if mode != message.CheckNone {
					// Accepted data must be readable.
					if _, err := message.Data(m); err != nil {
						t.Fatalf("Validate(%v) accepted a message whose data cannot be read: %v", mode, err)
					}
				}
				continue
			}
			var ve *message.Error
			if !errors.As(err, &ve) {
				t.Fatalf("Validate(%v, %v) returned %T %v, want *message.Error", mode, network, err, err)
			}
			if ve.Reason == "" || ve.Error() == "" {
				t.Fatalf("Validate(%v, %v) returned an error without a reason: %#v", mode, network, ve)
			}
		}
	}
	if _, err := message.Data(m); err != nil && message.ReasonOf(err) == "" {
		t.Fatalf("Data returned unclassified error %v", err)
	}
	// The canonical fallback encoding must decode back to the same data.
	if m.GetData() != nil {
		b, err := message.DataBytes(&pb.Message{Data: m.Data})
		if err != nil {
			t.Fatalf("canonical encoding failed: %v", err)
		}
		back := new(pb.MessageData)
		if err := proto.Unmarshal(b, back); err != nil {
			t.Fatalf("canonical encoding %x does not decode: %v", b, err)
		}
		if !proto.Equal(back, m.Data) {
			t.Fatalf("canonical encoding round trip:\n got %v\nwant %v", back, m.Data)
		}
	}
}

func eventMessages(ev *pb.HubEvent) []*pb.Message {
	var ms []*pb.Message
	switch b := ev.Body.(type) {
	case *pb.HubEvent_MergeMessageBody:
		ms = append(ms, b.MergeMessageBody.GetMessage())
		ms = append(ms, b.MergeMessageBody.GetDeletedMessages()...)
	case *pb.HubEvent_PruneMessageBody:
		ms = append(ms, b.PruneMessageBody.GetMessage())
	case *pb.HubEvent_RevokeMessageBody:
		ms = append(ms, b.RevokeMessageBody.GetMessage())
	case *pb.HubEvent_MergeFailure:
		ms = append(ms, b.MergeFailure.GetMessage())
	case *pb.HubEvent_MergeUsernameProofBody:
		ms = append(ms, b.MergeUsernameProofBody.GetUsernameProofMessage(), b.MergeUsernameProofBody.GetDeletedUsernameProofMessage())
	}
	return ms
}
