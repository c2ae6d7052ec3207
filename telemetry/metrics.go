package telemetry

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Label values for Metrics.DedupeCacheRequests.
const (
	DedupeHit   = "hit"
	DedupeMiss  = "miss"
	DedupeError = "error"
)

// Metrics is the full Waypoint metric set on a private registry. Every
// role creates all of it, so dashboards see the same names everywhere and
// components never check for nil; a role leaves the series it does not
// use at zero (vectors export nothing until a label set is used).
//
// Label values must come from small fixed sets, never from input: see the
// package documentation.
type Metrics struct {
	// Registry holds every metric below plus the Go and process
	// collectors; hand it to NewServer.
	Registry *prometheus.Registry

	// Ingest.
	EventsReceived    *prometheus.CounterVec // waypoint_events_received_total{shard,type}
	EventsPublished   *prometheus.CounterVec // waypoint_events_published_total{shard,type}
	CheckpointEventID *prometheus.GaugeVec   // waypoint_checkpoint_event_id{shard}
	HubLagBlocks      *prometheus.GaugeVec   // waypoint_hub_lag_blocks{shard}
	PublishLatency    prometheus.Histogram   // waypoint_publish_latency_seconds
	GapsDetected      *prometheus.CounterVec // waypoint_gaps_detected_total{shard}
	GapsRepaired      *prometheus.CounterVec // waypoint_gaps_repaired_total{shard}
	Reconnects        *prometheus.CounterVec // waypoint_reconnects_total{shard}

	// Sink.
	JetStreamPending    *prometheus.GaugeVec   // waypoint_jetstream_pending{consumer}
	SinkBatchSize       prometheus.Histogram   // waypoint_sink_batch_size
	SinkCopySeconds     prometheus.Histogram   // waypoint_sink_copy_seconds
	SinkCommitSeconds   prometheus.Histogram   // waypoint_sink_commit_seconds
	RowsWritten         *prometheus.CounterVec // waypoint_rows_written_total{table}
	DedupeCacheRequests *prometheus.CounterVec // waypoint_dedupe_cache_requests_total{result}
	DedupeCacheEntries  prometheus.Gauge       // waypoint_dedupe_cache_entries
	DeadLetters         *prometheus.CounterVec // waypoint_dead_letters_total{source,reason}

	// Backfill.
	BackfillJobs     *prometheus.GaugeVec // waypoint_backfill_jobs{state}
	BackfillMessages prometheus.Counter   // waypoint_backfill_messages_total
}

const namespace = "waypoint"

// NewMetrics builds the metric set on a fresh registry. It never touches
// prometheus.DefaultRegisterer, so tests and several roles in one process
// each get their own.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	f := factory{reg}
	m := &Metrics{
		Registry: reg,

		EventsReceived: f.counterVec("events_received_total",
			"Hub events read from shard subscriptions.", "shard", "type"),
		EventsPublished: f.counterVec("events_published_total",
			"Hub events acknowledged by JetStream.", "shard", "type"),
		CheckpointEventID: f.gaugeVec("checkpoint_event_id",
			"Last hub event id checkpointed per shard (exact up to 2^53).", "shard"),
		HubLagBlocks: f.gaugeVec("hub_lag_blocks",
			"Blocks between the hub's tip and the last event read, per shard.", "shard"),
		PublishLatency: f.histogram("publish_latency_seconds",
			"Time from JetStream publish to server acknowledgement.",
			[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}),
		GapsDetected: f.counterVec("gaps_detected_total",
			"Gaps found in a shard's event stream.", "shard"),
		GapsRepaired: f.counterVec("gaps_repaired_total",
			"Gaps repaired, from the hub or by a backfill job.", "shard"),
		Reconnects: f.counterVec("reconnects_total",
			"Shard subscription reconnects.", "shard"),

		JetStreamPending: f.gaugeVec("jetstream_pending",
			"Messages not yet delivered to a consumer.", "consumer"),
		SinkBatchSize: f.histogram("sink_batch_size",
			"Messages per sink write batch.",
			[]float64{1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000}),
		SinkCopySeconds: f.histogram("sink_copy_seconds",
			"Time a committed batch spent in its COPYs and merge statements.",
			[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}),
		SinkCommitSeconds: f.histogram("sink_commit_seconds",
			"Time to merge and commit one batch.",
			[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}),
		RowsWritten: f.counterVec("rows_written_total",
			"Rows written per table.", "table"),
		DedupeCacheRequests: f.counterVec("dedupe_cache_requests_total",
			"Dedupe cache lookups by result (hit, miss, error).", "result"),
		DedupeCacheEntries: f.gauge("dedupe_cache_entries",
			"Committed events in the dedupe cache after this process's last commit to it."),
		DeadLetters: f.counterVec("dead_letters_total",
			"Messages sent to dead letters, by source and reason.", "source", "reason"),

		BackfillJobs: f.gaugeVec("backfill_jobs",
			"Backfill jobs per queue state.", "state"),
		BackfillMessages: f.counter("backfill_messages_total",
			"Messages fetched by backfill workers."),
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// ShardLabel formats a shard index as the shard label value, so every
// component spells it the same way.
func ShardLabel(shard uint32) string { return strconv.FormatUint(uint64(shard), 10) }

// factory registers on one registry. The names are constants of this
// file, so a registration failure is a bug here, never bad input.
type factory struct{ reg *prometheus.Registry }

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogram(name, help string, buckets []float64) prometheus.Histogram {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: namespace, Name: name, Help: help, Buckets: buckets})
	f.reg.MustRegister(h)
	return h
}
