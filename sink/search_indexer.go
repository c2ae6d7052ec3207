package sink

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// sqlIndexBatch moves up to $1 queued embeddings into cast_embeddings in one
// transaction: delete them from the queue and insert those of casts still
// live. A crash or error rolls both back, so nothing is lost and the next
// run takes the same rows again. SKIP LOCKED lets indexers run side by side
// on disjoint rows, and ON CONFLICT DO NOTHING makes a cast delivered twice,
// or already filled by FillEmbeddings, a no-op. Deletion is final for a
// cast, so dropping the vector of a deleted one loses nothing.
const sqlIndexBatch = `
WITH moved AS (
    DELETE FROM cast_embedding_queue
    WHERE ctid = ANY (ARRAY(SELECT ctid FROM cast_embedding_queue LIMIT $1 FOR UPDATE SKIP LOCKED))
    RETURNING hash, fid, embedding
), indexed AS (
    INSERT INTO cast_embeddings (hash, fid, embedding)
    SELECT m.hash, m.fid, m.embedding FROM moved m JOIN casts c ON c.hash = m.hash
    WHERE c.deleted_at IS NULL
    ON CONFLICT (hash) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM indexed)`

// DefaultIndexBatch is the number of embeddings IndexEmbeddings moves per
// transaction when given no batch size: large enough to amortise the
// statement, small enough that a transaction lasts well under a second at
// pgvector's HNSW insertion rates.
const DefaultIndexBatch = 500

// IndexEmbeddings moves embeddings that writers queued into the
// HNSW-indexed cast_embeddings table, batchSize per transaction, until the
// queue is empty or ctx ends. It returns how many embeddings it indexed;
// those of casts deleted while queued, and duplicates, are dropped. It is
// idempotent and safe to run from several processes at once.
func IndexEmbeddings(ctx context.Context, pool *pgxpool.Pool, batchSize int) (int, error) {
	if batchSize <= 0 {
		batchSize = DefaultIndexBatch
	}
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		moved, indexed, err := indexBatch(ctx, pool, batchSize)
		total += indexed
		if err != nil {
			return total, err
		}
		if moved == 0 {
			return total, nil
		}
	}
}

func indexBatch(ctx context.Context, pool *pgxpool.Pool, n int) (moved, indexed int, err error) {
	if err := pool.QueryRow(ctx, sqlIndexBatch, n).Scan(&moved, &indexed); err != nil {
		return 0, 0, fmt.Errorf("sink: index embeddings: %w", err)
	}
	return moved, indexed, nil
}

// IndexerOptions configures RunIndexer.
type IndexerOptions struct {
	// BatchSize is the number of embeddings moved per transaction;
	// DefaultIndexBatch if zero.
	BatchSize int
	// Interval is the pause after the queue is found empty, and after a
	// failure; one second if zero.
	Interval time.Duration
	// Logger receives failures; slog.Default() if nil.
	Logger *slog.Logger
	// Load, when set, is that of the writers sharing the database: while
	// they spend at least half the time writing (a backlog), the indexer
	// takes at most BusyShare of its time (default DefaultBusyShare) and
	// queued embeddings wait, to be indexed at full speed once the backlog
	// is written. Search finds new casts later; the backlog drains sooner.
	Load      *Load
	BusyShare float64
}

// DefaultBusyShare is the indexer's share of its time while the writers
// drain a backlog. Indexing during the backlog hardly brings the moment
// every cast is searchable forward, since the queue fills far faster than
// a share of the indexer's time empties it, but each share it takes is
// Postgres CPU the writers lack: at a tenth, the indexer used about a
// sixth of Postgres's CPU while a 250k-event backlog drained, and the
// drain was 1–11% slower than at a fiftieth in alternating runs. A small
// share still moves the queue when the writers stay busy for long.
const DefaultBusyShare = 0.02

// busyAbove is the writers' busy fraction above which the indexer gives
// way: beyond it they are taking batches back to back.
const busyAbove = 0.5

// RunIndexer keeps cast_embeddings up to date with the queue the writers
// fill: it drains the queue, waits Interval, and again, until ctx ends, when
// it returns nil. Database errors are logged and retried, since the queue
// keeps what was not moved. Run one beside the writers of a sink process;
// more only help on a server with cores to spare, as HNSW insertion is CPU
// bound.
func RunIndexer(ctx context.Context, pool *pgxpool.Pool, opts IndexerOptions) error {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultIndexBatch
	}
	if opts.BusyShare <= 0 {
		opts.BusyShare = DefaultBusyShare
	}
	sample := loadSample{load: opts.Load}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := indexWhileIdle(ctx, pool, opts, &sample); err != nil && ctx.Err() == nil {
			log.Warn("sink: indexing embeddings failed; retrying", "err", err, "in", opts.Interval)
		}
		t.Reset(opts.Interval)
	}
}

// indexWhileIdle drains the queue as IndexEmbeddings does, pausing after
// each batch as indexPause says.
func indexWhileIdle(ctx context.Context, pool *pgxpool.Pool, opts IndexerOptions, sample *loadSample) error {
	for {
		start := time.Now()
		moved, _, err := indexBatch(ctx, pool, opts.BatchSize)
		if err != nil || moved == 0 {
			return err
		}
		now := time.Now()
		if p := indexPause(now.Sub(start), sample.share(now), busyAbove, opts.BusyShare); p > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(p):
			}
		}
	}
}
