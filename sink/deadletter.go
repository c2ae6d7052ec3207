package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// Reasons the consumer dead-letters a message with before it reaches the
// writer; validation failures use the message.Reason values.
const (
	ReasonUndecodable = "decode_failed"
	ReasonBadHeaders  = "bad_headers"
)

// poison is one bus message the consumer will not write.
type poison struct {
	reason, detail string
	shard          *int32
	eventID        *int64
	hash           []byte
	msg            jetstream.Msg
	seq            uint64
}

// insertDeadLetters stores poison messages in dead_letters with source
// "event": raw is the message payload, a HubEvent's wire bytes, so
// ReplayDeadLetters can decode and re-drive it.
func insertDeadLetters(ctx context.Context, pool *pgxpool.Pool, ps []poison) error {
	if len(ps) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for i := range ps {
		p := &ps[i]
		b.Queue(`INSERT INTO dead_letters (source, reason, detail, shard, event_id, message_hash, raw)
			VALUES ('event', $1, $2, $3, $4, $5, $6)`,
			p.reason, cleanText(p.detail), p.shard, p.eventID, p.hash, p.msg.Data())
	}
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("sink: insert dead letters: %w", err)
	}
	return nil
}

// publishDeadLetter republishes a poison message to the dead-letter stream
// with its original headers plus the reason.
func publishDeadLetter(ctx context.Context, js jetstream.JetStream, p *poison) error {
	h := make(nats.Header, len(p.msg.Headers())+4)
	for k, v := range p.msg.Headers() {
		h[k] = v
	}
	// The events stream already deduplicated this message; the DLQ must
	// not drop it because it carries the same id.
	delete(h, bus.HeaderMsgID)
	h.Set(bus.HeaderDeadLetterReason, p.reason)
	h.Set(bus.HeaderDeadLetterDetail, truncate(p.detail, 1024))
	h.Set(bus.HeaderDeadLetterSubject, p.msg.Subject())
	h.Set(bus.HeaderDeadLetterSequence, strconv.FormatUint(p.seq, 10))
	_, err := js.PublishMsg(ctx, &nats.Msg{Subject: bus.DeadLetterSubject(p.reason), Header: h, Data: p.msg.Data()})
	if err != nil {
		return fmt.Errorf("sink: publish dead letter %s: %w", p.reason, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// ReplayOptions selects dead letters to re-drive and how to check them.
type ReplayOptions struct {
	// IDs lists dead_letters ids; All replays every row instead.
	IDs []int64
	All bool
	// Validate and Network are as in Options.
	Validate message.Mode
	Network  pb.FarcasterNetwork
}

// ReplayResult counts what ReplayDeadLetters did.
type ReplayResult struct {
	// Stored rows were written and deleted from dead_letters.
	Stored int
	// Failed rows stay in dead_letters with the reason of the new
	// failure; a row the writer dead-letters again is replaced by the
	// writer's new row.
	Failed int
	// Missing counts requested ids that do not exist.
	Missing int
}

// ReplayDeadLetters re-drives dead_letters rows through validation and w:
// rows that now store are deleted; the others stay with the new reason.
// It returns an error only when the database fails, after which rows not
// yet handled are untouched.
func ReplayDeadLetters(ctx context.Context, pool *pgxpool.Pool, w *Writer, opts ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	if !opts.All && len(opts.IDs) == 0 {
		return res, errors.New("sink: replay needs ids or all")
	}
	rows, err := pool.Query(ctx, `SELECT id, source, shard, event_id, raw FROM dead_letters
		WHERE $1 OR id = ANY($2) ORDER BY id`, opts.All, opts.IDs)
	if err != nil {
		return res, fmt.Errorf("sink: read dead letters: %w", err)
	}
	type letter struct {
		id      int64
		source  string
		shard   *int32
		eventID *int64
		raw     []byte
	}
	var letters []letter
	for rows.Next() {
		var l letter
		if err := rows.Scan(&l.id, &l.source, &l.shard, &l.eventID, &l.raw); err != nil {
			rows.Close()
			return res, fmt.Errorf("sink: read dead letters: %w", err)
		}
		letters = append(letters, l)
	}
	if err := rows.Err(); err != nil {
		return res, fmt.Errorf("sink: read dead letters: %w", err)
	}
	if !opts.All {
		res.Missing = len(uniqueIDs(opts.IDs)) - len(letters)
	}
	for _, l := range letters {
		ev, reason, detail := replayEvent(l.source, l.shard, l.eventID, l.raw)
		if reason == "" {
			reason, detail, _ = validateEvent(ev, opts.Validate, opts.Network)
		}
		if reason != "" {
			if _, err := pool.Exec(ctx, `UPDATE dead_letters SET reason = $2, detail = $3, created_at = now() WHERE id = $1`,
				l.id, reason, cleanText(detail)); err != nil {
				return res, fmt.Errorf("sink: update dead letter %d: %w", l.id, err)
			}
			res.Failed++
			continue
		}
		wr, err := w.Write(ctx, []*pb.HubEvent{ev})
		if err != nil {
			return res, fmt.Errorf("sink: replay dead letter %d: %w", l.id, err)
		}
		if _, err := pool.Exec(ctx, `DELETE FROM dead_letters WHERE id = $1`, l.id); err != nil {
			return res, fmt.Errorf("sink: delete dead letter %d: %w", l.id, err)
		}
		if wr.DeadLetters > 0 {
			res.Failed++
		} else {
			res.Stored++
		}
	}
	return res, nil
}

func uniqueIDs(ids []int64) map[int64]struct{} {
	m := make(map[int64]struct{}, len(ids))
	for _, id := range ids {
		m[id] = struct{}{}
	}
	return m
}

// replayEvent rebuilds the event a dead letter came from. Rows the writer
// made for one part of an event hold only that part; they are wrapped in an
// event of the kind that carries it.
func replayEvent(source string, shard *int32, eventID *int64, raw []byte) (*pb.HubEvent, string, string) {
	ev := &pb.HubEvent{}
	if shard != nil {
		ev.ShardIndex = uint32(*shard)
	}
	if eventID != nil {
		ev.Id = uint64(*eventID)
	}
	var err error
	switch source {
	case "message":
		m := &pb.Message{}
		if err = proto.Unmarshal(raw, m); err == nil {
			ev.Type = pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE
			ev.Body = &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: m}}
		}
	case "username_proof":
		p := &pb.UserNameProof{}
		if err = proto.Unmarshal(raw, p); err == nil {
			ev.Type = pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF
			ev.Body = &pb.HubEvent_MergeUsernameProofBody{MergeUsernameProofBody: &pb.MergeUserNameProofBody{UsernameProof: p}}
		}
	case "onchain_event":
		o := &pb.OnChainEvent{}
		if err = proto.Unmarshal(raw, o); err == nil {
			ev.Type = pb.HubEventType_HUB_EVENT_TYPE_MERGE_ON_CHAIN_EVENT
			ev.Body = &pb.HubEvent_MergeOnChainEventBody{MergeOnChainEventBody: &pb.MergeOnChainEventBody{OnChainEvent: o}}
		}
	default:
		ev = &pb.HubEvent{}
		err = proto.Unmarshal(raw, ev)
	}
	if err != nil {
		return nil, ReasonUndecodable, err.Error()
	}
	return ev, "", ""
}

// validateEvent checks every message ev carries; it returns the reason,
// detail and hash of the first that fails.
func validateEvent(ev *pb.HubEvent, mode message.Mode, network pb.FarcasterNetwork) (reason, detail string, hash []byte) {
	if mode == message.CheckNone {
		return "", "", nil
	}
	check := func(m *pb.Message) bool {
		if m == nil {
			return true
		}
		if err := message.Validate(m, mode, network); err != nil {
			reason = string(message.ReasonOf(err))
			if reason == "" {
				reason = "invalid"
			}
			detail, hash = err.Error(), m.GetHash()
			return false
		}
		return true
	}
	switch b := ev.Body.(type) {
	case *pb.HubEvent_MergeMessageBody:
		if !check(b.MergeMessageBody.GetMessage()) {
			return
		}
		for _, d := range b.MergeMessageBody.GetDeletedMessages() {
			if !check(d) {
				return
			}
		}
	case *pb.HubEvent_PruneMessageBody:
		check(b.PruneMessageBody.GetMessage())
	case *pb.HubEvent_RevokeMessageBody:
		check(b.RevokeMessageBody.GetMessage())
	}
	return
}
