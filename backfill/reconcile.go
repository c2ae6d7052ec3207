package backfill

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/sink"
)

// Store is the Postgres side of reconciliation: per compared data type,
// the keys of a FID's live rows (deleted_at IS NULL) and a way to mark rows
// deleted. A key is a message's hash, or for a username proof its
// proofKey. NewPostgresStore implements it over the tables casts,
// reactions, links, verifications, user_data, username_proofs and
// lend_storage.
type Store interface {
	LiveHashes(ctx context.Context, t DataType, fid uint64) ([][]byte, error)
	// MarkDeleted marks fid's live rows with the given keys deleted, for
	// good, and returns how many it changed.
	MarkDeleted(ctx context.Context, t DataType, fid uint64, keys [][]byte) (int64, error)
}

// DB is what NewPostgresStore needs; *pgxpool.Pool and *pgx.Conn have it.
type DB interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// comparedTable is how a compared data type is stored: its table, the SQL
// of a row's key and what marking a row deleted sets.
type comparedTable struct {
	table, key, set string
}

// Stores that keep every version of a key revive the best unmarked one
// when the live one is marked; a row the hub no longer has must not come
// back that way, so it is marked too. Casts and lend storage keep one row
// per message, and a redelivered message never clears deleted_at there.
const (
	setDeleted       = "deleted_at = now()"
	setDeletedMarked = "deleted_at = now(), marked = true"
)

// comparedTables maps the data types compared in both directions to their
// tables, each with columns fid and deleted_at.
var comparedTables = map[DataType]comparedTable{
	Casts:         {"casts", "hash", setDeleted},
	Reactions:     {"reactions", "hash", setDeletedMarked},
	Links:         {"links", "hash", setDeletedMarked},
	Verifications: {"verifications", "hash", setDeletedMarked},
	UserData:      {"user_data", "hash", setDeletedMarked},
	// Proof rows have no hash; see proofKey.
	UsernameProofs: {"username_proofs", `int8send(extract(epoch FROM "timestamp")::bigint) || signature`, setDeletedMarked},
	LendStorage:    {"lend_storage", "hash", setDeleted},
}

// proofKey identifies a username proof version among a FID's: its
// timestamp (big-endian seconds) and signature. The name is left out on
// purpose: Postgres keeps it sanitised, so it may not equal the hub's
// bytes, while the signature already covers it.
func proofKey(p *pb.UserNameProof) []byte {
	return append(binary.BigEndian.AppendUint64(nil, p.GetTimestamp()), p.GetSignature()...)
}

type pgStore struct{ db DB }

// NewPostgresStore returns a Store over db's tables.
func NewPostgresStore(db DB) Store { return pgStore{db} }

func (s pgStore) LiveHashes(ctx context.Context, t DataType, fid uint64) ([][]byte, error) {
	ct, ok := comparedTables[t]
	if !ok {
		return nil, fmt.Errorf("live hashes: data type %q is not compared", t)
	}
	rows, err := s.db.Query(ctx, "SELECT "+ct.key+" FROM "+ct.table+" WHERE fid = $1 AND deleted_at IS NULL", int64(fid))
	if err != nil {
		return nil, fmt.Errorf("live hashes of fid %d in %s: %w", fid, ct.table, err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		return nil, fmt.Errorf("live hashes of fid %d in %s: %w", fid, ct.table, err)
	}
	return keys, nil
}

func (s pgStore) MarkDeleted(ctx context.Context, t DataType, fid uint64, keys [][]byte) (int64, error) {
	ct, ok := comparedTables[t]
	if !ok {
		return 0, fmt.Errorf("mark deleted: data type %q is not compared", t)
	}
	mark := func(db DB) (int64, error) {
		tag, err := db.Exec(ctx, "UPDATE "+ct.table+" SET "+ct.set+" WHERE fid = $1 AND "+ct.key+" = ANY($2) AND deleted_at IS NULL", int64(fid), keys)
		if err != nil {
			return 0, fmt.Errorf("mark %d rows of fid %d deleted in %s: %w", len(keys), fid, ct.table, err)
		}
		if ct.set == setDeletedMarked && tag.RowsAffected() > 0 {
			// The version the hub has in a marked row's place may have
			// been written, and lost to it, before the mark.
			if err := sink.ReviveWinners(ctx, db, ct.table, fid); err != nil {
				return 0, err
			}
		}
		return tag.RowsAffected(), nil
	}
	b, ok := s.db.(interface {
		Begin(context.Context) (pgx.Tx, error)
	})
	if !ok {
		return mark(s.db)
	}
	// One transaction, so that a failed revival leaves the rows live and a
	// retry marks them, and revives, again.
	var n int64
	err := pgx.BeginFunc(ctx, b, func(tx pgx.Tx) (err error) {
		n, err = mark(tx)
		return err
	})
	return n, err
}

// ReconcileResult is what reconciling one FID changed.
type ReconcileResult struct {
	Written int64 // live hub messages Postgres lacked, written
	Deleted int64 // rows live in Postgres but gone from the hub, marked deleted
}

// Reconcile makes Postgres's live rows of fid equal the hub's live data
// for the given types (all when none). Casts, reactions, links,
// verifications, user data, username proofs and lend storage are compared
// in both directions: live hub items without a live row are written
// through the writer, which applies the conflict rules, and live rows
// whose key the hub no longer has are marked deleted. On-chain events are
// never deleted and link compact states are superseded by the writer, so
// those are only written again (the writer skips what it has).
//
// The Postgres side is read before the hub's snapshot starts. A row read
// then was merged on the hub earlier still, so if the snapshot lacks its
// key the hub has since removed, pruned or superseded it and deleting is
// right. A row that arrives while the snapshot is taken was not read and
// is left alone: follow → unfollow → refollow during a reconciliation never
// deletes the final follow. This assumes the rows came from the same hub
// (or one that is not ahead of it). Nothing is deleted unless the whole hub
// side of the type was read.
func (w *Worker) Reconcile(ctx context.Context, fid uint64, types ...DataType) (ReconcileResult, error) {
	var res ReconcileResult
	if w.o.Store == nil {
		return res, fmt.Errorf("reconcile fid %d: %w", fid, errNoStore)
	}
	if len(types) == 0 {
		types = allDataTypes
	}
	var written, deleted atomic.Int64
	compare := func(t DataType) func(context.Context) error {
		return func(ctx context.Context) error {
			n, d, err := w.reconcileType(ctx, fid, t)
			written.Add(n)
			deleted.Add(d)
			if err != nil {
				return fmt.Errorf("reconcile %s: %w", t, err)
			}
			return nil
		}
	}
	fns := make([]func(context.Context) error, 0, len(types)+len(onChainEventTypes))
	for _, t := range types {
		switch t {
		case OnChainEvents:
			for _, typ := range onChainEventTypes {
				fns = append(fns, func(ctx context.Context) error { return w.onChainEvents(ctx, fid, typ) })
			}
		case Links:
			links := compare(t)
			fns = append(fns, func(ctx context.Context) error {
				if err := links(ctx); err != nil {
					return err
				}
				return w.linkCompactState(ctx, fid)
			})
		default:
			if _, ok := comparedTables[t]; !ok {
				return res, fmt.Errorf("reconcile fid %d: unknown data type %q", fid, t)
			}
			fns = append(fns, compare(t))
		}
	}
	err := group(ctx, fns)
	res.Written, res.Deleted = written.Load(), deleted.Load()
	w.stats.deleted.Add(res.Deleted)
	return res, err
}

// markBatch bounds the keys of one UPDATE.
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
		var missing []*pb.HubEvent
		var next []byte
		if t == UsernameProofs {
			// The hub returns a FID's proofs in one response.
			var resp *pb.UsernameProofsResponse
			if err := w.call(ctx, func(ctx context.Context) (err error) {
				resp, err = w.hub.GetUserNameProofsByFid(ctx, &pb.FidRequest{Fid: fid, PageSize: &w.o.PageSize})
				return err
			}); err != nil {
				return nil, err
			}
			for _, p := range resp.GetProofs() {
				k := string(proofKey(p))
				onHub[k] = struct{}{}
				if _, ok := inPG[k]; !ok {
					missing = append(missing, proofEvent(p))
				}
			}
		} else {
			var resp *pb.MessagesResponse
			if err := w.call(ctx, func(ctx context.Context) (err error) {
				resp, err = w.liveMessages(ctx, t, fid, token)
				return err
			}); err != nil {
				return nil, err
			}
			for _, m := range resp.GetMessages() {
				// An invalid message still counts as on the hub, so that
				// its row is not deleted; it is not written.
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
			next = resp.GetNextPageToken()
		}
		if err := w.write(ctx, missing); err != nil {
			return nil, err
		}
		written += int64(len(missing))
		if t == UsernameProofs {
			w.stats.events.Add(int64(len(missing)))
		} else {
			w.stats.messages.Add(int64(len(missing)))
		}
		return next, nil
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
	case LendStorage:
		// Lend storage has no removes: every stored message is live.
		return w.hub.GetAllLendStorageMessagesByFid(ctx, &pb.FidTimestampRequest{Fid: fid, PageSize: ps, PageToken: token})
	}
	return nil, fmt.Errorf("data type %q has no live list", t)
}
