// Package devnet simulates a Snapchain node for development and tests: the
// HubService over real gRPC (Subscribe, event and message reads), shards
// with Snapchain's fid routing, blocks and event ids, the network's conflict
// rules (remove-wins casts, last-write-wins reactions, links, verifications
// and user data, fname proofs, pruning, revokes, compact state), a
// deterministic workload generator, the resulting ground-truth state, and
// fault injection (dropped events, stream resets, stalls, expired events).
//
// Events are encoded once, when their block is cut, and streamed from those
// bytes, so a replay runs at hundreds of thousands of events per second.
package devnet
