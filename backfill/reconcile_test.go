package backfill

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc/codes"

	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/message"
	"github.com/waypointhq/waypoint/migrations"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/sink"
)

func migratedPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(ctxT(t), testsupport.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := migrations.Up(ctxT(t), pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pool
}

// sqlWriter stores cast and link adds the way the sink's tables hold them
// (links: one row per key, the newest message wins), enough for
// reconciliation to have something real to compare against.
type sqlWriter struct{ pool *pgxpool.Pool }

func (w sqlWriter) Write(ctx context.Context, events []*pb.HubEvent) error {
	for _, e := range events {
		m := e.GetMergeMessageBody().GetMessage()
		if err := w.put(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (w sqlWriter) put(ctx context.Context, m *pb.Message) error {
	d := m.GetData()
	ts := message.Time(d.GetTimestamp())
	var err error
	switch d.GetType() {
	case pb.MessageType_MESSAGE_TYPE_CAST_ADD:
		_, err = w.pool.Exec(ctx, `INSERT INTO casts (hash, fid, "timestamp", text) VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING`,
			m.Hash, int64(d.Fid), ts, d.GetCastAddBody().GetText())
	case pb.MessageType_MESSAGE_TYPE_LINK_ADD:
		// The sink keeps every version of a key and only the newest live.
		key := []any{int64(d.Fid), int64(d.GetLinkBody().GetTargetFid()), d.GetLinkBody().GetType(), ts}
		if _, err = w.pool.Exec(ctx, `UPDATE links SET deleted_at = $4
WHERE fid = $1 AND target_fid = $2 AND type = $3 AND deleted_at IS NULL AND "timestamp" < $4`, key...); err != nil {
			return err
		}
		_, err = w.pool.Exec(ctx, `
INSERT INTO links (hash, fid, target_fid, type, "timestamp", deleted_at)
SELECT $1, $2, $3, $4, $5, CASE WHEN EXISTS (SELECT 1 FROM links WHERE fid = $2 AND target_fid = $3 AND type = $4 AND "timestamp" >= $5) THEN $5::timestamptz END
ON CONFLICT (hash) DO NOTHING`,
			m.Hash, int64(d.Fid), int64(d.GetLinkBody().GetTargetFid()), d.GetLinkBody().GetType(), ts)
	}
	return err
}

// unfollow applies a LINK_REMOVE as the sink would: the remove is stored
// as a deleted version and the older live version dies.
func (w sqlWriter) unfollow(ctx context.Context, m *pb.Message) error {
	d := m.GetData()
	ts := message.Time(d.GetTimestamp())
	key := []any{int64(d.Fid), int64(d.GetLinkBody().GetTargetFid()), d.GetLinkBody().GetType(), ts}
	if _, err := w.pool.Exec(ctx, `UPDATE links SET deleted_at = $4
WHERE fid = $1 AND target_fid = $2 AND type = $3 AND deleted_at IS NULL AND "timestamp" < $4`, key...); err != nil {
		return err
	}
	_, err := w.pool.Exec(ctx, `
INSERT INTO links (hash, fid, target_fid, type, "timestamp", is_remove, deleted_at) VALUES ($1, $2, $3, $4, $5, true, $5)
ON CONFLICT (hash) DO NOTHING`,
		m.Hash, int64(d.Fid), int64(d.GetLinkBody().GetTargetFid()), d.GetLinkBody().GetType(), ts)
	return err
}

func rowsOf(t *testing.T, pool *pgxpool.Pool, table string, fid uint64) map[string]bool {
	t.Helper()
	rows, err := pool.Query(ctxT(t), "SELECT hash, deleted_at IS NOT NULL FROM "+table+" WHERE fid = $1", int64(fid))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var h []byte
		var del bool
		if err := rows.Scan(&h, &del); err != nil {
			t.Fatal(err)
		}
		out[string(h)] = del
	}
	return out
}

func castMsg(t *testing.T, f *fixture, fid uint64, text string) *pb.Message {
	return f.sign(t, &pb.MessageData{Fid: fid, Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD,
		Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: text}}})
}

func linkMsg(t *testing.T, f *fixture, fid, target uint64, remove bool) *pb.Message {
	typ := pb.MessageType_MESSAGE_TYPE_LINK_ADD
	if remove {
		typ = pb.MessageType_MESSAGE_TYPE_LINK_REMOVE
	}
	return f.sign(t, &pb.MessageData{Fid: fid, Type: typ,
		Body: &pb.MessageData_LinkBody{LinkBody: &pb.LinkBody{Type: "follow", Target: &pb.LinkBody_TargetFid{TargetFid: target}}}})
}

func TestReconcileFixesBothDirections(t *testing.T) {
	pool := migratedPool(t)
	sw := sqlWriter{pool}
	f := newFixture()
	ctx := ctxT(t)
	a, b, c := castMsg(t, f, 5, "a"), castMsg(t, f, 5, "b"), castMsg(t, f, 5, "c")
	stale, gone := castMsg(t, f, 5, "removed on the hub"), castMsg(t, f, 5, "already deleted")
	other := castMsg(t, f, 6, "another fid")
	for _, m := range []*pb.Message{a, stale, gone, other} {
		if err := sw.put(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, "UPDATE casts SET deleted_at = now() WHERE hash = $1", gone.Hash); err != nil {
		t.Fatal(err)
	}
	hub := newTestHub()
	hub.live[5] = map[DataType][]*pb.Message{Casts: {a, b, c}}
	client, _ := hub.serve(t)
	w := NewWorker(nil, client, sw, quietOptions(WorkerOptions{Store: NewPostgresStore(pool), PageSize: 2, Validation: message.CheckFull}))

	res, err := w.Reconcile(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if res != (ReconcileResult{Written: 2, Deleted: 1}) {
		t.Fatalf("result = %+v, want 2 written and 1 deleted", res)
	}
	got := rowsOf(t, pool, "casts", 5)
	want := map[string]bool{string(a.Hash): false, string(b.Hash): false, string(c.Hash): false, string(stale.Hash): true, string(gone.Hash): true}
	if len(got) != len(want) {
		t.Fatalf("casts of fid 5 = %d rows, want %d", len(got), len(want))
	}
	for h, del := range want {
		if got[h] != del {
			t.Errorf("row %x deleted = %v, want %v", h, got[h], del)
		}
	}
	if rowsOf(t, pool, "casts", 6)[string(other.Hash)] {
		t.Fatal("a row of another fid was deleted")
	}
	// A second run finds nothing to do.
	if res, err := w.Reconcile(ctx, 5); err != nil || res != (ReconcileResult{}) {
		t.Fatalf("second reconcile = %+v, %v", res, err)
	}
}

// TestReconcileKeepsRefollow runs follow → unfollow → refollow while a
// reconciliation is in flight, at the two moments that matter: after the
// hub answered with the old follow (the naive order — hub snapshot first,
// Postgres second — would then delete the final follow), and before it
// answered.
func TestReconcileKeepsRefollow(t *testing.T) {
	for _, when := range []string{"after", "before"} {
		t.Run("hub answers "+map[string]string{"after": "before", "before": "after"}[when]+" the refollow", func(t *testing.T) {
			pool := migratedPool(t)
			sw := sqlWriter{pool}
			f := newFixture()
			ctx := ctxT(t)
			follow := linkMsg(t, f, 5, 77, false)
			unfollow := linkMsg(t, f, 5, 77, true)
			refollow := linkMsg(t, f, 5, 77, false)
			if err := sw.put(ctx, follow); err != nil {
				t.Fatal(err)
			}
			hub := newTestHub()
			hub.live[5] = map[DataType][]*pb.Message{Links: {follow}}
			var fired atomic.Bool
			userActs := func(method string, fid uint64) {
				if method != "GetLinksByFid" || fired.Swap(true) {
					return
				}
				hub.mu.Lock()
				hub.live[5][Links] = []*pb.Message{refollow}
				hub.mu.Unlock()
				// Ingest delivers the unfollow and the refollow meanwhile.
				if err := sw.unfollow(ctx, unfollow); err != nil {
					t.Error(err)
				}
				if err := sw.put(ctx, refollow); err != nil {
					t.Error(err)
				}
			}
			if when == "after" {
				hub.after = userActs
			} else {
				hub.before = userActs
			}
			client, _ := hub.serve(t)
			w := NewWorker(nil, client, sw, quietOptions(WorkerOptions{Store: NewPostgresStore(pool)}))
			if _, err := w.Reconcile(ctx, 5, Links); err != nil {
				t.Fatal(err)
			}
			if !fired.Load() {
				t.Fatal("the user never acted")
			}
			got := rowsOf(t, pool, "links", 5)
			if del, ok := got[string(refollow.Hash)]; !ok || del {
				t.Fatalf("links of fid 5 = %v: the final follow %x must be live", got, refollow.Hash)
			}
			// And the next reconciliation, with everything settled, agrees.
			if res, err := w.Reconcile(ctx, 5, Links); err != nil || res.Deleted != 0 {
				t.Fatalf("settled reconcile = %+v, %v", res, err)
			}
		})
	}
}

func TestReconcileDeletesNothingWhenTheHubFails(t *testing.T) {
	pool := migratedPool(t)
	sw := sqlWriter{pool}
	f := newFixture()
	ctx := ctxT(t)
	stale := castMsg(t, f, 5, "stale")
	if err := sw.put(ctx, stale); err != nil {
		t.Fatal(err)
	}
	hub := newTestHub()
	var live []*pb.Message
	for i := range 5 {
		live = append(live, castMsg(t, f, 5, strings.Repeat("x", i+1)))
	}
	hub.live[5] = map[DataType][]*pb.Message{Casts: live}
	var calls atomic.Int64
	hub.failCode = codes.Internal
	hub.before = func(method string, fid uint64) {
		if calls.Add(1) == 2 { // the second page
			hub.failFID.Store(5)
		}
	}
	client, _ := hub.serve(t)
	w := NewWorker(nil, client, sw, quietOptions(WorkerOptions{Store: NewPostgresStore(pool), PageSize: 2}))
	res, err := w.Reconcile(ctx, 5, Casts)
	if err == nil {
		t.Fatal("reconcile succeeded although the hub failed")
	}
	if res.Deleted != 0 || rowsOf(t, pool, "casts", 5)[string(stale.Hash)] {
		t.Fatalf("result %+v: a row was deleted on a partial hub snapshot", res)
	}
}

func TestReconcileJob(t *testing.T) {
	pool := migratedPool(t)
	sw := sqlWriter{pool}
	f := newFixture()
	ctx := ctxT(t)
	hub := newTestHub()
	var stale []*pb.Message
	for fid := uint64(1); fid <= 4; fid++ {
		hub.live[fid] = map[DataType][]*pb.Message{Casts: {castMsg(t, f, fid, "live")}, Links: {linkMsg(t, f, fid, 100, false)}}
		s := castMsg(t, f, fid, "stale")
		if err := sw.put(ctx, s); err != nil {
			t.Fatal(err)
		}
		stale = append(stale, s)
	}
	client, _ := hub.serve(t)
	q := newTestQueue(t)
	mustEnqueue(t, q, []uint64{1, 2, 3, 4}, EnqueueRequest{Kind: KindReconcile})
	ws := runWorkers(t, q, 1, func(int) *Worker {
		return NewWorker(q, client, sw, quietOptions(WorkerOptions{Store: NewPostgresStore(pool)}))
	})
	if st := mustStatus(t, q); st.Done.FIDs != 4 || st.Failed.Jobs != 0 {
		t.Fatalf("status = %v", st)
	}
	if d := ws[0].Stats().Deleted; d != 4 {
		t.Fatalf("deleted = %d, want 4", d)
	}
	for i, s := range stale {
		fid := uint64(i + 1)
		casts := rowsOf(t, pool, "casts", fid)
		if !casts[string(s.Hash)] || len(casts) != 2 {
			t.Fatalf("casts of fid %d = %v", fid, casts)
		}
		if links := rowsOf(t, pool, "links", fid); len(links) != 1 {
			t.Fatalf("links of fid %d = %v", fid, links)
		}
	}
	// Reconciliation reads the live lists, not every message ever stored.
	if n := hub.count("GetAllCastMessagesByFid") + hub.count("GetAllLinkMessagesByFid"); n != 0 {
		t.Fatalf("a reconcile job ran a backfill: %d GetAll*MessagesByFid calls", n)
	}
}

// sinkWriter writes through the sink's writer, so reconciliation meets the
// real conflict rules of every table.
func sinkWriter(t *testing.T, pool *pgxpool.Pool) Writer {
	t.Helper()
	sw, err := sink.NewWriter(ctxT(t), pool, sink.WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	return WriterFunc(func(ctx context.Context, events []*pb.HubEvent) error {
		_, err := sw.Write(ctx, events)
		return err
	})
}

// liveKeys returns fid's live rows of a compared type, keyed as
// reconciliation keys them.
func liveKeys(t *testing.T, pool *pgxpool.Pool, dt DataType, fid uint64) map[string]bool {
	t.Helper()
	keys, err := NewPostgresStore(pool).LiveHashes(ctxT(t), dt, fid)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, k := range keys {
		out[string(k)] = true
	}
	return out
}

// TestReconcileEveryStore gives Postgres, in every compared store, rows the
// hub no longer has (removed, superseded or never there) and lacks rows
// the hub has, then checks that one reconciliation leaves exactly the
// hub's live set, and that on-chain events and link compact states the
// database lacked were written.
func TestReconcileEveryStore(t *testing.T) {
	pool := migratedPool(t)
	w := sinkWriter(t, pool)
	f := newFixture()
	ctx := ctxT(t)
	const fid = 5
	msg := func(typ pb.MessageType, body func(d *pb.MessageData)) *pb.Message {
		d := &pb.MessageData{Fid: fid, Type: typ}
		body(d)
		return f.sign(t, d)
	}
	react := func(url string) *pb.Message {
		return msg(pb.MessageType_MESSAGE_TYPE_REACTION_ADD, func(d *pb.MessageData) {
			d.Body = &pb.MessageData_ReactionBody{ReactionBody: &pb.ReactionBody{Type: pb.ReactionType_REACTION_TYPE_LIKE, Target: &pb.ReactionBody_TargetUrl{TargetUrl: url}}}
		})
	}
	verify := func(addr string) *pb.Message {
		return msg(pb.MessageType_MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS, func(d *pb.MessageData) {
			d.Body = &pb.MessageData_VerificationAddAddressBody{VerificationAddAddressBody: &pb.VerificationAddAddressBody{Address: []byte(addr)}}
		})
	}
	userData := func(typ pb.UserDataType, v string) *pb.Message {
		return msg(pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD, func(d *pb.MessageData) {
			d.Body = &pb.MessageData_UserDataBody{UserDataBody: &pb.UserDataBody{Type: typ, Value: v}}
		})
	}
	lend := func(to uint64) *pb.Message {
		return msg(pb.MessageType_MESSAGE_TYPE_LEND_STORAGE, func(d *pb.MessageData) {
			d.Body = &pb.MessageData_LendStorageBody{LendStorageBody: &pb.LendStorageBody{ToFid: to, NumUnits: 2}}
		})
	}
	proof := func(name string, sig string) *pb.UserNameProof {
		f.ts++
		return &pb.UserNameProof{Fid: fid, Name: []byte(name), Type: pb.UserNameType_USERNAME_TYPE_FNAME,
			Timestamp: uint64(f.ts), Signature: []byte(sig), Owner: []byte("owner-of-" + name)}
	}

	// Per store: what Postgres holds before (kept: on the hub too; stale:
	// not on the hub any more) and what only the hub has (missing).
	type store struct {
		dt                   DataType
		kept, stale, missing []*pb.Message
		keptP, staleP, missP []*pb.UserNameProof
	}
	oldName := userData(pb.UserDataType_USER_DATA_TYPE_DISPLAY, "old name")
	stores := []store{
		{dt: Casts, kept: []*pb.Message{castMsg(t, f, fid, "kept")}, stale: []*pb.Message{castMsg(t, f, fid, "deleted on the hub")}, missing: []*pb.Message{castMsg(t, f, fid, "cast during the gap")}},
		{dt: Reactions, kept: []*pb.Message{react("https://a")}, stale: []*pb.Message{react("https://unliked")}, missing: []*pb.Message{react("https://b")}},
		{dt: Links, kept: []*pb.Message{linkMsg(t, f, fid, 10, false)}, stale: []*pb.Message{linkMsg(t, f, fid, 11, false)}, missing: []*pb.Message{linkMsg(t, f, fid, 12, false)}},
		{dt: Verifications, kept: []*pb.Message{verify("addr-kept")}, stale: []*pb.Message{verify("addr-removed")}, missing: []*pb.Message{verify("addr-new")}},
		// The old display name is superseded on the hub by the new one.
		{dt: UserData, kept: []*pb.Message{userData(pb.UserDataType_USER_DATA_TYPE_BIO, "bio")}, stale: []*pb.Message{oldName, userData(pb.UserDataType_USER_DATA_TYPE_URL, "pruned url")},
			missing: []*pb.Message{userData(pb.UserDataType_USER_DATA_TYPE_DISPLAY, "new name")}},
		{dt: LendStorage, kept: []*pb.Message{lend(20)}, stale: []*pb.Message{lend(21)}, missing: []*pb.Message{lend(22)}},
		{dt: UsernameProofs, keptP: []*pb.UserNameProof{proof("kept", "sig-kept")}, staleP: []*pb.UserNameProof{proof("transferred", "sig-transferred")},
			missP: []*pb.UserNameProof{proof("registered", "sig-registered")}},
	}
	hub := newTestHub()
	hub.live[fid] = map[DataType][]*pb.Message{}
	hub.all[fid] = map[DataType][]*pb.Message{}
	var before []*pb.HubEvent
	for _, s := range stores {
		for _, m := range append(append([]*pb.Message(nil), s.kept...), s.stale...) {
			before = append(before, mergeMessage(m))
		}
		for _, p := range append(append([]*pb.UserNameProof(nil), s.keptP...), s.staleP...) {
			before = append(before, proofEvent(p))
		}
		live := append(append([]*pb.Message(nil), s.kept...), s.missing...)
		hub.live[fid][s.dt] = live
		hub.all[fid][s.dt] = live // lend storage's live list
		hub.proofs[fid] = append(hub.proofs[fid], append(append([]*pb.UserNameProof(nil), s.keptP...), s.missP...)...)
	}
	compact := f.sign(t, &pb.MessageData{Fid: fid, Type: pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE,
		Body: &pb.MessageData_LinkCompactStateBody{LinkCompactStateBody: &pb.LinkCompactStateBody{Type: "follow", TargetFids: []uint64{10, 12}}}})
	hub.compact[fid] = []*pb.Message{compact}
	signer := &pb.OnChainEvent{Type: pb.OnChainEventType_EVENT_TYPE_SIGNER, Fid: fid, BlockNumber: 7, BlockHash: []byte("block"),
		TransactionHash: []byte("tx-signer"), LogIndex: 3, Body: &pb.OnChainEvent_SignerEventBody{SignerEventBody: &pb.SignerEventBody{
			Key: make([]byte, 32), KeyType: 1, EventType: pb.SignerEventType_SIGNER_EVENT_TYPE_ADD}}}
	hub.onchain[fid] = map[pb.OnChainEventType][]*pb.OnChainEvent{pb.OnChainEventType_EVENT_TYPE_SIGNER: {signer}}
	if err := w.Write(ctx, before); err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		if got, want := len(liveKeys(t, pool, s.dt, fid)), len(s.kept)+len(s.keptP)+len(s.stale)+len(s.staleP); got != want {
			t.Fatalf("%s before reconciling: %d live rows, want %d", s.dt, got, want)
		}
	}

	client, _ := hub.serve(t)
	wk := NewWorker(nil, client, w, quietOptions(WorkerOptions{Store: NewPostgresStore(pool), PageSize: 1, Validation: message.CheckFull}))
	res, err := wk.Reconcile(ctx, fid)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stores {
		want := map[string]bool{}
		for _, m := range append(append([]*pb.Message(nil), s.kept...), s.missing...) {
			want[string(m.Hash)] = true
		}
		for _, p := range append(append([]*pb.UserNameProof(nil), s.keptP...), s.missP...) {
			want[string(proofKey(p))] = true
		}
		got := liveKeys(t, pool, s.dt, fid)
		if len(got) != len(want) {
			t.Errorf("%s: %d live rows, want the hub's %d", s.dt, len(got), len(want))
		}
		for k := range want {
			if !got[k] {
				t.Errorf("%s: live item %x of the hub is not live in postgres", s.dt, k)
			}
		}
	}
	var compacts, signers int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM link_compact_states WHERE fid = $1 AND deleted_at IS NULL),
	       (SELECT count(*) FROM onchain_events WHERE fid = $1)`, fid).Scan(&compacts, &signers); err != nil {
		t.Fatal(err)
	}
	if compacts != 1 || signers != 1 {
		t.Errorf("link compact states %d, on-chain events %d after reconciling, want 1 and 1", compacts, signers)
	}
	// One stale row per store: the old display name was superseded by the
	// writer when the new one arrived, the URL is reconciliation's.
	if want := (ReconcileResult{Written: int64(len(stores)), Deleted: int64(len(stores))}); res != want {
		t.Errorf("result = %+v, want %+v", res, want)
	}
	// Marked rows stay deleted when their messages come again (a late
	// redelivery from the stream), and a second run finds nothing to do.
	if err := w.Write(ctx, before); err != nil {
		t.Fatal(err)
	}
	res, err = wk.Reconcile(ctx, fid)
	if err != nil || res.Deleted != 0 {
		t.Fatalf("second reconcile = %+v, %v; a stale row came back", res, err)
	}
}
