// Package telemetry sets up what every Waypoint role shares for being
// observed: OpenTelemetry tracing, the Prometheus metric set, and the HTTP
// server for /metrics, /healthz and /readyz.
//
// Nothing here uses process globals unless asked: the tracer provider, the
// propagator and the metric registry are values that cmd/waypoint creates
// once and passes to each component through its options.
//
// # Tracing
//
// cmd/waypoint calls
//
//	tr, err := telemetry.SetupTracing(ctx, telemetry.TracingOptions{
//		ServiceName: "waypoint-sink",
//		Env:         os.Environ(),
//		Endpoint:    cfg.Tracing.Endpoint, // may be empty
//	})
//	defer tr.Shutdown(shutdownCtx)
//	tr.InstallGlobals() // only for third-party instrumentation
//
// and hands tr.TracerProvider() and tr.Propagator() to components, which
// start spans with the names and attribute keys declared here:
//
//	tracer := opts.TracerProvider.Tracer("github.com/waypointhq/waypoint/sink")
//	ctx, span := tracer.Start(ctx, telemetry.SpanSinkProcess, trace.WithAttributes(
//		telemetry.Shard(shard), telemetry.FID(fid), telemetry.MessageHash(hash)))
//	defer span.End()
//
// Attributes the force sampler should see (AttrFID, AttrMessageHash) must be
// given at Start, not set later: sampling is decided when the span starts.
// Carry context between processes with Propagator().Inject/Extract on
// message headers; header names are lowercase (traceparent, tracestate,
// baggage).
//
// With no endpoint configured, or with tracing disabled, the provider is a
// no-op that hands back the caller's context unchanged: starting and
// ending a span costs about 15 ns and allocates nothing; passing
// trace.WithAttributes adds two small allocations at the call site (see
// BenchmarkSpan). The propagator still passes incoming trace context
// through.
//
// Settings are resolved per field, first match wins:
//
//	disabled:  Disabled option, OTEL_SDK_DISABLED=true, OTEL_TRACES_EXPORTER=none
//	endpoint:  Endpoint option, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT; none means off
//	protocol:  Protocol option, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf"
//	sampler:   Sampler option, OTEL_TRACES_SAMPLER, "parentbased_traceidratio"
//	ratio:     SamplerArg option, OTEL_TRACES_SAMPLER_ARG, 0.01
//	service:   OTEL_SERVICE_NAME, service.name in OTEL_RESOURCE_ATTRIBUTES, ServiceName option
//
// The service name is the one exception to "options win": the option is
// the role's built-in name, and the environment exists to rename it.
// Disabled can only turn tracing off, never back on. Force entries are the
// union of ForceFIDs, ForceHashes and WAYPOINT_TRACE_FORCE, since forcing
// more never breaks anything.
//
// Endpoints: for http/protobuf, OTEL_EXPORTER_OTLP_ENDPOINT is a base URL
// that gets /v1/traces appended, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used
// exactly, and the Endpoint option gets /v1/traces only when it has no
// path. For grpc, an http:// URL means plaintext, https:// means TLS, and a
// bare host:port means TLS unless OTEL_EXPORTER_OTLP_[TRACES_]INSECURE=true.
// OTEL_EXPORTER_OTLP_[TRACES_]HEADERS, _TIMEOUT (ms) and _COMPRESSION
// (gzip|none) are read from Env as well. The SDK itself still reads a few
// variables from the process environment (OTEL_BSP_*, OTEL_SPAN_*_LIMIT,
// and the OTLP certificate paths); os.Environ() as Env keeps the two views
// the same. Invalid values are errors from SetupTracing, not silent
// defaults.
//
// # Sampling
//
// The default, parent-based trace-id ratio at 0.01, keeps one trace in a
// hundred at full speed, and a process continuing a trace follows the
// upstream decision, so a trace is either whole or absent. On top of the
// configured sampler, a span that starts a trace in this process (a root,
// or the first span under a remote parent) is always sampled when its
// start attributes hold a forced farcaster.fid or farcaster.message.hash.
// WAYPOINT_TRACE_FORCE lists them: "fid:123,hash:0x<40 hex digits>". The
// spans under a forced span are sampled through the parent-based rule, so
// forcing needs a parentbased_* sampler to cover more than the first span.
//
// Finally, a root span with a sampled link is always sampled: the sink's
// batch commit (its own trace, linked to the sink.process span of every
// message it wrote) is then kept whenever one of its messages is, so a
// sampled message's trace always leads to the commit that stored it.
//
// # Metrics
//
// NewMetrics returns every waypoint_* metric on a private registry, plus
// the Go and process collectors. Components take the *Metrics and use its
// fields directly:
//
//	m.EventsReceived.WithLabelValues(telemetry.ShardLabel(shard), "MERGE_MESSAGE").Inc()
//	m.DedupeCacheRequests.WithLabelValues(telemetry.DedupeHit).Inc()
//
// Label values must come from small closed sets, because each distinct
// value is a separate series kept forever: shard is the decimal shard index
// (ShardLabel); type is a hub event type name; consumer is a JetStream
// consumer name (one per sink partition); table is a Postgres table name;
// result is hit, miss or error; source is ingest, sink or backfill; reason
// is a fixed reason code (such as message.Reason), never an error string;
// state is a backfill queue state. FIDs, hashes, event ids and error texts
// never go into labels; they belong on spans.
//
// # Server
//
// NewServer(addr, m.Registry, checks...) serves /metrics, /healthz (the
// process is alive: always 200 "ok") and /readyz (every Check passes within
// its timeout: 200, otherwise 503 with a JSON body whose "failed" lists the
// failing checks). PostgresCheck and LagCheck build the usual checks. The
// address comes from configuration, DefaultAddr by default; an empty
// address disables the server. Serve runs until its context is done.
package telemetry
