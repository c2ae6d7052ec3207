package hub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"

	"google.golang.org/grpc"

	pb "github.com/waypointhq/waypoint/proto"
)

// DefaultPageSize is the page size sent when a caller passes 0. The node's
// own default for message reads (10,000, uncapped) is too large to rely on.
const DefaultPageSize = 1000

// MaxPageSize is the largest page size sent; larger requests are sent as
// this. It is the node's own default for message reads: a bigger page
// only makes each response, and the memory it holds, larger.
const MaxPageSize = 10000

// Kind names a family of per-fid message reads.
type Kind string

// Kinds read with GetAll*MessagesByFid: adds and removes, what a backfill
// needs to reproduce the node's conflict resolution.
const (
	KindCasts         Kind = "casts"
	KindReactions     Kind = "reactions"
	KindLinks         Kind = "links"
	KindVerifications Kind = "verifications"
	KindUserData      Kind = "user_data"
	KindLendStorage   Kind = "lend_storage"
)

// Kinds read with Get*ByFid: the adds that are live now, and the link
// compact state message.
const (
	KindCastAdds         Kind = "cast_adds"
	KindReactionAdds     Kind = "reaction_adds"
	KindLinkAdds         Kind = "link_adds"
	KindVerificationAdds Kind = "verification_adds"
	KindUserDataAdds     Kind = "user_data_adds"
	KindLinkCompactState Kind = "link_compact_state"
)

// ParseKind checks that s names a Kind.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindCasts, KindReactions, KindLinks, KindVerifications, KindUserData, KindLendStorage,
		KindCastAdds, KindReactionAdds, KindLinkAdds, KindVerificationAdds, KindUserDataAdds, KindLinkCompactState:
		return k, nil
	}
	return "", fmt.Errorf("parse message kind %q: want casts, reactions, links, verifications, user_data, lend_storage, "+
		"cast_adds, reaction_adds, link_adds, verification_adds, user_data_adds or link_compact_state", s)
}

// fetch is one call of a paged RPC: it sends the page size and token and
// returns the page and the next token.
type fetch[T any] func(ctx context.Context, size uint32, token []byte) ([]T, []byte, error)

type rpc[Req, Resp any] func(context.Context, Req, ...grpc.CallOption) (Resp, error)

func messageFetch(c pb.HubServiceClient, kind Kind, fid uint64) (fetch[*pb.Message], error) {
	all := func(call rpc[*pb.FidTimestampRequest, *pb.MessagesResponse]) fetch[*pb.Message] {
		return func(ctx context.Context, size uint32, token []byte) ([]*pb.Message, []byte, error) {
			r, err := call(ctx, &pb.FidTimestampRequest{Fid: fid, PageSize: &size, PageToken: token})
			return r.GetMessages(), r.GetNextPageToken(), err
		}
	}
	live := func(call rpc[*pb.FidRequest, *pb.MessagesResponse]) fetch[*pb.Message] {
		return func(ctx context.Context, size uint32, token []byte) ([]*pb.Message, []byte, error) {
			r, err := call(ctx, &pb.FidRequest{Fid: fid, PageSize: &size, PageToken: token})
			return r.GetMessages(), r.GetNextPageToken(), err
		}
	}
	switch kind {
	case KindCasts:
		return all(c.GetAllCastMessagesByFid), nil
	case KindReactions:
		return all(c.GetAllReactionMessagesByFid), nil
	case KindLinks:
		return all(c.GetAllLinkMessagesByFid), nil
	case KindVerifications:
		return all(c.GetAllVerificationMessagesByFid), nil
	case KindUserData:
		return all(c.GetAllUserDataMessagesByFid), nil
	case KindLendStorage:
		return all(c.GetAllLendStorageMessagesByFid), nil
	case KindCastAdds:
		return live(c.GetCastsByFid), nil
	case KindVerificationAdds:
		return live(c.GetVerificationsByFid), nil
	case KindUserDataAdds:
		return live(c.GetUserDataByFid), nil
	case KindLinkCompactState:
		return live(c.GetLinkCompactStateMessageByFid), nil
	case KindReactionAdds:
		return func(ctx context.Context, size uint32, token []byte) ([]*pb.Message, []byte, error) {
			r, err := c.GetReactionsByFid(ctx, &pb.ReactionsByFidRequest{Fid: fid, PageSize: &size, PageToken: token})
			return r.GetMessages(), r.GetNextPageToken(), err
		}, nil
	case KindLinkAdds:
		return func(ctx context.Context, size uint32, token []byte) ([]*pb.Message, []byte, error) {
			r, err := c.GetLinksByFid(ctx, &pb.LinksByFidRequest{Fid: fid, PageSize: &size, PageToken: token})
			return r.GetMessages(), r.GetNextPageToken(), err
		}, nil
	}
	_, err := ParseKind(string(kind))
	return nil, err
}

// Messages reads all of one fid's messages of a kind, a page per iteration
// (pageSize 0 means DefaultPageSize), in the node's order: (timestamp, hash)
// ascending. Nothing beyond the current page is held. A failed call, after
// retries, ends the sequence with its error.
func (c *Client) Messages(ctx context.Context, kind Kind, fid uint64, pageSize uint32) iter.Seq2[[]*pb.Message, error] {
	f, err := messageFetch(c.raw, kind, fid)
	if err != nil {
		return failed[*pb.Message](err)
	}
	return pages(ctx, pageSize, fmt.Sprintf("read %s of fid %d from %s", kind, fid, c.target), f)
}

// Fids lists the fids registered on a data shard (1..num_shards), a page
// per iteration. Pages can be shorter than pageSize before the end.
func (c *Client) Fids(ctx context.Context, shard uint32, pageSize uint32) iter.Seq2[[]uint64, error] {
	if shard == 0 {
		return failed[uint64](errors.New("list fids of shard 0: it is the block shard; data shards start at 1"))
	}
	return pages(ctx, pageSize, fmt.Sprintf("list fids of shard %d on %s", shard, c.target),
		func(ctx context.Context, size uint32, token []byte) ([]uint64, []byte, error) {
			r, err := c.raw.GetFids(ctx, &pb.FidsRequest{ShardId: shard, PageSize: &size, PageToken: token})
			return r.GetFids(), r.GetNextPageToken(), err
		})
}

// OnChainEvents reads one fid's on-chain events of a type. The node
// currently returns them all in one response; the loop copes either way.
func (c *Client) OnChainEvents(ctx context.Context, fid uint64, typ pb.OnChainEventType) iter.Seq2[[]*pb.OnChainEvent, error] {
	return pages(ctx, 0, fmt.Sprintf("read %v on-chain events of fid %d from %s", typ, fid, c.target),
		func(ctx context.Context, size uint32, token []byte) ([]*pb.OnChainEvent, []byte, error) {
			r, err := c.raw.GetOnChainEvents(ctx, &pb.OnChainEventRequest{Fid: fid, EventType: typ, PageSize: &size, PageToken: token})
			return r.GetEvents(), r.GetNextPageToken(), err
		})
}

// UsernameProofs returns one fid's username proofs; the RPC has no paging.
func (c *Client) UsernameProofs(ctx context.Context, fid uint64) ([]*pb.UserNameProof, error) {
	r, err := c.raw.GetUserNameProofsByFid(ctx, &pb.FidRequest{Fid: fid})
	if err != nil {
		return nil, fmt.Errorf("read username proofs of fid %d from %s: %w", fid, c.target, err)
	}
	return r.GetProofs(), nil
}

// EventsPages reads a shard's stored events with ids from startID up to
// stopID (the node treats stopID as exclusive; 0 means no bound), a page per
// iteration.
func (c *Client) EventsPages(ctx context.Context, shard uint32, startID, stopID uint64, pageSize uint32) iter.Seq2[[]*pb.HubEvent, error] {
	return pages(ctx, pageSize, fmt.Sprintf("read events %d..%d of shard %d from %s", startID, stopID, shard, c.target),
		func(ctx context.Context, size uint32, token []byte) ([]*pb.HubEvent, []byte, error) {
			req := &pb.EventsRequest{StartId: startID, ShardIndex: &shard, PageSize: &size, PageToken: token}
			if stopID != 0 {
				req.StopId = &stopID
			}
			r, err := c.raw.GetEvents(ctx, req)
			return r.GetEvents(), r.GetNextPageToken(), err
		})
}

// Events collects what EventsPages yields, for ranges small enough to hold
// (filling a gap of a few blocks, say).
func (c *Client) Events(ctx context.Context, shard uint32, startID, stopID uint64) ([]*pb.HubEvent, error) {
	var all []*pb.HubEvent
	for page, err := range c.EventsPages(ctx, shard, startID, stopID, 0) {
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
	}
	return all, nil
}

// pages drives a page-token loop. Per the node's contract the token is
// opaque and exclusive, and a full page carries a token even when nothing
// follows, so the loop ends only on an absent or empty token. Empty pages are
// not yielded. A token that repeats would loop forever and is an error.
func pages[T any](ctx context.Context, size uint32, what string, f fetch[T]) iter.Seq2[[]T, error] {
	if size == 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	return func(yield func([]T, error) bool) {
		var token []byte
		for n := 1; ; n++ {
			items, next, err := f(ctx, size, token)
			if err != nil {
				yield(nil, fmt.Errorf("%s: page %d: %w", what, n, err))
				return
			}
			if len(items) > 0 && !yield(items, nil) {
				return
			}
			if len(next) == 0 {
				return
			}
			if bytes.Equal(next, token) {
				yield(nil, fmt.Errorf("%s: page %d: the node returned the same page token again", what, n))
				return
			}
			token = next
		}
	}
}

func failed[T any](err error) iter.Seq2[[]T, error] {
	return func(yield func([]T, error) bool) { yield(nil, err) }
}
