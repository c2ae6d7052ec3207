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
// HNSW index; liveness is filtered on the rows it yields.
const searchSQL = `
SELECT hash, fid, text, "timestamp", embedding <=> $1::float4[]::vector AS distance
FROM casts
WHERE deleted_at IS NULL AND embedding IS NOT NULL
ORDER BY embedding <=> $1::float4[]::vector
LIMIT $2`

// Search returns the live casts nearest to query by cosine distance.
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
	rows, err := pool.Query(ctx, searchSQL, vecs[0], limit)
	if err != nil {
		return nil, fmt.Errorf("sink: search: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (SearchResult, error) {
		var s SearchResult
		var text *string
		err := r.Scan(&s.Hash, &s.Fid, &text, &s.Timestamp, &s.Distance)
		if text != nil {
			s.Text = *text
		}
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("sink: search: %w", err)
	}
	return out, nil
}

// FillEmbeddings embeds live casts stored without a vector, batchSize at a
// time, until none is left or ctx ends; it returns how many it embedded.
// Run it beside a Writer that has no inline embedder so that a slow model
// never holds up ingestion. Casts whose text yields no vector are passed
// over, not retried, within one call.
func FillEmbeddings(ctx context.Context, pool *pgxpool.Pool, e Embedder, batchSize int) (int, error) {
	if batchSize <= 0 {
		batchSize = 256
	}
	var dims int
	err := pool.QueryRow(ctx, `SELECT atttypmod FROM pg_attribute WHERE attrelid = 'casts'::regclass AND attname = 'embedding'`).Scan(&dims)
	if err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: read dimensions: %w", err)
	}
	if e.Dimensions() != dims {
		return 0, fmt.Errorf("sink: fill embeddings: embedder makes %d-dimensional vectors, casts.embedding holds %d", e.Dimensions(), dims)
	}
	total := 0
	after := []byte{}
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		rows, err := pool.Query(ctx, `
			SELECT hash, text FROM casts
			WHERE embedding IS NULL AND deleted_at IS NULL AND text <> '' AND hash > $1
			ORDER BY hash LIMIT $2`, after, batchSize)
		if err != nil {
			return total, fmt.Errorf("sink: fill embeddings: select: %w", err)
		}
		var hashes [][]byte
		var texts []string
		for rows.Next() {
			var h []byte
			var t string
			if err := rows.Scan(&h, &t); err != nil {
				rows.Close()
				return total, fmt.Errorf("sink: fill embeddings: select: %w", err)
			}
			hashes = append(hashes, h)
			texts = append(texts, t)
		}
		if err := rows.Err(); err != nil {
			return total, fmt.Errorf("sink: fill embeddings: select: %w", err)
		}
		if len(hashes) == 0 {
			return total, nil
		}
		after = hashes[len(hashes)-1]
		vecs, err := e.Embed(ctx, texts)
		if err != nil {
			return total, fmt.Errorf("sink: fill embeddings: embed: %w", err)
		}
		if len(vecs) != len(texts) {
			return total, errors.New("sink: fill embeddings: embedder returned the wrong number of vectors")
		}
		var upHashes [][]byte
		var upVecs [][]float32
		for i, v := range vecs {
			if len(v) == dims && !zero(v) {
				upHashes = append(upHashes, hashes[i])
				upVecs = append(upVecs, v)
			}
		}
		if len(upHashes) == 0 {
			continue
		}
		n, err := updateEmbeddings(ctx, pool, upHashes, upVecs)
		if err != nil {
			return total, err
		}
		total += n
	}
}

// updateEmbeddings COPYs vectors into a staging table and sets them in one
// statement; embedding IS NULL keeps a vector a writer stored meanwhile.
func updateEmbeddings(ctx context.Context, pool *pgxpool.Pool, hashes [][]byte, vecs [][]float32) (int, error) {
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
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS wp_stage_fill (hash bytea, embedding float4[]) ON COMMIT DELETE ROWS`); err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: staging: %w", err)
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"wp_stage_fill"}, []string{"hash", "embedding"},
		pgx.CopyFromSlice(len(hashes), func(i int) ([]any, error) { return []any{hashes[i], vecs[i]}, nil }))
	if err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: copy: %w", err)
	}
	ct, err := tx.Exec(ctx, `UPDATE casts c SET embedding = s.embedding::vector FROM wp_stage_fill s WHERE c.hash = s.hash AND c.embedding IS NULL`)
	if err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: update: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("sink: fill embeddings: commit: %w", err)
	}
	return int(ct.RowsAffected()), nil
}
