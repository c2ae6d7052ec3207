package sink

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	pb "github.com/waypointhq/waypoint/proto"
)

// tableDump returns query's rows as text, one string per row.
func tableDump(t *testing.T, pool *pgxpool.Pool, query string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Deletion times come from now() and differ between databases; whether a
// row is deleted, pruned or revoked must not.
const (
	dumpMessages = `SELECT (hash, fid, type, "timestamp", hash_scheme, signature_scheme, signer, raw,
		deleted_at IS NULL, pruned_at IS NULL, revoked_at IS NULL)::text FROM messages ORDER BY hash`
	dumpCasts = `SELECT (hash, fid, "timestamp", parent_fid, parent_hash, parent_url, text, embeds, mentions, mentions_positions, type,
		root_parent_fid, root_parent_hash, root_parent_url, deleted_at IS NULL, pruned_at IS NULL, revoked_at IS NULL)::text
		FROM casts ORDER BY hash`
)

// TestWriterCopyMatchesMerge stores the same random histories (marks,
// removes before and after adds, replies in and across batches,
// duplicates) through a writer that COPYs new messages and casts straight
// into their tables and through one that always merges: the tables must
// come out the same.
func TestWriterCopyMatchesMerge(t *testing.T) {
	fastPool, mergePool := migratedPool(t), migratedPool(t)
	fast := newTestWriter(t, fastPool)
	slow := newTestWriter(t, mergePool)
	ctx := context.Background()
	var copied, fellBack int
	for round := range 3 {
		rng := rand.New(rand.NewPCG(uint64(round)+7, 0xc0b1))
		var stream []*pb.HubEvent
		for c := range 60 {
			stream = append(stream, genCase(t, rng, uint64(5000+round*1000+c*4), uint64(round*10000+c*10))...)
		}
		for i := range len(stream) / 8 {
			stream = append(stream, stream[rng.IntN(i+1)])
		}
		rng.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })
		for len(stream) > 0 {
			n := min(len(stream), 1+rng.IntN(120))
			// Keep the merge-only writer off the fast path for good.
			slow.messagesCopy.skip.Store(math.MaxInt32)
			slow.castsCopy.skip.Store(math.MaxInt32)
			skipped := fast.messagesCopy.skip.Load() > 0
			if _, err := slow.Write(ctx, stream[:n]); err != nil {
				t.Fatal(err)
			}
			if _, err := fast.Write(ctx, stream[:n]); err != nil {
				t.Fatal(err)
			}
			switch {
			case !skipped && fast.messagesCopy.skip.Load() > 0:
				fellBack++
			case !skipped:
				copied++
			}
			stream = stream[n:]
		}
	}
	if copied == 0 || fellBack == 0 {
		t.Fatalf("fast path taken %d times, fell back %d times: want both", copied, fellBack)
	}
	for _, q := range []string{dumpMessages, dumpCasts} {
		a, b := tableDump(t, fastPool, q), tableDump(t, mergePool, q)
		if len(a) == 0 {
			t.Fatal("nothing stored")
		}
		if strings.Join(a, "\n") != strings.Join(b, "\n") {
			diff := 0
			for i := range min(len(a), len(b)) {
				if a[i] != b[i] && diff < 3 {
					t.Errorf("row %d differs:\n copy:  %s\n merge: %s", i, a[i], b[i])
					diff++
				}
			}
			t.Fatalf("%d rows with COPY, %d with merge only", len(a), len(b))
		}
	}
}

// TestWriterCopyKeepsEarlierMarks stores a prune while the messages table
// is off, then the message with it on: COPYed straight in, it must still
// come out pruned, with the mark's own time.
func TestWriterCopyKeepsEarlierMarks(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	c := castAdd(t, 50, 1, "pruned while messages were off", nil)
	mustWrite(t, newTestWriter(t, pool, WithWriteMessages(false)), prune(c))
	w := newTestWriter(t, pool)
	other := castAdd(t, 50, 2, "kept", nil)
	res := mustWrite(t, w, merge(c), merge(other))
	// Two COPYed, one of them then marked.
	if w.messagesCopy.skip.Load() != 0 || res.Rows["messages"] != 3 {
		t.Fatalf("messages not stored by COPY: skip %d, rows %v", w.messagesCopy.skip.Load(), res.Rows)
	}
	var same, otherLive bool
	err := pool.QueryRow(ctx, `SELECT m.pruned_at = mm.pruned_at AND m.deleted_at = mm.deleted_at,
		(SELECT deleted_at IS NULL FROM messages WHERE hash = $2)
		FROM messages m JOIN message_marks mm USING (hash) WHERE m.hash = $1`, c.Hash, other.Hash).Scan(&same, &otherLive)
	if err != nil || !same || !otherLive {
		t.Fatalf("pruned message matches its mark: %v, other live: %v (%v)", same, otherLive, err)
	}
	if isLive(t, pool, "casts", c.Hash) || !isLive(t, pool, "casts", other.Hash) {
		t.Fatal("casts: want the pruned one deleted and the other live")
	}
}

// TestWriterCopyBackoff checks that a redelivered batch falls back to the
// merge, that later batches skip the attempt for a while, and that a
// success ends the backoff.
func TestWriterCopyBackoff(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	batch := func(fid uint64) []*pb.HubEvent {
		return []*pb.HubEvent{merge(castAdd(t, fid, 1, "a", nil)), merge(castAdd(t, fid, 2, "b", nil))}
	}
	first := batch(60)
	mustWrite(t, w, first...)
	if got := w.messagesCopy.backoff.Load(); got != 0 {
		t.Fatalf("backoff %d after a clean COPY", got)
	}
	res := mustWrite(t, w, first...) // redelivered: the COPY meets stored rows
	if res.Rows["messages"] != 0 || res.Rows["casts"] != 0 || w.messagesCopy.skip.Load() != 1 || w.castsCopy.skip.Load() != 1 {
		t.Fatalf("redelivery: rows %v, skips %d/%d; want nothing stored and one batch skipped", res.Rows,
			w.messagesCopy.skip.Load(), w.castsCopy.skip.Load())
	}
	mustWrite(t, w, batch(61)...) // skipped: merged
	if w.messagesCopy.skip.Load() != 0 || w.messagesCopy.backoff.Load() != 1 {
		t.Fatalf("skip %d backoff %d after the skipped batch", w.messagesCopy.skip.Load(), w.messagesCopy.backoff.Load())
	}
	mustWrite(t, w, first...)
	if w.messagesCopy.skip.Load() != 2 {
		t.Fatalf("second failure: skip %d, want 2", w.messagesCopy.skip.Load())
	}
	mustWrite(t, w, batch(62)...)
	mustWrite(t, w, batch(63)...)
	mustWrite(t, w, batch(64)...) // tried again, succeeds
	if w.messagesCopy.backoff.Load() != 0 {
		t.Fatalf("backoff %d after a clean COPY", w.messagesCopy.backoff.Load())
	}
	for fid := uint64(60); fid <= 64; fid++ {
		var n int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM casts WHERE fid = $1 AND deleted_at IS NULL`, fid).Scan(&n); err != nil || n != 2 {
			t.Fatalf("fid %d: %d live casts (%v), want 2", fid, n, err)
		}
	}
}

func TestResolveRoots(t *testing.T) {
	h := func(n byte) []byte { return bytes.Repeat([]byte{n}, 20) }
	url := pgtype.Text{String: "chain://c", Valid: true}
	root := func(n byte) castRow { return castRow{hash: h(n), fid: int64(n), parentURL: url} }
	reply := func(n, parent byte) castRow { return castRow{hash: h(n), fid: int64(n), parentHash: h(parent)} }
	type want struct {
		root byte // 0: none known in the batch
		top  byte // 0: none
	}
	for _, tc := range []struct {
		name  string
		casts []castRow
		want  []want
	}{
		{"root alone", []castRow{root(1)}, []want{{}}},
		{"chain in order", []castRow{root(1), reply(2, 1), reply(3, 2)}, []want{{}, {1, 0}, {1, 0}}},
		{"chain reversed", []castRow{reply(3, 2), reply(2, 1), root(1)}, []want{{1, 0}, {1, 0}, {}}},
		{"parent outside", []castRow{reply(3, 2), reply(2, 9)}, []want{{0, 9}, {0, 9}}},
		{"self loop", []castRow{reply(4, 4)}, []want{{}}},
		{"cycle", []castRow{reply(5, 6), reply(6, 5), reply(7, 6)}, []want{{}, {}, {}}},
		{"odd hash length", []castRow{root(1), {hash: []byte{8}, parentHash: []byte{1}}}, []want{{}, {0, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &rows{casts: tc.casts}
			b.resolveRoots()
			for i, w := range tc.want {
				c := b.casts[i]
				var wantRoot, wantTop []byte
				if w.root != 0 {
					wantRoot = h(w.root)
				}
				if w.top != 0 {
					wantTop = h(w.top)
				}
				if tc.name == "odd hash length" && i == 1 {
					wantTop = []byte{1}
				}
				if !bytes.Equal(c.rootHash, wantRoot) || !bytes.Equal(c.top, wantTop) {
					t.Errorf("cast %d: root %x top %x, want root %x top %x", i, c.rootHash, c.top, wantRoot, wantTop)
				}
				if w.root != 0 && (c.rootFid != int64(w.root) || c.rootURL != url) {
					t.Errorf("cast %d: root fid %d url %v", i, c.rootFid, c.rootURL)
				}
			}
		})
	}
}

// TestWriterThreadRootsInOneBatch stores a thread whose replies come
// before their parents in one batch, next to a reply to a cast stored
// earlier and a reply to itself, which hostile input can forge.
func TestWriterThreadRootsInOneBatch(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	ctx := context.Background()
	stored := sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD, Fid: 70, Timestamp: 1,
		Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: "older root", Parent: &pb.CastAddBody_ParentUrl{ParentUrl: "chain://old"}}}})
	mustWrite(t, w, merge(stored))
	root := castAdd(t, 71, 1, "root", nil)
	c1 := castAdd(t, 72, 2, "reply", castID(root))
	c2 := castAdd(t, 73, 3, "reply to reply", castID(c1))
	late := castAdd(t, 74, 4, "reply to the older root", castID(stored))
	deep := castAdd(t, 75, 5, "reply to that", castID(late))
	self := castAdd(t, 76, 6, "loop", nil)
	self.Data.Body.(*pb.MessageData_CastAddBody).CastAddBody.Parent = &pb.CastAddBody_ParentCastId{ParentCastId: &pb.CastId{Fid: 76, Hash: self.Hash}}
	mustWrite(t, w, merge(deep), merge(c2), merge(late), merge(c1), merge(root), merge(self))
	for _, tc := range []struct {
		cast *pb.Message
		fid  int64
		root []byte
		url  *string
	}{
		{c1, 71, root.Hash, nil},
		{c2, 71, root.Hash, nil},
		{late, 70, stored.Hash, ptr("chain://old")},
		{deep, 70, stored.Hash, ptr("chain://old")},
		{self, 0, nil, nil},
	} {
		var rf *int64
		var rh []byte
		var ru *string
		if err := pool.QueryRow(ctx, `SELECT root_parent_fid, root_parent_hash, root_parent_url FROM casts WHERE hash = $1`, tc.cast.Hash).Scan(&rf, &rh, &ru); err != nil {
			t.Fatal(err)
		}
		gotFid := int64(0)
		if rf != nil {
			gotFid = *rf
		}
		if gotFid != tc.fid || !bytes.Equal(rh, tc.root) || fmt.Sprint(deref(ru)) != fmt.Sprint(deref(tc.url)) {
			t.Errorf("cast %q: root (%v, %x, %v), want (%d, %x, %v)", tc.cast.Data.GetCastAddBody().Text, gotFid, rh, deref(ru), tc.fid, tc.root, deref(tc.url))
		}
	}
}

func ptr(s string) *string { return &s }

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// TestFieldEncTimestamps checks the binary timestamptz encoding against the
// server's reading of it, around the 2000 epoch and with sub-second parts.
func TestFieldEncTimestamps(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `CREATE TABLE ts_check (n int4, ts timestamptz)`); err != nil {
		t.Fatal(err)
	}
	times := []time.Time{
		time.Date(1999, 12, 31, 23, 59, 59, 999_999_000, time.UTC),
		time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2021, 1, 1, 0, 0, 1, 123_456_000, time.FixedZone("x", 3600)),
		time.Unix(1<<37, 0).UTC(),
	}
	var e fieldEnc
	e.begin(false, 0)
	for i, ts := range times {
		e.row(2)
		e.int4(int32(i))
		e.timestamptz(ts)
	}
	if _, err := e.send(ctx, conn.Conn().PgConn(), `COPY ts_check (n, ts) FROM STDIN (FORMAT binary)`); err != nil {
		t.Fatal(err)
	}
	for i, want := range times {
		var got time.Time
		if err := conn.QueryRow(ctx, `SELECT ts FROM ts_check WHERE n = $1`, i).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if !got.Equal(want) {
			t.Errorf("time %d: stored %v, want %v", i, got, want)
		}
	}
}

// TestWriterCopyTakesAddsTheBatchRemoves checks that messages a batch both
// merges and deletes, prunes or revokes are COPYed with the new ones and
// still come out marked, with their marks' own times, while a message the
// batch only marks, stored before, is left to the merge.
func TestWriterCopyTakesAddsTheBatchRemoves(t *testing.T) {
	pool := migratedPool(t)
	ctx := context.Background()
	w := newTestWriter(t, pool)
	old := castAdd(t, 52, 1, "stored before", nil)
	mustWrite(t, w, merge(old))
	c := castAdd(t, 52, 2, "removed", nil)
	r := reaction(t, false, 52, 3, pb.ReactionType_REACTION_TYPE_LIKE, castID(old), "")
	p := link(t, false, 52, 4, "follow", 53)
	kept := castAdd(t, 52, 5, "kept", nil)
	batch := []*pb.HubEvent{
		merge(c), merge(r), merge(p), merge(kept),
		merge(castRemove(t, 52, 6, c.Hash), c),
		merge(reaction(t, true, 52, 7, pb.ReactionType_REACTION_TYPE_LIKE, castID(old), ""), r),
		prune(p),
		revoke(old),
	}
	staged := &rows{writeMessages: true}
	for _, ev := range batch {
		staged.add(ev)
	}
	for _, tc := range []struct {
		m   *pb.Message
		new bool
	}{{c, true}, {r, true}, {p, true}, {kept, true}, {old, false}} {
		for i := range staged.messages {
			if m := &staged.messages[i]; bytes.Equal(m.hash, tc.m.Hash) && staged.messageIsNew(m) != tc.new {
				t.Errorf("message %x: copied %v, want %v", tc.m.Hash, !tc.new, tc.new)
			}
		}
	}
	mustWrite(t, w, batch...)
	if w.messagesCopy.skip.Load() != 0 {
		t.Fatal("the COPY met a stored row")
	}
	for _, h := range [][]byte{c.Hash, r.Hash, p.Hash, old.Hash} {
		var same bool
		err := pool.QueryRow(ctx, `SELECT m.deleted_at = mm.deleted_at
			AND m.pruned_at IS NOT DISTINCT FROM mm.pruned_at AND m.revoked_at IS NOT DISTINCT FROM mm.revoked_at
			FROM messages m JOIN message_marks mm USING (hash) WHERE m.hash = $1`, h).Scan(&same)
		if err != nil || !same {
			t.Errorf("message %x: deletion columns match its mark: %v (%v)", h, same, err)
		}
	}
	if !isLive(t, pool, "messages", kept.Hash) {
		t.Error("the unmarked message is not live")
	}
	for _, tc := range []struct {
		table string
		hash  []byte
	}{{"casts", c.Hash}, {"casts", old.Hash}, {"reactions", r.Hash}, {"links", p.Hash}} {
		if isLive(t, pool, tc.table, tc.hash) {
			t.Errorf("%s: %x live although marked", tc.table, tc.hash)
		}
	}
}
