package backfill

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// Store is the Postgres side of reconciliation: per data type, the hashes
// of a FID's live rows (deleted_at IS NULL) and a way to mark rows deleted.
// NewPostgresStore implements it over the tables casts, reactions, links,
// verifications and user_data; a store that keeps deletion marks elsewhere
// (so that a redelivered message cannot revive a row) can implement it
// itself.
type Store interface {
	LiveHashes(ctx context.Context, t DataType, fid uint64) ([][]byte, error)
	// MarkDeleted marks fid's live rows with the given hashes deleted and
	// returns how many it changed.
	MarkDeleted(ctx context.Context, t DataType, fid uint64, hashes [][]byte) (int64, error)
}

// DB is what NewPostgresStore needs; *pgxpool.Pool and *pgx.Conn have it.
type DB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// reconcileTables maps the reconciled data types to their tables, each with
// columns fid bigint, hash bytea and deleted_at timestamptz.
var reconcileTables = map[DataType]string{
	Casts:         "casts",
	Reactions:     "reactions",
	Links:         "links",
	Verifications: "verifications",
	UserData:      "user_data",
}

type pgStore struct{ db DB }

// NewPostgresStore returns a Store over db's message tables.
func NewPostgresStore(db DB) Store { return pgStore{db} }

func (s pgStore) LiveHashes(ctx context.Context, t DataType, fid uint64) ([][]byte, error) {
	table, ok := reconcileTables[t]
	if !ok {
		return nil, fmt.Errorf("live hashes: data type %q is not reconciled", t)
	}
	rows, err := s.db.Query(ctx, "SELECT hash FROM "+table+" WHERE fid = $1 AND deleted_at IS NULL", int64(fid))
	if err != nil {
		return nil, fmt.Errorf("live hashes of fid %d in %s: %w", fid, table, err)
	}
	hashes, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("live hashes of fid %d in %s: %w", fid, table, err)
	}
	return hashes, nil
}

func (s pgStore) MarkDeleted(ctx context.Context, t DataType, fid uint64, hashes [][]byte) (int64, error) {
	table, ok := reconcileTables[t]
	if !ok {
		return 0, fmt.Errorf("mark deleted: data type %q is not reconciled", t)
	}
	set := "deleted_at = now()"
	if table != "casts" {
		// Stores that keep every version revive the best unmarked one when
		// the live one is marked; a row the hub no longer has must not come
		// back that way, so it is marked too.
		set += ", marked = true"
	}
	tag, err := s.db.Exec(ctx, "UPDATE "+table+" SET "+set+" WHERE fid = $1 AND hash = ANY($2) AND deleted_at IS NULL", int64(fid), hashes)
	if err != nil {
		return 0, fmt.Errorf("mark %d rows of fid %d deleted in %s: %w", len(hashes), fid, table, err)
	}
	return tag.RowsAffected(), nil
}

// ReconcileResult is what reconciling one FID changed.
type ReconcileResult struct {
	Written int64 // live hub messages Postgres lacked, written
	Deleted int64 // rows live in Postgres but gone from the hub, marked deleted
}

// Reconcile makes Postgres's live rows of fid equal the hub's live messages
// for the given types (casts, reactions, links, verifications, user data;
// all of them when none). Live hub messages without a live row are written
// through the writer, which applies the conflict rules; live rows whose
// hash the hub no longer has are marked deleted.
//
// The Postgres side is read before the hub's snapshot starts. A row read
// then was merged on the hub earlier still, so if the snapshot lacks its
// hash the hub has since removed, pruned or superseded it and deleting is
// right. A row that arrives while the snapshot is taken was not read and
// is left alone: follow → unfollow → refollow during a reconciliation never
// deletes the final follow. This assumes the rows came from the same hub
// (or one that is not ahead of it). Nothing is deleted unless the whole hub
// side was read.
func (w *Worker) Reconcile(ctx context.Context, fid uint64, types ...DataType) (ReconcileResult, error) {
	var res ReconcileResult
	if w.o.Store == nil {
		return res, fmt.Errorf("reconcile fid %d: %w", fid, errNoStore)
	}
	if len(types) == 0 {
		types = reconcileTypes
	}
	var written, deleted atomic.Int64
	fns := make([]func(context.Context) error, 0, len(types))
	for _, t := range types {
		if _, ok := reconcileTables[t]; !ok {
			return res, fmt.Errorf("reconcile fid %d: data type %q is not reconciled", fid, t)
		}
		fns = append(fns, func(ctx context.Context) error {
			n, d, err := w.reconcileType(ctx, fid, t)
			written.Add(n)
			deleted.Add(d)
			if err != nil {
				return fmt.Errorf("reconcile %s: %w", t, err)
			}
			return nil
		})
	}
	err := group(ctx, fns)
	res.Written, res.Deleted = written.Load(), deleted.Load()
	w.stats.deleted.Add(res.Deleted)
	return res, err
}

// markBatch bounds the hashes of one UPDATE.
const markBatch = 1000

func (w *Worker) reconcileType(ctx context.Context, fid uint64, t DataType) (written, deleted int64, err error) {
	live, err := w.o.Store.LiveHashes(ctx, t, fid)
	if err != nil {
		return 0, 0, err
	}
	inPG := make(map[string]struct{}, len(live))
	for _, h := range live {
		inPG[string(h)] = struct{}{}
	}
	onHub := make(map[string]struct{}, len(live))
	err = pages(ctx, func(ctx context.Context, token []byte) ([]byte, error) {
		var resp *pb.MessagesResponse
		if err := w.call(ctx, func(ctx context.Context) (err error) {
			resp, err = w.liveMessages(ctx, t, fid, token)
			return err
		}); err != nil {
			return nil, err
		}
		var missing []*pb.HubEvent
		for _, m := range resp.GetMessages() {
			// An invalid message still counts as on the hub, so that its row
			// is not deleted; it is not written.
			onHub[string(m.GetHash())] = struct{}{}
			if _, ok := inPG[string(m.GetHash())]; ok {
				continue
			}
			if err := w.check(fid, m); err != nil {
				w.deadLetter(ctx, DeadLetter{FID: fid, Type: t, Message: m, Reason: message.ReasonOf(err), Err: err})
				continue
			}
			missing = append(missing, mergeMessage(m))
		}
		if err := w.write(ctx, missing); err != nil {
			return nil, err
		}
		written += int64(len(missing))
		w.stats.messages.Add(int64(len(missing)))
		return resp.GetNextPageToken(), nil
	})
	if err != nil {
		return written, 0, err
	}
	var stale [][]byte
	for _, h := range live {
		if _, ok := onHub[string(h)]; !ok {
			stale = append(stale, h)
		}
	}
	for len(stale) > 0 {
		n := min(len(stale), markBatch)
		d, err := w.o.Store.MarkDeleted(ctx, t, fid, stale[:n])
		deleted += d
		if err != nil {
			return written, deleted, err
		}
		stale = stale[n:]
	}
	return written, deleted, nil
}

// liveMessages requests one page of fid's live adds of type t.
func (w *Worker) liveMessages(ctx context.Context, t DataType, fid uint64, token []byte) (*pb.MessagesResponse, error) {
	ps := &w.o.PageSize
	switch t {
	case Casts:
		return w.hub.GetCastsByFid(ctx, &pb.FidRequest{Fid: fid, PageSize: ps, PageToken: token})
	case Reactions:
		return w.hub.GetReactionsByFid(ctx, &pb.ReactionsByFidRequest{Fid: fid, PageSize: ps, PageToken: token})
	case Links:
		return w.hub.GetLinksByFid(ctx, &pb.LinksByFidRequest{Fid: fid, PageSize: ps, PageToken: token})
	case Verifications:
		return w.hub.GetVerificationsByFid(ctx, &pb.FidRequest{Fid: fid, PageSize: ps, PageToken: token})
	case UserData:
		return w.hub.GetUserDataByFid(ctx, &pb.FidRequest{Fid: fid, PageSize: ps, PageToken: token})
	}
	return nil, fmt.Errorf("data type %q has no live list", t)
}
