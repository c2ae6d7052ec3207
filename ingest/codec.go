package ingest

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/waypointhq/waypoint/proto"
)

// rawCodec is the gRPC codec of one ingest call (Subscribe, GetEvents or
// GetEvent), passed with grpc.ForceCodecV2 so nothing else in the process
// is affected. For responses carrying HubEvents it keeps each event's wire
// bytes and reads only the routing fields (see parseEvent) instead of
// unmarshalling whole messages that ingest would have to encode again to
// publish. The generated client still hands back a *pb.HubEvent; the codec
// fills its id, type and shard (enough for generic code) and keeps the
// real result in take.
//
// A codec serves one call: gRPC decodes each response on the goroutine that
// called Recv (or Invoke), so the event is picked up right after, without
// locking.
type rawCodec struct {
	ev     *event   // last HubEvent
	events []*event // last EventsResponse's events
}

var _ encoding.CodecV2 = (*rawCodec)(nil)

// callOption selects c for one call.
func (c *rawCodec) callOption() grpc.CallOption { return grpc.ForceCodecV2(c) }

// Name is "proto": the wire format is unchanged, so the content-subtype
// must stay the one every server expects.
func (c *rawCodec) Name() string { return "proto" }

func (c *rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("ingest codec: cannot marshal %T", v)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (c *rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch v := v.(type) {
	case *pb.HubEvent:
		// The buffers are gRPC's and recycled when this returns; the copy
		// is the one allocation an event costs on its way to the bus.
		e := parseEvent(data.Materialize())
		v.Type, v.Id, v.ShardIndex, v.BlockNumber = e.typ, e.id, e.shard, e.block
		c.ev = e
		return nil
	case *pb.EventsResponse:
		b := data.Materialize()
		c.events = c.events[:0]
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				return fmt.Errorf("ingest codec: EventsResponse: %w", errTruncated)
			}
			b = b[n:]
			if typ != protowire.BytesType || (num != 1 && num != 2) {
				if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
					return fmt.Errorf("ingest codec: EventsResponse: %w", errTruncated)
				}
				b = b[n:]
				continue
			}
			f, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("ingest codec: EventsResponse: %w", errTruncated)
			}
			b = b[n:]
			if num == 1 {
				c.events = append(c.events, parseEvent(f))
			} else {
				v.NextPageToken = f
			}
		}
		return nil
	case proto.Message:
		return proto.Unmarshal(data.Materialize(), v)
	}
	return fmt.Errorf("ingest codec: cannot unmarshal into %T", v)
}

// take returns the event decoded by the last Recv or Invoke. When the call
// did not go through the codec (a client that ignores call options), it
// falls back to encoding the decoded message.
func (c *rawCodec) take(decoded *pb.HubEvent) *event {
	if e := c.ev; e != nil {
		c.ev = nil
		return e
	}
	b, err := proto.Marshal(decoded)
	if err != nil {
		return &event{typ: decoded.GetType(), id: decoded.GetId(), err: err}
	}
	return parseEvent(b)
}

// takeEvents returns the events of the last EventsResponse, with the same
// fallback as take.
func (c *rawCodec) takeEvents(decoded *pb.EventsResponse) []*event {
	if len(c.events) > 0 || len(decoded.GetEvents()) == 0 {
		out := c.events
		c.events = nil
		return out
	}
	out := make([]*event, 0, len(decoded.GetEvents()))
	for _, ev := range decoded.GetEvents() {
		b, err := proto.Marshal(ev)
		if err != nil {
			out = append(out, &event{typ: ev.GetType(), id: ev.GetId(), err: err})
			continue
		}
		out = append(out, parseEvent(b))
	}
	return out
}
