// Package embedding turns cast text into fixed-size float32 vectors for
// semantic search. The sink stores them in Postgres as pgvector vector(D)
// columns and queries them by cosine distance, so every vector an Embedder
// returns has exactly Dimensions() elements.
//
// Two implementations exist: NewLocal, a deterministic feature-hashing
// embedder that needs no network or model files and is cheap enough to run
// inline at full sink speed, and NewHTTP, a client for any OpenAI-compatible
// /v1/embeddings endpoint (OpenAI, Ollama, Text Embeddings Inference).
//
// Text without any searchable content (empty or whitespace only) maps to the
// zero vector. Cosine distance to a zero vector is undefined (pgvector yields
// NaN), so such casts are not searchable; writers may store NULL instead.
package embedding

import "context"

// DefaultDimensions is the vector size NewLocal uses when given 0.
const DefaultDimensions = 256

// MaxDimensions is the largest vector size accepted; it is pgvector's limit
// for the vector type.
const MaxDimensions = 16000

// Embedder maps texts to vectors. Implementations are safe for concurrent use.
type Embedder interface {
	// Dimensions reports the length of every vector Embed returns.
	Dimensions() int
	// Embed returns one vector per text, in the order of texts.
	Embed(ctx context.Context, texts []string) ([][]float32, error)
}
