//go:build faults

// Package faults is Waypoint's scale-out and fault-injection suite. It has
// no API: its tests (TestFault..., run by `make test-faults`) assemble the
// whole pipeline from the real packages (simulator → ingest → JetStream →
// sink and backfill → Postgres) against real services, break one part of it
// (a process, a NATS node or the whole cluster, the database, Redis, the
// hub's stream, the network between a sink and NATS, the hub's bytes), and
// require Postgres to end row for row equal to the simulator's ground truth.
// Each scenario adds a line to the summary table printed at the end.
package faults
