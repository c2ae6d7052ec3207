// Package backfill copies the complete state of Farcaster accounts from a
// hub into the sink's writer, one FID at a time, through a reliable Redis
// job queue.
//
// The queue keeps every job in exactly one place at a time: a ready set
// ordered by priority, a delayed set for retries waiting out their backoff,
// an in-flight set scored by lease deadline, or the failed set. Every
// transition is one Lua script, so a worker that dies between two commands
// cannot lose or duplicate a job. A claim moves a job into the in-flight set
// under a fresh lease token; a worker renews the lease while it works and
// acknowledges with the token. When a lease runs out (the worker died or
// hung) the next claim takes the job over, and an acknowledgement with the
// old token is refused, so a FID is counted done once. Each claim counts as
// an attempt; after the configured number of attempts the job is parked in
// the failed set with its last error until RetryFailed re-queues it.
// Sorted sets rather than BLMOVE lists were chosen because priority, retry
// backoff and lease expiry are all orderings by a score, and a sorted set
// keeps each of them in one atomic structure.
//
// Workers fetch each FID's messages (adds and removes), link compact state,
// on-chain events and username proofs page by page and hand every page to
// the writer as synthetic merge events (id 0) as it arrives, so a FID never
// has to fit in memory; pages that arrive together from concurrent fetchers
// share one write. Requests to the hub pass an adaptive (AIMD) rate
// limiter. Writes are idempotent in the sink, so a job that runs twice
// (after a takeover) changes nothing the second time.
//
// Zero job loss across a Redis crash needs appendonly yes with appendfsync
// always; with everysec a crash can lose the last second of transitions.
//
// Reconciliation jobs compare a FID's live messages on the hub with the
// live rows in Postgres and repair both directions.
package backfill
