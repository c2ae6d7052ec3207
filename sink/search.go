package sink

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// SearchResult is one cast near a query.
type SearchResult struct {
	Hash      []byte
	Fid       int64
	Text      string
	Timestamp time.Time
	// Distance is the cosine distance to the query: 0 is identical, 2 opposite.
	Distance float64
}

// searchSQL orders by the indexed expression alone, so the planner walks the
// HNSW index and joins each candidate to its cast; deleted casts are
// filtered out as they come. With iterative scans on, the index scan goes on
// past ef_search candidates until limit live casts are found, in roughly
// ascending distance (relaxed order), so the outer query sorts them exactly.
const searchSQL = `
WITH nearest AS MATERIALIZED (
    SELECT c.hash, c.fid, c.text, c."timestamp", e.embedding <=> $1::float4[]::vector AS distance
    FROM cast_embeddings e JOIN casts c ON c.hash = e.hash
    WHERE c.deleted_at IS NULL
    ORDER BY e.embedding <=> $1::float4[]::vector
    LIMIT $2
)
SELECT hash, fid, text, "timestamp", distance FROM nearest ORDER BY distance`

// maxEFSearch is pgvector's upper bound for hnsw.ef_search.
const maxEFSearch = 1000

// searchSettings makes the transaction's HNSW scans iterative and at least
// as wide as limit (pgvector's default ef_search is 40).
func searchSettings(limit int) string {
	ef := min(max(40, limit), maxEFSearch)
	return fmt.Sprintf("SET LOCAL hnsw.iterative_scan = relaxed_order; SET LOCAL hnsw.ef_search = %d", ef)
}

// Search returns the live casts nearest to query by cosine distance. Casts
// are searchable once the indexer (RunIndexer) has moved their embeddings
// into cast_embeddings.
func Search(ctx context.Context, pool *pgxpool.Pool, e Embedder, query string, limit int) ([]SearchResult, error) {
	if limit <= 0 {
		return nil, nil
	}
	vecs, err := e.Embed(ctx, []string{cleanText(query)})
	if err != nil {
		return nil, fmt.Errorf("sink: search: embed query: %w", err)
	}
	if len(vecs) != 1 || zero(vecs[0]) {
		// Nothing searchable in the query: no cast is near it.
		return nil, nil
	}
	var out []SearchResult
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, searchSettings(limit)); err != nil {
			return fmt.Errorf("set scan options: %w", err)
		}
		rows, err := tx.Query(ctx, searchSQL, vecs[0], limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (SearchResult, error) {
			var s SearchResult
			var text *string
			err := r.Scan(&s.Hash, &s.Fid, &text, &s.Timestamp, &s.Distance)
			if text != nil {
				s.Text = *text
			}
			return s, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sink: search: %w", err)
	}
	return out, nil
}

// FillEmbeddings embeds live casts that have no embedding, batchSize at a
// time, until none is left or ctx ends; it returns how many it embedded.
// Run it beside a Writer that has no inline embedder so that a slow model
// never holds up ingestion. It writes to cast_embeddings directly: it is off
// the write path already, and a cast it has embedded is then known to have
// a vector. Casts whose text yields no vector are passed over, not retried,
// within one call.
func FillEmbeddings(ctx context.Context, pool *pgxpool.Pool, e Embedder, batchSize int) (int, error) {
	if batchSize <= 0 {
		batchSize = 256
	}
	dims, err := embeddingDims(ctx, pool)
	if err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: %w", err)
	}
	if e.Dimensions() != dims {
		return 0, fmt.Errorf("sink: fill embeddings: embedder makes %d-dimensional vectors, cast_embeddings holds %d", e.Dimensions(), dims)
	}
	total := 0
	after := []byte{}
	var batch []embeddingRow
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		rows, err := pool.Query(ctx, `
			SELECT c.hash, c.fid, c.text FROM casts c
			WHERE c.deleted_at IS NULL AND c.text <> '' AND c.hash > $1
			  AND NOT EXISTS (SELECT 1 FROM cast_embeddings e WHERE e.hash = c.hash)
			ORDER BY c.hash LIMIT $2`, after, batchSize)
		if err != nil {
			return total, fmt.Errorf("sink: fill embeddings: select: %w", err)
		}
		batch = batch[:0]
		var texts []string
		for rows.Next() {
			var r embeddingRow
			var t string
			if err := rows.Scan(&r.hash, &r.fid, &t); err != nil {
				rows.Close()
				return total, fmt.Errorf("sink: fill embeddings: select: %w", err)
			}
			batch = append(batch, r)
			texts = append(texts, t)
		}
		if err := rows.Err(); err != nil {
			return total, fmt.Errorf("sink: fill embeddings: select: %w", err)
		}
		if len(batch) == 0 {
			return total, nil
		}
		after = batch[len(batch)-1].hash
		vecs, err := e.Embed(ctx, texts)
		if err != nil {
			return total, fmt.Errorf("sink: fill embeddings: embed: %w", err)
		}
		if len(vecs) != len(texts) {
			return total, errors.New("sink: fill embeddings: embedder returned the wrong number of vectors")
		}
		keep := batch[:0]
		for i, v := range vecs {
			if len(v) == dims && !zero(v) {
				batch[i].vec = v
				keep = append(keep, batch[i])
			}
		}
		if len(keep) == 0 {
			continue
		}
		n, err := insertEmbeddings(ctx, pool, keep)
		if err != nil {
			return total, err
		}
		total += n
	}
}

const fillStagingDDL = `CREATE TEMP TABLE IF NOT EXISTS wp_stage_fill (hash bytea, fid int8, embedding vector) ON COMMIT DELETE ROWS`

var copyFill = newCopyTarget("wp_stage_fill", []string{"hash", "fid", "embedding"})

// sqlFill stores vectors for casts still live; a vector stored meanwhile
// (by the indexer or another filler) is kept.
const sqlFill = `
INSERT INTO cast_embeddings (hash, fid, embedding)
SELECT s.hash, s.fid, s.embedding FROM wp_stage_fill s JOIN casts c ON c.hash = s.hash
WHERE c.deleted_at IS NULL
ON CONFLICT (hash) DO NOTHING`

// insertEmbeddings COPYs vectors into a staging table and stores them in
// one statement.
func insertEmbeddings(ctx context.Context, pool *pgxpool.Pool, rs []embeddingRow) (int, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: acquire: %w", err)
	}
	defer conn.Release()
	tx, err := conn.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: begin: %w", err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, fillStagingDDL); err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: staging: %w", err)
	}
	var enc fieldEnc
	if err := copyRows[embeddingRow](ctx, conn.Conn().PgConn(), &enc, copyFill, rs); err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: %w", err)
	}
	ct, err := tx.Exec(ctx, sqlFill)
	if err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: insert: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: commit: %w", err)
	}
	return int(ct.RowsAffected()), nil
}
