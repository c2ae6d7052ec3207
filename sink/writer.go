package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

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

// WithEmbedder computes embeddings of new casts inline, in the batch that
// stores them. Use it for fast embedders; for slow ones leave it out and
// run FillEmbeddings beside the writer.
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
	rowsPool      sync.Pool // *rows
}

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
	w.rowsPool.New = func() any { return &rows{} }
	err := pool.QueryRow(ctx, `SELECT atttypmod FROM pg_attribute WHERE attrelid = 'casts'::regclass AND attname = 'embedding'`).Scan(&w.dims)
	if err != nil {
		return nil, fmt.Errorf("sink: read casts.embedding dimensions (is the schema migrated?): %w", err)
	}
	if w.embedder != nil && w.embedder.Dimensions() != w.dims {
		return nil, fmt.Errorf("sink: embedder makes %d-dimensional vectors, casts.embedding holds %d", w.embedder.Dimensions(), w.dims)
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
	err := w.writeSplit(ctx, events, &res)
	return res, err
}

func (w *Writer) writeSplit(ctx context.Context, events []*pb.HubEvent, res *WriteResult) error {
	b := w.rowsPool.Get().(*rows)
	defer w.rowsPool.Put(b)
	b.reset()
	b.writeMessages = w.writeMessages
	for _, ev := range events {
		b.add(ev)
	}
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
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "22", "23", "54", "2F":
			return true
		}
		return false
	}
	// Values pgx cannot encode fail on the client before reaching the server.
	var se interface{ SafeToRetry() bool }
	if errors.As(err, &se) {
		return false
	}
	return strings.Contains(err.Error(), "unable to encode") || strings.Contains(err.Error(), "cannot encode")
}

const stagingKey = "waypoint.sink.staging"

func ensureStaging(ctx context.Context, conn *pgx.Conn) error {
	data := conn.PgConn().CustomData()
	if data[stagingKey] == true {
		return nil
	}
	if err := registerVector(ctx, conn); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, stagingDDL); err != nil {
		return fmt.Errorf("sink: create staging tables: %w", err)
	}
	data[stagingKey] = true
	return nil
}

// source feeds a slice of staging rows to CopyFrom without boxing values.
type source[T any, P interface {
	*T
	fill([]any)
}] struct {
	rows []T
	i    int
	vals []any
}

func (s *source[T, P]) Next() bool {
	if s.i < len(s.rows) {
		s.i++
		return true
	}
	return false
}

func (s *source[T, P]) Values() ([]any, error) {
	P(&s.rows[s.i-1]).fill(s.vals)
	return s.vals, nil
}

func (s *source[T, P]) Err() error { return nil }

func copyRows[T any, P interface {
	*T
	fill([]any)
}](ctx context.Context, tx pgx.Tx, table string, cols []string, rs []T) error {
	if len(rs) == 0 {
		return nil
	}
	src := &source[T, P]{rows: rs, vals: make([]any, len(cols))}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, src); err != nil {
		return fmt.Errorf("sink: copy into %s: %w", table, err)
	}
	return nil
}

type stmt struct {
	table string
	sql   string
}

func (w *Writer) commit(ctx context.Context, b *rows, res *WriteResult) error {
	if err := w.embed(ctx, b, res); err != nil {
		return err
	}
	conn, err := w.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("sink: acquire connection: %w", err)
	}
	defer conn.Release()
	if err := ensureStaging(ctx, conn.Conn()); err != nil {
		return err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("sink: begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit

	if err := w.copyAll(ctx, tx, b); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P01" {
			// Staging tables gone (DISCARD, a proxy): recreate on the next try.
			delete(conn.Conn().PgConn().CustomData(), stagingKey)
		}
		return err
	}
	stmts := w.statements(b)
	if len(stmts) > 0 {
		batch := &pgx.Batch{}
		for _, s := range stmts {
			batch.Queue(s.sql)
		}
		br := tx.SendBatch(ctx, batch)
		for _, s := range stmts {
			ct, err := br.Exec()
			if err != nil {
				br.Close()
				return fmt.Errorf("sink: merge into %s: %w", s.table, err)
			}
			res.Rows[s.table] += ct.RowsAffected()
		}
		if err := br.Close(); err != nil {
			return fmt.Errorf("sink: merge: %w", err)
		}
	}
	if err := copyRows[deadLetterRow](ctx, tx, "dead_letters", colsDeadLetters, b.dead); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("sink: commit: %w", err)
	}
	res.Messages += len(b.messages)
	res.DeadLetters += len(b.dead)
	res.Skipped += b.skipped
	return nil
}

func (w *Writer) copyAll(ctx context.Context, tx pgx.Tx, b *rows) error {
	for _, err := range []error{
		copyRows[markRow](ctx, tx, "wp_stage_marks", colsMarks, b.marks),
		copyRows[messageRow](ctx, tx, "wp_stage_messages", colsMessages, b.messages),
		copyRows[castRow](ctx, tx, "wp_stage_casts", colsCasts, b.casts),
		copyRows[castRemoveRow](ctx, tx, "wp_stage_cast_removes", colsCastRemoves, b.castRemoves),
		copyRows[reactionRow](ctx, tx, "wp_stage_reactions", colsReactions, b.reactions),
		copyRows[linkRow](ctx, tx, "wp_stage_links", colsLinks, b.links),
		copyRows[compactRow](ctx, tx, "wp_stage_compacts", colsCompacts, b.compacts),
		copyRows[verificationRow](ctx, tx, "wp_stage_verifications", colsVerifications, b.verifications),
		copyRows[userDataRow](ctx, tx, "wp_stage_user_data", colsUserData, b.userData),
		copyRows[proofRow](ctx, tx, "wp_stage_proofs", colsProofs, b.proofs),
		copyRows[lendRow](ctx, tx, "wp_stage_lends", colsLends, b.lends),
		copyRows[onchainRow](ctx, tx, "wp_stage_onchain", colsOnchain, b.onchain),
	} {
		// Evaluated eagerly in order; the first failure aborts the
		// transaction, so later copies fail fast and only this one matters.
		if err != nil {
			return err
		}
	}
	return nil
}

// statements lists the merge statements the batch needs, in dependency
// order: marks first, then stores, then marks applied to rows stored before.
func (w *Writer) statements(b *rows) []stmt {
	var s []stmt
	if len(b.marks) > 0 {
		s = append(s, stmt{"message_marks", sqlMarks})
	}
	if len(b.messages) > 0 {
		s = append(s, stmt{"messages", sqlMessages})
	}
	if len(b.casts) > 0 {
		s = append(s, stmt{"casts", sqlCasts})
	}
	if len(b.castRemoves) > 0 {
		s = append(s, stmt{"casts", sqlCastRemoves})
	}
	if len(b.casts) > 0 {
		s = append(s, stmt{"casts", sqlRoots})
	}
	if len(b.reactions) > 0 {
		s = append(s, stmt{"reactions", sqlReactions})
	}
	if len(b.compacts) > 0 {
		s = append(s, stmt{"link_compact_states", sqlCompacts})
	}
	if len(b.links) > 0 {
		s = append(s, stmt{"links", sqlLinks})
	}
	if len(b.compacts) > 0 {
		s = append(s, stmt{"links", sqlCompactApply}, stmt{"link_compact_states", sqlCompactSupersede})
	}
	if len(b.verifications) > 0 {
		s = append(s, stmt{"verifications", sqlVerifications})
	}
	if len(b.userData) > 0 {
		s = append(s, stmt{"user_data", sqlUserData})
	}
	if len(b.proofs) > 0 {
		s = append(s, stmt{"username_proofs", sqlProofs})
	}
	if len(b.lends) > 0 {
		s = append(s, stmt{"lend_storage", sqlLends})
	}
	if len(b.marks) > 0 {
		for _, t := range markedTables {
			if t == "messages" && !w.writeMessages {
				continue
			}
			s = append(s, stmt{t, applyMarksSQL[t]})
		}
	}
	if len(b.onchain) > 0 {
		s = append(s, stmt{"onchain_events", sqlOnchain})
		for _, t := range sqlOnchainTyped {
			s = append(s, stmt{t.table, t.sql})
		}
		s = append(s, stmt{"fids", sqlFids})
	}
	return s
}

var applyMarksSQL = func() map[string]string {
	m := make(map[string]string, len(markedTables))
	for _, t := range markedTables {
		m[t] = fmt.Sprintf(sqlApplyMarks, t)
	}
	return m
}()

// embed computes vectors for the batch's casts that will be live: not
// removed, pruned or revoked by this batch, with searchable text. A failing
// embedder does not fail the batch: the casts are stored without vectors
// for FillEmbeddings to complete.
func (w *Writer) embed(ctx context.Context, b *rows, res *WriteResult) error {
	if w.embedder == nil || len(b.casts) == 0 {
		return nil
	}
	d := w.dims
	need := 0
	for i := range b.casts {
		c := &b.casts[i]
		c.embedding = nil
		if c.text == "" {
			continue
		}
		if _, gone := b.gone[string(c.hash)]; gone {
			continue
		}
		need++
	}
	if need == 0 {
		return nil
	}
	if cap(b.vectors) < need*d {
		b.vectors = make([]float32, need*d)
	}
	vecs := b.vectors[:need*d]
	into, fast := w.embedder.(embedInto)
	var texts []string
	var idx []int
	k := 0
	for i := range b.casts {
		c := &b.casts[i]
		if c.text == "" {
			continue
		}
		if _, gone := b.gone[string(c.hash)]; gone {
			continue
		}
		v := vecs[k*d : (k+1)*d : (k+1)*d]
		k++
		if fast {
			if err := into.EmbedInto(c.text, v); err != nil {
				w.log.Warn("sink: inline embedding failed; casts stored without vectors", "err", err)
				return clearEmbeddings(b)
			}
			if !zero(v) {
				c.embedding = v
				res.Embedded++
			}
			continue
		}
		texts = append(texts, c.text)
		idx = append(idx, i)
	}
	if fast {
		return nil
	}
	out, err := w.embedder.Embed(ctx, texts)
	if err == nil && len(out) != len(texts) {
		err = fmt.Errorf("embedder returned %d vectors for %d texts", len(out), len(texts))
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("sink: embed casts: %w", ctx.Err())
		}
		w.log.Warn("sink: inline embedding failed; casts stored without vectors", "err", err)
		return clearEmbeddings(b)
	}
	for j, i := range idx {
		if len(out[j]) == d && !zero(out[j]) {
			b.casts[i].embedding = out[j]
			res.Embedded++
		}
	}
	return nil
}

func clearEmbeddings(b *rows) error {
	for i := range b.casts {
		b.casts[i].embedding = nil
	}
	return nil
}

func zero(v []float32) bool {
	for _, x := range v {
		if x != 0 {
			return false
		}
	}
	return true
}
