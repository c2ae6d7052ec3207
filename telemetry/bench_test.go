package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

//go:noinline
func work(ctx context.Context) context.Context { return ctx }

// BenchmarkSpan measures what one span start+end costs a hot path: with no
// tracing code at all, with tracing off (the no-op provider SetupTracing
// returns without an endpoint), and with tracing on but the span not
// sampled (the default 1% ratio's common case).
func BenchmarkSpan(b *testing.B) {
	ctx := context.Background()
	attrs := []attribute.KeyValue{Shard(1), FID(12345), AttrEventID.Int64(987654321)}

	b.Run("none", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			work(ctx)
		}
	})

	off, err := SetupTracing(ctx, TracingOptions{ServiceName: "waypoint-ingest"})
	if err != nil {
		b.Fatal(err)
	}
	if off.Enabled() {
		b.Fatal("tracing unexpectedly on")
	}
	noopTracer := off.TracerProvider().Tracer("bench")
	b.Run("noop", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, span := noopTracer.Start(ctx, SpanIngestReceive)
			work(c)
			span.End()
		}
	})
	b.Run("noop-attrs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, span := noopTracer.Start(ctx, SpanIngestReceive, trace.WithAttributes(attrs...))
			work(c)
			span.End()
		}
	})

	cfg, err := resolveTracing(TracingOptions{
		Endpoint: "http://127.0.0.1:1", Env: []string{"OTEL_TRACES_SAMPLER_ARG=0", "WAYPOINT_TRACE_FORCE=fid:1"},
	})
	if err != nil {
		b.Fatal(err)
	}
	sampler, err := cfg.buildSampler()
	if err != nil {
		b.Fatal(err)
	}
	tp, err := newSDKProvider(ctx, cfg, sampler, sdktrace.WithSyncer(tracetest.NewNoopExporter()))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = tp.Shutdown(ctx) }()
	sdkTracer := tp.Tracer("bench")
	b.Run("sdk-unsampled-attrs", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, span := sdkTracer.Start(ctx, SpanIngestReceive, trace.WithAttributes(attrs...))
			work(c)
			span.End()
		}
	})
}
