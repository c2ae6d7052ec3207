package bus

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"

	pb "github.com/waypointhq/waypoint/proto"
)

// Message headers. The payload of every message is the HubEvent exactly as
// the node sent it over gRPC (its wire bytes, never re-encoded), so a
// consumer decodes it with the same generated code and message hashes can be
// checked over the original data_bytes. The headers repeat what routing and
// deduplication need, so consumers can filter and dedupe without decoding.
// They are kept short: the server scans the header block for its own
// headers on every publish, so its size costs throughput.
const (
	// HeaderShard is the shard index, decimal.
	HeaderShard = "Waypoint-Shard"
	// HeaderEventID is the event id, decimal; unique per shard only.
	HeaderEventID = "Waypoint-Event-Id"
	// HeaderEventType is the HubEventType name without its
	// HUB_EVENT_TYPE_ prefix, e.g. MERGE_MESSAGE (a number for types this
	// build does not know). The block number is not a header: it is
	// id >> 14.
	HeaderEventType = "Waypoint-Event-Type"
	// HeaderFID is the FID the event is routed by, decimal; absent on
	// block events.
	HeaderFID = "Waypoint-Fid"
	// HeaderHash holds the lowercase hex hashes of the messages the event
	// carries, one value each: the merged, pruned or revoked message first,
	// then the messages the merge deleted.
	HeaderHash = "Waypoint-Hash"
	// HeaderTraceParent and HeaderTraceState are the W3C trace context,
	// lowercase as the W3C propagator writes them.
	HeaderTraceParent = "traceparent"
	HeaderTraceState  = "tracestate"
	// HeaderMsgID is the JetStream deduplication header; its value is
	// "<shard>:<event id>" so a republish after a crash is dropped by the
	// server within the stream's duplicate window.
	HeaderMsgID = "Nats-Msg-Id"
)

// Event is one Snapchain event as it travels on the bus.
type Event struct {
	Shard uint32
	ID    uint64
	Type  pb.HubEventType
	// FID routes the event to its partition; HasFID is false for events
	// that belong to the shard rather than a user (BLOCK_CONFIRMED).
	FID    uint64
	HasFID bool
	// Hashes are the hashes of the messages the event carries (see
	// HeaderHash).
	Hashes [][]byte
	// Data is the HubEvent's wire bytes.
	Data []byte
}

// MsgID returns the event's deduplication id, "<shard>:<event id>".
func (e *Event) MsgID() string {
	var buf [32]byte
	b := strconv.AppendUint(buf[:0], uint64(e.Shard), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, e.ID, 10)
	return string(b)
}

// Subject returns the event's subject in a stream of n partitions.
func (e *Event) Subject(n int) string {
	if !e.HasFID {
		return BlockSubject(e.Shard)
	}
	return EventSubject(e.FID, n)
}

// NewMsg builds the message that publishes e in a stream of n partitions:
// subject, headers and payload (e.Data, not copied). Trace context is added
// by the caller through HeaderCarrier.
func NewMsg(e *Event, n int) *nats.Msg {
	// One backing array for every single-valued header saves an allocation
	// per header on the publish path.
	const single = 5
	vals := make([]string, single, single+len(e.Hashes))
	vals[0] = strconv.FormatUint(uint64(e.Shard), 10)
	vals[1] = strconv.FormatUint(e.ID, 10)
	vals[2] = typeName(e.Type)
	vals[3] = e.MsgID()
	h := make(nats.Header, 8)
	h[HeaderShard] = vals[0:1:1]
	h[HeaderEventID] = vals[1:2:2]
	h[HeaderEventType] = vals[2:3:3]
	h[HeaderMsgID] = vals[3:4:4]
	if e.HasFID {
		vals[4] = strconv.FormatUint(e.FID, 10)
		h[HeaderFID] = vals[4:5:5]
	}
	if len(e.Hashes) > 0 {
		for _, hash := range e.Hashes {
			vals = append(vals, hex.EncodeToString(hash))
		}
		h[HeaderHash] = vals[single:]
	}
	return &nats.Msg{Subject: e.Subject(n), Header: h, Data: e.Data}
}

// ParseMsg reads an event back from a message's subject, headers and
// payload. Data aliases msg.Data.
func ParseMsg(msg *nats.Msg) (Event, error) {
	var e Event
	h := msg.Header
	shard, err := strconv.ParseUint(h.Get(HeaderShard), 10, 32)
	if err != nil {
		return e, fmt.Errorf("bus: message %s: header %s: %w", msg.Subject, HeaderShard, err)
	}
	e.Shard = uint32(shard)
	if e.ID, err = strconv.ParseUint(h.Get(HeaderEventID), 10, 64); err != nil {
		return e, fmt.Errorf("bus: message %s: header %s: %w", msg.Subject, HeaderEventID, err)
	}
	if e.Type, err = parseEventType(h.Get(HeaderEventType)); err != nil {
		return e, fmt.Errorf("bus: message %s: header %s: %w", msg.Subject, HeaderEventType, err)
	}
	if v := h.Get(HeaderFID); v != "" {
		if e.FID, err = strconv.ParseUint(v, 10, 64); err != nil {
			return e, fmt.Errorf("bus: message %s: header %s: %w", msg.Subject, HeaderFID, err)
		}
		e.HasFID = true
	}
	for _, v := range h.Values(HeaderHash) {
		b, err := hex.DecodeString(v)
		if err != nil {
			return e, fmt.Errorf("bus: message %s: header %s: %w", msg.Subject, HeaderHash, err)
		}
		e.Hashes = append(e.Hashes, b)
	}
	e.Data = msg.Data
	return e, nil
}

const typePrefix = "HUB_EVENT_TYPE_"

func typeName(t pb.HubEventType) string {
	return strings.TrimPrefix(t.String(), typePrefix)
}

func parseEventType(s string) (pb.HubEventType, error) {
	if v, ok := pb.HubEventType_value[typePrefix+s]; ok {
		return pb.HubEventType(v), nil
	}
	// Types newer than this build's definitions print as their number.
	n, err := strconv.ParseInt(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("unknown event type %q", s)
	}
	return pb.HubEventType(n), nil
}

// HeaderCarrier adapts message headers to OpenTelemetry's propagation API:
// Inject writes traceparent/tracestate into a message about to be
// published, Extract reads them from a received one.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key. NATS headers are case-sensitive, so
// an exact match is tried first, then any spelling of the key.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set replaces the values of key.
func (c HeaderCarrier) Set(key, value string) {
	c[key] = []string{value}
}

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
