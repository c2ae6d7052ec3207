package backfill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/telemetry"
)

// onChainEventTypes are the on-chain event types a backfill requests, one
// GetOnChainEvents call each, in parallel.
var onChainEventTypes = []pb.OnChainEventType{
	pb.OnChainEventType_EVENT_TYPE_SIGNER,
	pb.OnChainEventType_EVENT_TYPE_SIGNER_MIGRATED,
	pb.OnChainEventType_EVENT_TYPE_ID_REGISTER,
	pb.OnChainEventType_EVENT_TYPE_STORAGE_RENT,
	pb.OnChainEventType_EVENT_TYPE_TIER_PURCHASE,
}

type allMessagesFunc func(ctx context.Context, in *pb.FidTimestampRequest, opts ...grpc.CallOption) (*pb.MessagesResponse, error)

// Backfill copies fid's data of the given types (all when none) from the
// hub to the writer: every message family's adds and removes, link compact
// state, on-chain events and username proofs. The families are fetched in
// parallel; each page is validated and written before the next is
// requested. The first family to fail cancels the others.
func (w *Worker) Backfill(ctx context.Context, fid uint64, types ...DataType) error {
	if len(types) == 0 {
		types = allDataTypes
	}
	var fns []func(context.Context) error
	for _, t := range types {
		switch t {
		case Casts:
			fns = append(fns, w.allMessages(fid, t, w.hub.GetAllCastMessagesByFid))
		case Reactions:
			fns = append(fns, w.allMessages(fid, t, w.hub.GetAllReactionMessagesByFid))
		case Links:
			links := w.allMessages(fid, t, w.hub.GetAllLinkMessagesByFid)
			fns = append(fns, func(ctx context.Context) error {
				if err := links(ctx); err != nil {
					return err
				}
				return w.linkCompactState(ctx, fid)
			})
		case Verifications:
			fns = append(fns, w.allMessages(fid, t, w.hub.GetAllVerificationMessagesByFid))
		case UserData:
			fns = append(fns, w.allMessages(fid, t, w.hub.GetAllUserDataMessagesByFid))
		case LendStorage:
			fns = append(fns, w.allMessages(fid, t, w.hub.GetAllLendStorageMessagesByFid))
		case OnChainEvents:
			for _, typ := range onChainEventTypes {
				fns = append(fns, func(ctx context.Context) error { return w.onChainEvents(ctx, fid, typ) })
			}
		case UsernameProofs:
			fns = append(fns, func(ctx context.Context) error { return w.usernameProofs(ctx, fid) })
		default:
			return fmt.Errorf("backfill fid %d: unknown data type %q", fid, t)
		}
	}
	return group(ctx, fns)
}

// group runs fns in parallel and returns the first error, cancelling the
// rest when one fails.
func group(ctx context.Context, fns []func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}()
	}
	wg.Wait()
	return first
}

// pages walks a paged list: fetch gets the page after token and returns the
// next token. A hub that hands out the token it was given would loop
// forever, so that is an error.
func pages(ctx context.Context, fetch func(ctx context.Context, token []byte) ([]byte, error)) error {
	var token []byte
	for {
		next, err := fetch(ctx, token)
		if err != nil {
			return err
		}
		if len(next) == 0 {
			return nil
		}
		if token != nil && bytes.Equal(next, token) {
			return fmt.Errorf("hub returned page token %x again", next)
		}
		token = next
	}
}

func (w *Worker) allMessages(fid uint64, t DataType, get allMessagesFunc) func(context.Context) error {
	return func(ctx context.Context) error {
		err := pages(ctx, func(ctx context.Context, token []byte) ([]byte, error) {
			req := &pb.FidTimestampRequest{Fid: fid, PageSize: &w.o.PageSize, PageToken: token}
			var resp *pb.MessagesResponse
			fctx, span := w.tracer.Start(ctx, telemetry.SpanBackfillFetch, trace.WithAttributes(telemetry.FID(fid), attribute.String("backfill.type", string(t))))
			err := w.call(fctx, func(ctx context.Context) (err error) { resp, err = get(ctx, req); return err })
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, "fetch failed")
				span.End()
				return nil, err
			}
			span.SetAttributes(attribute.Int("backfill.page.messages", len(resp.GetMessages())))
			span.End()
			if err := w.writeMessages(ctx, fid, t, resp.GetMessages()); err != nil {
				return nil, err
			}
			return resp.GetNextPageToken(), nil
		})
		if err != nil {
			return fmt.Errorf("backfill %s: %w", t, err)
		}
		return nil
	}
}

func (w *Worker) linkCompactState(ctx context.Context, fid uint64) error {
	err := pages(ctx, func(ctx context.Context, token []byte) ([]byte, error) {
		req := &pb.FidRequest{Fid: fid, PageSize: &w.o.PageSize, PageToken: token}
		var resp *pb.MessagesResponse
		if err := w.call(ctx, func(ctx context.Context) (err error) {
			resp, err = w.hub.GetLinkCompactStateMessageByFid(ctx, req)
			return err
		}); err != nil {
			return nil, err
		}
		if err := w.writeMessages(ctx, fid, Links, resp.GetMessages()); err != nil {
			return nil, err
		}
		return resp.GetNextPageToken(), nil
	})
	if err != nil {
		return fmt.Errorf("backfill link compact state: %w", err)
	}
	return nil
}

func (w *Worker) onChainEvents(ctx context.Context, fid uint64, typ pb.OnChainEventType) error {
	err := pages(ctx, func(ctx context.Context, token []byte) ([]byte, error) {
		req := &pb.OnChainEventRequest{Fid: fid, EventType: typ, PageSize: &w.o.PageSize, PageToken: token}
		var resp *pb.OnChainEventResponse
		if err := w.call(ctx, func(ctx context.Context) (err error) {
			resp, err = w.hub.GetOnChainEvents(ctx, req)
			return err
		}); err != nil {
			return nil, err
		}
		events := make([]*pb.HubEvent, 0, len(resp.GetEvents()))
		for _, e := range resp.GetEvents() {
			if e.GetFid() != fid {
				return nil, fmt.Errorf("hub returned an on-chain event of fid %d", e.GetFid())
			}
			events = append(events, &pb.HubEvent{
				Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_ON_CHAIN_EVENT,
				Body: &pb.HubEvent_MergeOnChainEventBody{MergeOnChainEventBody: &pb.MergeOnChainEventBody{OnChainEvent: e}},
			})
		}
		if err := w.write(ctx, events); err != nil {
			return nil, err
		}
		w.stats.events.Add(int64(len(events)))
		return resp.GetNextPageToken(), nil
	})
	if err != nil {
		return fmt.Errorf("backfill on-chain events of type %s: %w", typ, err)
	}
	return nil
}

func (w *Worker) usernameProofs(ctx context.Context, fid uint64) error {
	var resp *pb.UsernameProofsResponse
	if err := w.call(ctx, func(ctx context.Context) (err error) {
		resp, err = w.hub.GetUserNameProofsByFid(ctx, &pb.FidRequest{Fid: fid, PageSize: &w.o.PageSize})
		return err
	}); err != nil {
		return fmt.Errorf("backfill username proofs: %w", err)
	}
	events := make([]*pb.HubEvent, 0, len(resp.GetProofs()))
	for _, p := range resp.GetProofs() {
		events = append(events, proofEvent(p))
	}
	if err := w.write(ctx, events); err != nil {
		return fmt.Errorf("backfill username proofs: %w", err)
	}
	w.stats.events.Add(int64(len(events)))
	return nil
}

// writeMessages validates msgs, reports the invalid ones as dead letters
// and writes the rest as merge events.
func (w *Worker) writeMessages(ctx context.Context, fid uint64, t DataType, msgs []*pb.Message) error {
	events := make([]*pb.HubEvent, 0, len(msgs))
	for _, m := range msgs {
		if err := w.check(fid, m); err != nil {
			w.deadLetter(ctx, DeadLetter{FID: fid, Type: t, Message: m, Reason: message.ReasonOf(err), Err: err})
			continue
		}
		events = append(events, mergeMessage(m))
	}
	if err := w.write(ctx, events); err != nil {
		return err
	}
	w.stats.messages.Add(int64(len(events)))
	if m := w.o.Metrics; m != nil {
		m.BackfillMessages.Add(float64(len(events)))
	}
	return nil
}

// check validates m and that it belongs to fid.
func (w *Worker) check(fid uint64, m *pb.Message) error {
	if m == nil {
		return &message.Error{Reason: message.ReasonNoData, Detail: "nil message"}
	}
	if err := message.Validate(m, w.o.Validation, w.o.Network); err != nil {
		return err
	}
	data, err := message.Data(m)
	if err != nil {
		return err
	}
	if data.GetFid() != fid {
		return &message.Error{Reason: ReasonWrongFID, Detail: fmt.Sprintf("message of fid %d in the pages of fid %d", data.GetFid(), fid)}
	}
	return nil
}

func mergeMessage(m *pb.Message) *pb.HubEvent {
	return &pb.HubEvent{
		Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
		Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: m}},
	}
}

func proofEvent(p *pb.UserNameProof) *pb.HubEvent {
	return &pb.HubEvent{
		Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF,
		Body: &pb.HubEvent_MergeUsernameProofBody{MergeUsernameProofBody: &pb.MergeUserNameProofBody{UsernameProof: p}},
	}
}

func (w *Worker) write(ctx context.Context, events []*pb.HubEvent) error {
	w.stats.pages.Add(1)
	if len(events) == 0 {
		return nil
	}
	ctx, span := w.tracer.Start(ctx, telemetry.SpanBackfillWrite, trace.WithAttributes(attribute.Int("backfill.events", len(events))))
	defer span.End()
	if err := w.w.Write(ctx, events); err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "write failed")
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("write %d events: %w", len(events), err)
	}
	return nil
}

var errNoStore = errors.New("reconciliation needs a Store (WorkerOptions.Store)")
