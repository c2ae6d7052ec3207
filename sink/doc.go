// Package sink stores Farcaster hub events in Postgres.
//
// The Writer turns batches of HubEvents (live, or synthetic id-0 events that
// wrap backfill pages) into rows, COPYs them into per-connection staging
// tables and merges them into the schema of package migrations with
// set-based SQL, one transaction per batch. The merge applies the hub's
// conflict rules in SQL so that the database converges to the node's state
// whatever order, duplication or batching the events arrive in: the state
// depends only on the set of messages, prunes and revokes seen.
//
// Search and FillEmbeddings serve the casts.embedding column: nearest live
// casts by cosine distance, and an asynchronous filler for embedders too slow
// to run inline.
package sink
