package devnet

import (
	"bytes"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/waypointhq/waypoint/proto"
)

// maxSeq is the number of event sequence numbers a block has: ids are
// (block << seqBits) | seq.
const (
	seqBits = 14
	maxSeq  = 1 << seqBits
)

// EventID returns the id of the event with sequence number seq in block.
func EventID(block, seq uint64) uint64 { return block<<seqBits | seq&(maxSeq-1) }

// SplitEventID returns the block number and sequence number of an event id.
func SplitEventID(id uint64) (block, seq uint64) { return id >> seqBits, id & (maxSeq - 1) }

// HubEvent body field numbers (the oneof cases).
const (
	fieldMergeMessage  protowire.Number = 3
	fieldPruneMessage  protowire.Number = 4
	fieldRevokeMessage protowire.Number = 5
	fieldMergeProof    protowire.Number = 8
	fieldMergeOnChain  protowire.Number = 11
	fieldMergeFailure  protowire.Number = 13
	fieldBlockConfirm  protowire.Number = 16
)

// pendingEvent is an event waiting for the next block of its shard: its
// type and encoded body, or, for injected events, the complete bytes.
type pendingEvent struct {
	typ   pb.HubEventType
	field protowire.Number
	body  []byte
	raw   []byte // injected: sent as is
	rawTy uint8
	// owner is the stored message this merge event carries first in its
	// body; once the event is encoded, the entry's bytes are pointed into
	// the event's, so a message is kept once, not twice.
	owner *entry
}

var deterministic = proto.MarshalOptions{Deterministic: true}

// appendEvent encodes a HubEvent around an already-encoded body and returns
// it with the offset of the body in it.
func appendEvent(dst []byte, typ pb.HubEventType, id uint64, field protowire.Number, body []byte, block uint64, shard uint32, ts uint64) ([]byte, int) {
	dst = protowire.AppendTag(dst, 1, protowire.VarintType)
	dst = protowire.AppendVarint(dst, uint64(typ))
	dst = protowire.AppendTag(dst, 2, protowire.VarintType)
	dst = protowire.AppendVarint(dst, id)
	at := 0
	if body != nil {
		dst = protowire.AppendTag(dst, field, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(len(body)))
		at = len(dst)
		dst = append(dst, body...)
	}
	dst = protowire.AppendTag(dst, 12, protowire.VarintType)
	dst = protowire.AppendVarint(dst, block)
	if shard != 0 {
		dst = protowire.AppendTag(dst, 14, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(shard))
	}
	if ts != 0 {
		dst = protowire.AppendTag(dst, 15, protowire.VarintType)
		dst = protowire.AppendVarint(dst, ts)
	}
	return dst, at
}

// mergeMessageBody encodes a MergeMessageBody from encoded messages.
func mergeMessageBody(msg []byte, deleted ...[]byte) []byte {
	n := protowire.SizeTag(1) + protowire.SizeBytes(len(msg))
	for _, d := range deleted {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(d))
	}
	b := make([]byte, 0, n)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendBytes(b, msg)
	for _, d := range deleted {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, d)
	}
	return b
}

// messageOnlyBody encodes a PruneMessageBody or RevokeMessageBody.
func messageOnlyBody(msg []byte) []byte {
	b := make([]byte, 0, protowire.SizeTag(1)+protowire.SizeBytes(len(msg)))
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}

// mergeFailureBody encodes a MergeFailureBody.
func mergeFailureBody(msg []byte, code, reason string) []byte {
	b := messageOnlyBody(msg)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, code)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	return protowire.AppendString(b, reason)
}

func mergeEvent(msg []byte, deleted ...[]byte) pendingEvent {
	return pendingEvent{typ: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, field: fieldMergeMessage, body: mergeMessageBody(msg, deleted...)}
}

// ownedMergeEvent is the merge event of a newly stored message.
func ownedMergeEvent(e *entry, deleted ...[]byte) pendingEvent {
	ev := mergeEvent(e.raw, deleted...)
	ev.owner = e
	return ev
}

// mergedMessage returns the message a MERGE_MESSAGE event's bytes carry.
func mergedMessage(ev []byte) []byte {
	body := field(ev, fieldMergeMessage)
	if body == nil {
		return nil
	}
	return field(body, 1)
}

// firstBytesField returns the offset and length of the content of b's
// first field when it is length-delimited.
func firstBytesField(b []byte) (int, int) {
	_, typ, l := protowire.ConsumeTag(b)
	if l < 0 || typ != protowire.BytesType {
		return 0, 0
	}
	v, n := protowire.ConsumeBytes(b[l:])
	if n < 0 {
		return 0, 0
	}
	return l + n - len(v), len(v)
}

// field returns the first length-delimited field num of an encoded message.
func field(b []byte, num protowire.Number) []byte {
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil
		}
		b = b[l:]
		if n == num && t == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return nil
			}
			return v
		}
		l = protowire.ConsumeFieldValue(n, t, b)
		if l < 0 {
			return nil
		}
		b = b[l:]
	}
	return nil
}

func pruneEvent(msg []byte) pendingEvent {
	return pendingEvent{typ: pb.HubEventType_HUB_EVENT_TYPE_PRUNE_MESSAGE, field: fieldPruneMessage, body: messageOnlyBody(msg)}
}

func revokeEvent(msg []byte) pendingEvent {
	return pendingEvent{typ: pb.HubEventType_HUB_EVENT_TYPE_REVOKE_MESSAGE, field: fieldRevokeMessage, body: messageOnlyBody(msg)}
}

func failureEvent(msg []byte, code, reason string) pendingEvent {
	return pendingEvent{typ: pb.HubEventType_HUB_EVENT_TYPE_MERGE_FAILURE, field: fieldMergeFailure, body: mergeFailureBody(msg, code, reason)}
}

func onChainEvent(ev []byte) pendingEvent {
	return pendingEvent{typ: pb.HubEventType_HUB_EVENT_TYPE_MERGE_ON_CHAIN_EVENT, field: fieldMergeOnChain, body: messageOnlyBody(ev)}
}

func proofEvent(proof, deleted []byte) pendingEvent {
	b := messageOnlyBody(proof)
	if deleted != nil {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendBytes(b, deleted)
	}
	return pendingEvent{typ: pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF, field: fieldMergeProof, body: b}
}

// injectedType reads the type of an injected event, or typeUnknown when the
// bytes do not parse as a HubEvent with a type.
func injectedType(raw []byte) uint8 {
	var ev pb.HubEvent
	if err := proto.Unmarshal(raw, &ev); err != nil {
		return typeUnknown
	}
	t := ev.GetType()
	if t <= 0 || t >= typeUnknown {
		return typeUnknown
	}
	return uint8(t)
}

// dupLayout describes an encoding stored without a repeated run of bytes:
// a generated message carries its MessageData twice, once as data and
// once as data_bytes, and events store the second copy only by reference.
// The full encoding is stored[:at] + stored[from:from+n] + stored[at:].
type dupLayout struct {
	at, from, n uint16
}

func (l dupLayout) expand(b []byte) []byte {
	if l.n == 0 {
		return b
	}
	out := make([]byte, 0, len(b)+int(l.n))
	out = append(out, b[:l.at]...)
	out = append(out, b[l.from:l.from+l.n]...)
	return append(out, b[l.at:]...)
}

// segments returns the pieces of the full encoding, without copying.
func (l dupLayout) segments(b []byte) [3][]byte {
	return [3][]byte{b[:l.at], b[l.from : l.from+l.n], b[l.at:]}
}

// messageDup finds, in an encoded Message, the data_bytes run that repeats
// its data field. Offsets are relative to msg.
func messageDup(msg []byte) (dupLayout, bool) {
	var dataAt, dataN, dbAt, dbN int
	off := 0
	for off < len(msg) {
		num, typ, l := protowire.ConsumeTag(msg[off:])
		if l < 0 {
			return dupLayout{}, false
		}
		off += l
		if typ != protowire.BytesType {
			l = protowire.ConsumeFieldValue(num, typ, msg[off:])
			if l < 0 {
				return dupLayout{}, false
			}
			off += l
			continue
		}
		v, l := protowire.ConsumeBytes(msg[off:])
		if l < 0 {
			return dupLayout{}, false
		}
		at := off + l - len(v)
		switch num {
		case 1:
			dataAt, dataN = at, len(v)
		case 7:
			dbAt, dbN = at, len(v)
		}
		off += l
	}
	if dataN == 0 || dataN != dbN || dataAt+dataN > dbAt || dbAt+dbN > 0xffff ||
		!bytes.Equal(msg[dataAt:dataAt+dataN], msg[dbAt:dbAt+dbN]) {
		return dupLayout{}, false
	}
	return dupLayout{at: uint16(dbAt), from: uint16(dataAt), n: uint16(dbN)}, true
}

// compact returns b without the run l describes as repeated, b being the
// full encoding.
func (l dupLayout) compact(b []byte) []byte {
	out := make([]byte, 0, len(b)-int(l.n))
	out = append(out, b[:l.at]...)
	return append(out, b[int(l.at)+int(l.n):]...)
}

// shift moves the layout of an encoding embedded at offset off.
func (l dupLayout) shift(off int) (dupLayout, bool) {
	if l.n == 0 || off+int(l.at)+int(l.n) > 0xffff {
		return dupLayout{}, false
	}
	return dupLayout{at: l.at + uint16(off), from: l.from + uint16(off), n: l.n}, true
}
