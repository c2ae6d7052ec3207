// Package sink stores Farcaster hub events in Postgres.
//
// The Writer turns batches of HubEvents (live, or synthetic id-0 events that
// wrap backfill pages) into rows and stores each batch in one transaction.
// New messages and casts are COPYed straight into their tables; everything
// else is merged with set-based SQL that reads the batch from binary array
// parameters. The merge applies the hub's conflict rules in SQL, so that
// the database converges to the node's state whatever order, duplication or
// batching the events arrive in: the state depends only on the set of
// messages, prunes and revokes seen. Marks (prunes, revokes, and the
// deletions a merge reports) are final per message. Stores with a conflict
// key keep every version of the key, and each batch recomputes the keys it
// touches: the live version is the winner among the unmarked ones, so a
// version that lost to one later pruned or revoked becomes live, as on the
// node.
//
// Cast embeddings live in cast_embeddings, under an HNSW index. A Writer
// with an inline embedder stores each new cast's vector in the cast's own
// transaction, in an unindexed queue; RunIndexer (or IndexEmbeddings) moves
// queued vectors into the index in the background, because HNSW insertion
// is far slower than ingestion. FillEmbeddings embeds casts stored without
// vectors, for embedders too slow to run inline, and Search returns the
// live casts nearest to a query.
package sink
