package ingest

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/trace"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/waypointhq/waypoint/bus"
	pb "github.com/waypointhq/waypoint/proto"
)

// Event ids are (block << seqBits) | seq.
const seqBits = 14

func blockOf(id uint64) uint64       { return id >> seqBits }
func blockStart(block uint64) uint64 { return block << seqBits }

// event is a HubEvent as received: its wire bytes plus the few fields that
// routing, headers and gap detection need, read with protowire instead of
// a full unmarshal. hashes alias data.
type event struct {
	data    []byte
	typ     pb.HubEventType
	id      uint64
	block   uint64 // the block_number field; blockOf(id) is what gap checks use
	shard   uint32
	fid     uint64
	hasFID  bool
	hashes  [][]byte
	confirm *confirmCounts // BLOCK_CONFIRMED only
	// msgType is the MessageType of the event's primary message (0: none).
	msgType pb.MessageType
	// span is the event's ingest.receive span, and spanCtx the context
	// holding it; nil until the event is traced (see shard.startReceive).
	span    trace.Span
	spanCtx context.Context
	// err is set when the bytes do not parse; the other fields hold what
	// was read before the damage.
	err error
}

func (e *event) busEvent(shard uint32) *bus.Event {
	return &bus.Event{
		Shard:  shard,
		ID:     e.id,
		Type:   e.typ,
		FID:    e.fid,
		HasFID: e.hasFID,
		Hashes: e.hashes,
		Data:   e.data,
	}
}

var errTruncated = errors.New("truncated or malformed protobuf")

// parseEvent reads the routing fields of a HubEvent. It never fails
// outright: a malformed event comes back with err set.
func parseEvent(b []byte) *event {
	e := &event{data: b}
	e.err = e.parse(b)
	return e
}

func (e *event) parse(b []byte) error {
	var fidSet bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num == 1 || num == 2 || num == 12 || num == 14):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errTruncated
			}
			b = b[n:]
			switch num {
			case 1:
				e.typ = pb.HubEventType(int32(v))
			case 2:
				e.id = v
			case 12:
				e.block = v
			case 14:
				e.shard = uint32(v)
			}
		case typ == protowire.BytesType && isBody(num):
			body, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errTruncated
			}
			b = b[n:]
			if err := e.parseBody(num, body, &fidSet); err != nil {
				return fmt.Errorf("event body (field %d): %w", num, err)
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errTruncated
			}
			b = b[n:]
		}
	}
	return nil
}

func isBody(num protowire.Number) bool {
	switch num {
	case 3, 4, 5, 8, 11, 13, 16:
		return true
	}
	return false
}

func (e *event) parseBody(num protowire.Number, body []byte, fidSet *bool) error {
	switch num {
	case 3, 4, 5, 13:
		// MergeMessageBody: message = 1, deleted_messages = 2.
		// Prune, Revoke, MergeFailure: message = 1.
		var primary []byte
		var deleted [][]byte
		err := eachBytes(body, func(f protowire.Number, v []byte) error {
			if f != 1 && (num != 3 || f != 2) {
				return nil
			}
			fid, hash, mt, err := parseMessage(v)
			if err != nil {
				return err
			}
			if f == 1 {
				e.setFID(fid, fidSet)
				primary, e.msgType = hash, mt
			} else {
				deleted = append(deleted, hash)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if primary != nil || len(deleted) > 0 {
			e.hashes = make([][]byte, 0, 1+len(deleted))
			if primary != nil {
				e.hashes = append(e.hashes, primary)
			}
			e.hashes = append(e.hashes, deleted...)
		}
		return nil
	case 8:
		// MergeUserNameProofBody: username_proof = 1, deleted_username_proof
		// = 2, username_proof_message = 3, deleted_username_proof_message =
		// 4. The event belongs to the proof's owner; a proof for fid 0
		// deletes a name, and then belongs to the previous owner.
		var proofFID, delFID, msgFID, delMsgFID uint64
		var msgHash, delHash []byte
		err := eachBytes(body, func(f protowire.Number, v []byte) error {
			var err error
			switch f {
			case 1:
				proofFID, err = varintField(v, 5)
			case 2:
				delFID, err = varintField(v, 5)
			case 3:
				var mt pb.MessageType
				msgFID, msgHash, mt, err = parseMessage(v)
				e.msgType = mt
			case 4:
				delMsgFID, delHash, _, err = parseMessage(v)
			}
			return err
		})
		if err != nil {
			return err
		}
		for _, f := range []uint64{proofFID, msgFID, delFID, delMsgFID} {
			if f != 0 {
				e.setFID(f, fidSet)
				break
			}
		}
		e.hasFID = true
		for _, h := range [][]byte{msgHash, delHash} {
			if h != nil {
				e.hashes = append(e.hashes, h)
			}
		}
		return nil
	case 11:
		// MergeOnChainEventBody: on_chain_event = 1 { fid = 8 }.
		return eachBytes(body, func(f protowire.Number, v []byte) error {
			if f != 1 {
				return nil
			}
			fid, err := varintField(v, 8)
			if err != nil {
				return err
			}
			e.setFID(fid, fidSet)
			return nil
		})
	case 16:
		c, err := parseConfirm(body)
		if err != nil {
			return err
		}
		e.confirm = c
	}
	return nil
}

// confirmCounts is what gap detection needs from a BlockConfirmedBody.
type confirmCounts struct {
	total uint64
	// byType counts the block's events per HubEventType number; types
	// beyond maxType are left out (none is subscribed).
	byType [maxType]uint64
}

// parseConfirm reads total_events (5) and event_counts_by_type (6, a
// map<int32, uint64>: entries with key = 1, value = 2).
func parseConfirm(b []byte) (*confirmCounts, error) {
	c := &confirmCounts{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errTruncated
		}
		b = b[n:]
		switch {
		case num == 5 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, errTruncated
			}
			c.total, b = v, b[n:]
		case num == 6 && typ == protowire.BytesType:
			entry, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errTruncated
			}
			b = b[n:]
			key, err := varintField(entry, 1)
			if err != nil {
				return nil, err
			}
			val, err := varintField(entry, 2)
			if err != nil {
				return nil, err
			}
			if t := int32(key); t >= 0 && t < maxType {
				c.byType[t] = val
			}
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, errTruncated
			}
			b = b[n:]
		}
	}
	return c, nil
}

func (e *event) setFID(fid uint64, set *bool) {
	if !*set {
		e.fid, e.hasFID, *set = fid, true, true
	}
}

// parseMessage returns a Message's FID and type (from data, or from
// data_bytes when data is absent) and hash.
func parseMessage(b []byte) (fid uint64, hash []byte, typ pb.MessageType, err error) {
	var data, dataBytes []byte
	err = eachBytes(b, func(f protowire.Number, v []byte) error {
		switch f {
		case 1:
			data = v
		case 2:
			hash = v
		case 7:
			dataBytes = v
		}
		return nil
	})
	if err != nil {
		return 0, nil, 0, err
	}
	if data == nil {
		data = dataBytes
	}
	if data != nil {
		var t uint64
		if t, fid, err = varintFields12(data); err != nil {
			return 0, nil, 0, fmt.Errorf("message data: %w", err)
		}
		typ = pb.MessageType(int32(t))
	}
	return fid, hash, typ, nil
}

// varintFields12 returns the last values of varint fields 1 and 2 of b
// (MessageData: type, fid) in one pass.
func varintFields12(b []byte) (f1, f2 uint64, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, 0, errTruncated
		}
		b = b[n:]
		if (num == 1 || num == 2) && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, 0, errTruncated
			}
			if num == 1 {
				f1 = v
			} else {
				f2 = v
			}
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, 0, errTruncated
		}
		b = b[n:]
	}
	return f1, f2, nil
}

// eachBytes calls fn for every length-delimited field of b, skipping the
// others.
func eachBytes(b []byte, fn func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		if typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errTruncated
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return errTruncated
		}
		b = b[n:]
		if err := fn(num, v); err != nil {
			return err
		}
	}
	return nil
}

// varintField returns the last value of varint field want in b (proto3
// semantics: the last occurrence wins), or 0 when absent.
func varintField(b []byte, want protowire.Number) (uint64, error) {
	var out uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, errTruncated
		}
		b = b[n:]
		if num == want && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, errTruncated
			}
			out = v
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, errTruncated
		}
		b = b[n:]
	}
	return out, nil
}
