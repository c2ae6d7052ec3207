package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	pb "github.com/waypointhq/waypoint/proto"
)

// Embedder computes cast embeddings; embedding.NewLocal and
// embedding.NewHTTP satisfy it.
type Embedder interface {
	Dimensions() int
	Embed(ctx context.Context, texts []string) ([][]float32, error)
}

// embedInto is the allocation-free form the local embedder offers.
type embedInto interface {
	EmbedInto(text string, dst []float32) error
}

// WriterOption configures a Writer.
type WriterOption func(*Writer)

// WithEmbedder computes embeddings of new casts inline and stores them in
// the batch's transaction, queued for RunIndexer to make searchable. Use it
// for fast embedders; for slow ones leave it out and run FillEmbeddings
// beside the writer.
func WithEmbedder(e Embedder) WriterOption { return func(w *Writer) { w.embedder = e } }

// WithWriteMessages turns the messages table (every message's raw bytes) on
// or off; it is on by default.
func WithWriteMessages(on bool) WriterOption { return func(w *Writer) { w.writeMessages = on } }

// WithLogger sets the logger; the default is slog.Default().
func WithLogger(l *slog.Logger) WriterOption { return func(w *Writer) { w.log = l } }

// Writer stores batches of hub events. It is safe for concurrent use; each
// Write holds one pooled connection for the length of its transaction.
type Writer struct {
	pool          *pgxpool.Pool
	embedder      Embedder
	writeMessages bool
	log           *slog.Logger
	dims          int
	// free keeps staged batches for reuse with their grown buffers, which
	// a sync.Pool would drop at every garbage collection.
	free chan *rows

	// Fast-path state of the tables COPYed into directly.
	messagesCopy, castsCopy optimist

	obs  writerMetrics
	load *Load
}

// optimist decides whether to try a direct COPY into a table. After a COPY
// meets a stored row, the next batches skip the attempt, for exponentially
// longer after repeated failures; a success resets the backoff.
type optimist struct {
	skip, backoff atomic.Int32
}

func (o *optimist) try() bool {
	if o.skip.Load() > 0 {
		o.skip.Add(-1)
		return false
	}
	return true
}

func (o *optimist) failed() {
	n := min(max(2*o.backoff.Load(), 1), maxCopyBackoff)
	o.backoff.Store(n)
	o.skip.Store(n)
}

func (o *optimist) succeeded() { o.backoff.Store(0) }

// WriteResult says what one Write stored.
type WriteResult struct {
	// Events is the number of events given.
	Events int
	// Messages is the number of messages (including deleted and pruned
	// ones carried by events) staged.
	Messages int
	// Rows counts rows inserted or changed, by table.
	Rows map[string]int64
	// DeadLetters is the number of records written to dead_letters.
	DeadLetters int
	// Skipped counts events that carry no state (block confirmations,
	// merge failures).
	Skipped int
	// Embedded is the number of casts embedded inline.
	Embedded int
}

// NewWriter returns a Writer on pool, whose database must have the schema
// of package migrations applied.
func NewWriter(ctx context.Context, pool *pgxpool.Pool, opts ...WriterOption) (*Writer, error) {
	w := &Writer{pool: pool, writeMessages: true, log: slog.Default()}
	for _, o := range opts {
		o(w)
	}
	w.free = make(chan *rows, runtime.GOMAXPROCS(0))
	dims, err := embeddingDims(ctx, pool)
	if err != nil {
		return nil, err
	}
	w.dims = dims
	if w.embedder != nil && w.embedder.Dimensions() != w.dims {
		return nil, fmt.Errorf("sink: embedder makes %d-dimensional vectors, cast_embeddings holds %d", w.embedder.Dimensions(), w.dims)
	}
	return w, nil
}

// Write stores events in one transaction. If a row cannot be stored, the
// batch is retried by halves down to the event at fault, which goes to
// dead_letters while the rest commits. Errors returned are those of the
// database or context (nothing was stored by the failed attempt; the caller
// retries or stops).
func (w *Writer) Write(ctx context.Context, events []*pb.HubEvent) (WriteResult, error) {
	res := WriteResult{Events: len(events), Rows: make(map[string]int64)}
	if len(events) == 0 {
		return res, nil
	}
	start := time.Now()
	err := w.writeSplit(ctx, events, &res)
	w.load.add(time.Since(start))
	return res, err
}

func (w *Writer) writeSplit(ctx context.Context, events []*pb.HubEvent, res *WriteResult) error {
	var b *rows
	select {
	case b = <-w.free:
	default:
		b = &rows{}
	}
	defer func() {
		select {
		case w.free <- b:
		default:
		}
	}()
	b.reset()
	b.writeMessages = w.writeMessages
	for _, ev := range events {
		b.add(ev)
	}
	b.resolveRoots()
	part := WriteResult{Rows: make(map[string]int64)}
	err := w.commit(ctx, b, &part)
	if err == nil {
		res.add(&part)
		return nil
	}
	if ctx.Err() != nil || !isDataError(err) {
		return err
	}
	if len(events) > 1 {
		w.log.Warn("sink: batch failed, retrying by halves", "events", len(events), "err", err)
		mid := len(events) / 2
		if err := w.writeSplit(ctx, events[:mid], res); err != nil {
			return err
		}
		return w.writeSplit(ctx, events[mid:], res)
	}
	w.log.Error("sink: event cannot be stored, dead-lettering it", "shard", events[0].GetShardIndex(), "event", events[0].GetId(), "err", err)
	b.reset()
	b.deadLetterEvent(events[0], "store_failed", err.Error())
	part = WriteResult{Rows: make(map[string]int64)}
	if err := w.commit(ctx, b, &part); err != nil {
		return fmt.Errorf("sink: write dead letter: %w", err)
	}
	res.add(&part)
	return nil
}

func (r *WriteResult) add(o *WriteResult) {
	r.Messages += o.Messages
	r.DeadLetters += o.DeadLetters
	r.Skipped += o.Skipped
	r.Embedded += o.Embedded
	for k, v := range o.Rows {
		r.Rows[k] += v
	}
}

// isDataError reports whether err is caused by the rows rather than by the
// connection or the server: only those are worth bisecting the batch for.
func isDataError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54", "2F":
		return true
	}
	return false
}

func (w *Writer) commit(ctx context.Context, b *rows, res *WriteResult) error {
	// Embeddings are computed while the server takes the direct COPYs:
	// embed writes only b.embeddings and b.vectors, which copyDirect does
	// not touch.
	done := make(chan error, 1)
	go func() {
		n, err := w.embed(ctx, b)
		res.Embedded += n
		done <- err
	}()
	var embedErr error
	waited := false
	embedded := func() error {
		if !waited {
			embedErr, waited = <-done, true
		}
		return embedErr
	}
	var err error
	for attempt := 1; ; attempt++ {
		err = w.store(ctx, b, res, embedded)
		if err == nil || attempt == maxLiveKeyRaces || !(isLiveKeyRace(err) || errors.Is(err, errMissedMarks)) {
			break
		}
		// Another transaction made a version of the same key live while
		// this one recomputed it without seeing that version, or stored a
		// row this one marks without seeing it: run again, now that it is
		// committed. The failed attempt stored nothing.
		w.log.Debug("sink: concurrent write to a conflict key, retrying the batch", "attempt", attempt, "err", err)
		clear(res.Rows)
	}
	embedded() // b is reused once commit returns
	return err
}

// maxLiveKeyRaces bounds the attempts at a batch that keeps losing races.
const maxLiveKeyRaces = 5

// isLiveKeyRace reports whether err is a violation of a partial unique
// index that keeps one version of a conflict key live, which only
// concurrent transactions writing the same key can cause.
func isLiveKeyRace(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && strings.HasSuffix(pe.ConstraintName, "_live_key")
}

// store writes b in one transaction; embedded waits for the batch's
// embeddings and returns embed's error.
func (w *Writer) store(ctx context.Context, b *rows, res *WriteResult, embedded func() error) error {
	conn, err := w.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("sink: acquire connection: %w", err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("sink: begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	pg := conn.Conn().PgConn()
	var copying stopwatch
	copying.start()
	if err := w.copyDirect(ctx, pg, b); err != nil {
		return err
	}
	copying.stop()
	if err := embedded(); err != nil {
		return err
	}
	copying.start()
	if err := copyRows[embeddingRow](ctx, pg, &b.enc, copyEmbeddings, b.embeddings); err != nil {
		return err
	}
	if err := w.merge(ctx, conn.Conn(), b, res); err != nil {
		return err
	}
	if err := copyRows[deadLetterRow](ctx, pg, &b.enc, copyDeadLetters, b.dead); err != nil {
		return err
	}
	copying.stop()
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("sink: commit: %w", err)
	}
	w.obs.committed(b, copying.total)
	res.Rows["messages"] += int64(max(b.copiedMessages, 0))
	res.Rows["casts"] += int64(max(b.copiedCasts, 0))
	res.Messages += len(b.messages)
	res.DeadLetters += len(b.dead)
	res.Skipped += b.skipped
	return nil
}

// maxCopyBackoff bounds the batches copyDirect skips after a failure.
const maxCopyBackoff = 64

// copyDirect tries the fast path for the messages and casts tables, which
// take most rows and bytes: COPY the batch's rows straight into them, at a
// fraction of the cost of INSERT ... ON CONFLICT. It takes only rows that
// are new unless redelivered: not messages the batch only marks (a prune,
// revoke or merge-reported deletion usually carries a message stored long
// before; an add the batch merges and then removes is new), nor casts it
// marks or removes, or whose thread root needs looking up.
// The rest are left to the merge, which also takes every row of a table
// whose COPY met a stored row.
func (w *Writer) copyDirect(ctx context.Context, pg *pgconn.PgConn, b *rows) error {
	var err error
	if len(b.messages) > 0 && w.messagesCopy.try() {
		b.copiedMessages, err = copyNew(ctx, pg, &b.enc, &w.messagesCopy, "wp_messages", copyMessages, func(e *fieldEnc) {
			for i := range b.messages {
				if m := &b.messages[i]; b.messageIsNew(m) {
					m.encodeStored(e)
				}
			}
		})
		if err != nil {
			return err
		}
	}
	if len(b.casts) > 0 && w.castsCopy.try() {
		b.copiedCasts, err = copyNew(ctx, pg, &b.enc, &w.castsCopy, "wp_casts", copyCasts, func(e *fieldEnc) {
			for i := range b.casts {
				if c := &b.casts[i]; b.castIsNew(c) {
					c.encodeStored(e)
				}
			}
		})
	}
	return err
}

// copyNew COPYs the rows encode writes into t under a savepoint. Any row
// already stored (a redelivery, a backfill overlapping live events, another
// replica racing) fails the COPY with a unique violation, or a deadlock;
// then the savepoint is rolled back and copyNew returns -1. Otherwise it
// returns the rows stored.
func copyNew(ctx context.Context, pg *pgconn.PgConn, e *fieldEnc, o *optimist, savepoint string, t copyTarget, encode func(*fieldEnc)) (int, error) {
	e.begin(false, 0)
	encode(e)
	if e.rows == 0 {
		return 0, nil
	}
	if _, err := pg.Exec(ctx, "SAVEPOINT "+savepoint).ReadAll(); err != nil {
		return -1, fmt.Errorf("sink: savepoint: %w", err)
	}
	n, err := e.send(ctx, pg, t.sql)
	var pe *pgconn.PgError
	switch {
	case err == nil:
		o.succeeded()
	case errors.As(err, &pe) && (pe.Code == "23505" || pe.Code == "40P01"):
		// A stored row, or a replica COPYing the same new rows in
		// another order.
		o.failed()
		n = -1
		if _, err := pg.Exec(ctx, "ROLLBACK TO SAVEPOINT "+savepoint).ReadAll(); err != nil {
			return -1, fmt.Errorf("sink: roll back to savepoint: %w", err)
		}
	default:
		return -1, fmt.Errorf("sink: copy into %s: %w", t.table, err)
	}
	// Rows written under a savepoint carry its subtransaction id; later
	// ones need not.
	if _, err := pg.Exec(ctx, "RELEASE SAVEPOINT "+savepoint).ReadAll(); err != nil {
		return -1, fmt.Errorf("sink: release savepoint: %w", err)
	}
	return int(n), nil
}

// merge runs the batch's merge statements in one pipelined round trip.
// Each is a prepared statement of the connection, with its sources' arrays
// as parameters, run with a generic plan: planning these statements, long
// and made of many CTEs, costs more than running them on a batch of a few
// hundred rows, and their plans do not depend on the batch (they probe
// indexes per key whatever its size). A plan made while the tables were
// small and unanalysed could scan them once they are large, so the
// statements are prepared again on each connection after 1, 2, 4 and so on
// up to 4096 batches and then every 4096 (see generation), besides the
// replanning an ANALYZE of their tables causes. JIT is off because these
// statements are short and set-based: compiling them takes longer than
// running them.
// random_page_cost is that of cached or solid-state storage: the merges
// probe indexes with a few thousand keys, and at the default (a spinning
// disk's) the planner prefers scanning a whole table or index to probing
// it far sooner.
func (w *Writer) merge(ctx context.Context, c *pgx.Conn, b *rows, res *WriteResult) error {
	stmts := w.statements(b)
	if len(stmts) == 0 {
		return nil
	}
	if err := preparePlans(ctx, c, stmts); err != nil {
		return err
	}
	pg := c.PgConn()
	var encoded [numSources]bool
	for _, m := range stmts {
		for _, s := range m.sources {
			if !encoded[s.id] {
				b.encodeSource(s)
				encoded[s.id] = true
			}
		}
	}
	batch := &pgconn.Batch{}
	batch.ExecParams("SET LOCAL jit = off", nil, nil, nil, nil)
	batch.ExecParams("SET LOCAL random_page_cost = 1.1", nil, nil, nil, nil)
	batch.ExecParams("SET LOCAL plan_cache_mode = force_generic_plan", nil, nil, nil, nil)
	for _, m := range stmts {
		params := b.params[:0]
		for _, s := range m.sources {
			params = append(params, b.arrays[s.id]...)
		}
		b.params = params
		batch.ExecPrepared(m.name, params, m.formats, nil)
	}
	mrr := pg.ExecBatch(ctx, batch)
	missed := false
	i := -3 // the SETs
	for mrr.NextResult() {
		rr := mrr.ResultReader()
		var counted int64
		for rr.NextRow() {
			if i >= 0 && stmts[i].counted && len(rr.Values()) == 1 {
				counted, _ = strconv.ParseInt(string(rr.Values()[0]), 10, 64)
			}
		}
		ct, err := rr.Close()
		if err != nil {
			break
		}
		if i >= 0 {
			if stmts[i].check {
				missed = missed || counted > 0
			} else if stmts[i].counted {
				res.Rows[stmts[i].table] += counted
			} else {
				res.Rows[stmts[i].table] += ct.RowsAffected()
			}
		}
		i++
	}
	if err := mrr.Close(); err != nil {
		what := "merge"
		if i >= 0 && i < len(stmts) {
			what = "merge into " + stmts[i].table
		}
		return fmt.Errorf("sink: %s: %w", what, err)
	}
	if missed {
		return errMissedMarks
	}
	return nil
}

// errMissedMarks fails an attempt at a batch in which a concurrent
// transaction committed rows of a keyed store or of compact states without
// the batch's marks (see Writer.statements).
var errMissedMarks = errors.New("sink: rows committed concurrently lack the batch's marks")

// statements lists the merge statements the batch needs, in dependency
// order: marks first, so that every later statement sees each message's
// marks; then the stores. Rows the batch inserts take their marks as they
// are inserted; rows stored before get them from an update, which for the
// keyed stores and compact states comes first, since their merges decide
// which version is live from the stored rows' deletion.
//
// The messages, casts and lend_storage rows get that update last instead.
// Another writer (a backfill page beside live traffic) may hold the
// message's row inserted but uncommitted, having read message_marks before
// this batch committed its mark: an update run before this batch's insert
// does not see that row, and the insert, which waits for the other
// transaction, then finds a committed row and leaves it alone, so the
// message would stay live for good. Run after the insert, the update sees
// the row. The keyed stores and compact states cannot be marked so late,
// since marking a live version must let their merge pick the next one: for
// them a last statement counts such rows, and any makes the batch run
// again (see commit), when its first update sees them.
func (w *Writer) statements(b *rows) []*mergeStmt {
	s := b.stmts[:0]
	if len(b.marks) > 0 {
		s = append(s, mergeMarks)
		for t, m := range mergeApplyMarks {
			if m != nil && !marksAppliedLast(int16(t)) && b.marked&(1<<t) != 0 {
				s = append(s, m)
			}
		}
	}
	if len(b.messages) > b.copiedMessages {
		s = append(s, mergeMessages)
	}
	if b.copiedCasts > 0 {
		s = append(s, mergeCastsMarked)
	}
	if len(b.casts) > b.copiedCasts {
		s = append(s, mergeCasts)
	}
	if len(b.castRemoves) > 0 {
		s = append(s, mergeCastRemoves)
	}
	if len(b.casts) > 0 {
		s = append(s, mergeOrphans)
	}
	keyed := func(t int16, n int) {
		if n > 0 {
			s = append(s, mergeKeyed[t])
		}
	}
	keyed(tableReactions, len(b.reactions))
	// Compact states go first so that links see them.
	if len(b.compacts) > 0 {
		s = append(s, mergeCompacts, mergeCompactSupsede, mergeCompactLinks[0], mergeCompactLinks[1])
	}
	keyed(tableLinks, len(b.links))
	keyed(tableVerifications, len(b.verifications))
	keyed(tableUserData, len(b.userData))
	if len(b.proofs) > 0 {
		s = append(s, mergeProofs, mergeProofsKill, mergeProofsRevive)
	}
	if len(b.lends) > 0 {
		s = append(s, mergeLends)
	}
	if len(b.onchain) > 0 {
		s = append(s, mergeOnchain...)
	}
	if b.copiedMessages > 0 {
		s = append(s, mergeMessagesMarks)
	} else if len(b.marks) > 0 && w.writeMessages {
		s = append(s, mergeApplyMarksMessages)
	}
	if len(b.marks) > 0 {
		for t, m := range mergeApplyMarks {
			if m == nil || b.marked&(1<<t) == 0 {
				continue
			}
			if marksAppliedLast(int16(t)) {
				s = append(s, m)
			} else {
				s = append(s, mergeMissedMarks[t])
			}
		}
	}
	b.stmts = s
	return s
}

// marksAppliedLast reports whether store table t takes the marks of its
// stored rows after its inserts (see statements): those whose merge does
// not read the stored rows' deletion.
func marksAppliedLast(t int16) bool {
	return t == tableCasts || t == tableLends
}

// embed computes vectors for the batch's casts that will be live: not
// removed, pruned or revoked by this batch, with searchable text. They are
// queued for the indexer in the batch's transaction. A failing embedder does
// not fail the batch: the casts are stored without vectors for
// FillEmbeddings to complete.
func (w *Writer) embed(ctx context.Context, b *rows) (int, error) {
	b.embeddings = b.embeddings[:0]
	if w.embedder == nil || len(b.casts) == 0 {
		return 0, nil
	}
	d := w.dims
	need := 0
	for i := range b.casts {
		if embeddable(b, &b.casts[i]) {
			need++
		}
	}
	if need == 0 {
		return 0, nil
	}
	if cap(b.vectors) < need*d {
		b.vectors = make([]float32, need*d)
	}
	vecs := b.vectors[:need*d]
	if into, ok := w.embedder.(embedInto); ok {
		k := 0
		for i := range b.casts {
			c := &b.casts[i]
			if !embeddable(b, c) {
				continue
			}
			v := vecs[k*d : (k+1)*d : (k+1)*d]
			k++
			if err := into.EmbedInto(c.text, v); err != nil {
				w.log.Warn("sink: inline embedding failed; casts stored without vectors", "err", err)
				b.embeddings = b.embeddings[:0]
				return 0, nil
			}
			if !zero(v) {
				b.embeddings = append(b.embeddings, embeddingRow{hash: c.hash, fid: c.fid, vec: v})
			}
		}
		return len(b.embeddings), nil
	}
	texts := make([]string, 0, need)
	idx := make([]int, 0, need)
	for i := range b.casts {
		if embeddable(b, &b.casts[i]) {
			texts = append(texts, b.casts[i].text)
			idx = append(idx, i)
		}
	}
	out, err := w.embedder.Embed(ctx, texts)
	if err == nil && len(out) != len(texts) {
		err = fmt.Errorf("embedder returned %d vectors for %d texts", len(out), len(texts))
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, fmt.Errorf("sink: embed casts: %w", ctx.Err())
		}
		w.log.Warn("sink: inline embedding failed; casts stored without vectors", "err", err)
		return 0, nil
	}
	for j, i := range idx {
		if len(out[j]) == d && !zero(out[j]) {
			c := &b.casts[i]
			b.embeddings = append(b.embeddings, embeddingRow{hash: c.hash, fid: c.fid, vec: out[j]})
		}
	}
	return len(b.embeddings), nil
}

func embeddable(b *rows, c *castRow) bool { return c.text != "" && !b.gone.has(c.hash) }

func zero(v []float32) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}

// embeddingDims reads the vector dimensions the schema stores.
func embeddingDims(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var dims int
	err := pool.QueryRow(ctx, `SELECT atttypmod FROM pg_attribute WHERE attrelid = 'cast_embeddings'::regclass AND attname = 'embedding'`).Scan(&dims)
	if err != nil {
		return 0, fmt.Errorf("sink: read cast_embeddings dimensions (is the schema migrated?): %w", err)
	}
	return dims, nil
}
