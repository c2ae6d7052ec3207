package telemetry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestResolveTracing(t *testing.T) {
	tests := []struct {
		name     string
		opts     TracingOptions
		off      string // offReason when tracing is off
		protocol string
		endpoint string
		insecure bool
		sampler  string
		arg      string
		service  string
	}{
		{
			name: "nothing configured",
			opts: TracingOptions{ServiceName: "waypoint-ingest"},
			off:  "no OTLP endpoint configured", protocol: ProtocolHTTPProtobuf, sampler: DefaultSampler, service: "waypoint-ingest",
		},
		{
			name:     "generic endpoint, default protocol appends the traces path",
			opts:     TracingOptions{ServiceName: "waypoint-sink", Env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318"}},
			protocol: ProtocolHTTPProtobuf, endpoint: "http://collector:4318/v1/traces", sampler: DefaultSampler, service: "waypoint-sink",
		},
		{
			name:     "generic endpoint with a base path",
			opts:     TracingOptions{Env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=https://gw.example/otlp/"}},
			protocol: ProtocolHTTPProtobuf, endpoint: "https://gw.example/otlp/v1/traces", sampler: DefaultSampler, service: "waypoint",
		},
		{
			name: "traces endpoint is used as given and beats the generic one",
			opts: TracingOptions{Env: []string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=http://generic:4318",
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://traces:4318/custom",
			}},
			protocol: ProtocolHTTPProtobuf, endpoint: "http://traces:4318/custom", sampler: DefaultSampler, service: "waypoint",
		},
		{
			name: "option beats both endpoint variables and gets the traces path",
			opts: TracingOptions{Endpoint: "https://opt:4318", Env: []string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=http://generic:4318",
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://traces:4318/custom",
			}},
			protocol: ProtocolHTTPProtobuf, endpoint: "https://opt:4318/v1/traces", sampler: DefaultSampler, service: "waypoint",
		},
		{
			name:     "option with its own path keeps it",
			opts:     TracingOptions{Endpoint: "http://opt:4318/otlp/traces"},
			protocol: ProtocolHTTPProtobuf, endpoint: "http://opt:4318/otlp/traces", sampler: DefaultSampler, service: "waypoint",
		},
		{
			name:     "grpc from env, http scheme means plaintext",
			opts:     TracingOptions{Env: []string{"OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317"}},
			protocol: ProtocolGRPC, endpoint: "collector:4317", insecure: true, sampler: DefaultSampler, service: "waypoint",
		},
		{
			name:     "grpc https URL means TLS",
			opts:     TracingOptions{Protocol: "grpc", Endpoint: "https://collector:4317/ignored"},
			protocol: ProtocolGRPC, endpoint: "collector:4317", sampler: DefaultSampler, service: "waypoint",
		},
		{
			name:     "grpc host:port is TLS by default",
			opts:     TracingOptions{Protocol: "grpc", Endpoint: "collector:4317"},
			protocol: ProtocolGRPC, endpoint: "collector:4317", sampler: DefaultSampler, service: "waypoint",
		},
		{
			name:     "grpc host:port plaintext when asked",
			opts:     TracingOptions{Protocol: "grpc", Endpoint: "collector:4317", Env: []string{"OTEL_EXPORTER_OTLP_INSECURE=TRUE"}},
			protocol: ProtocolGRPC, endpoint: "collector:4317", insecure: true, sampler: DefaultSampler, service: "waypoint",
		},
		{
			name: "traces protocol beats generic protocol, option beats both",
			opts: TracingOptions{Protocol: "http/protobuf", Endpoint: "http://c:4318", Env: []string{
				"OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc",
			}},
			protocol: ProtocolHTTPProtobuf, endpoint: "http://c:4318/v1/traces", sampler: DefaultSampler, service: "waypoint",
		},
		{
			name: "traces protocol beats generic protocol",
			opts: TracingOptions{Endpoint: "http://c:4317", Env: []string{
				"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc",
			}},
			protocol: ProtocolGRPC, endpoint: "c:4317", insecure: true, sampler: DefaultSampler, service: "waypoint",
		},
		{
			name:     "sampler from env",
			opts:     TracingOptions{Endpoint: "http://c:4318", Env: []string{"OTEL_TRACES_SAMPLER=traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.25"}},
			protocol: ProtocolHTTPProtobuf, endpoint: "http://c:4318/v1/traces", sampler: "traceidratio", arg: "0.25", service: "waypoint",
		},
		{
			name:     "sampler options beat env, field by field",
			opts:     TracingOptions{Endpoint: "http://c:4318", Sampler: "always_on", Env: []string{"OTEL_TRACES_SAMPLER=always_off", "OTEL_TRACES_SAMPLER_ARG=0.5"}},
			protocol: ProtocolHTTPProtobuf, endpoint: "http://c:4318/v1/traces", sampler: "always_on", arg: "0.5", service: "waypoint",
		},
		{
			name: "OTEL_SERVICE_NAME overrides the role and the resource attribute",
			opts: TracingOptions{ServiceName: "waypoint-ingest", Env: []string{"OTEL_RESOURCE_ATTRIBUTES=service.name=from-attrs", "OTEL_SERVICE_NAME=custom"}},
			off:  "no OTLP endpoint configured", protocol: ProtocolHTTPProtobuf, sampler: DefaultSampler, service: "custom",
		},
		{
			name: "service.name in OTEL_RESOURCE_ATTRIBUTES overrides the role",
			opts: TracingOptions{ServiceName: "waypoint-ingest", Env: []string{"OTEL_RESOURCE_ATTRIBUTES=service.name=from-attrs"}},
			off:  "no OTLP endpoint configured", protocol: ProtocolHTTPProtobuf, sampler: DefaultSampler, service: "from-attrs",
		},
		{
			name: "later duplicates win, blank values are unset",
			opts: TracingOptions{Env: []string{
				"OTEL_EXPORTER_OTLP_ENDPOINT=http://first:1", "OTEL_EXPORTER_OTLP_ENDPOINT=http://second:2",
				"OTEL_TRACES_SAMPLER=  ", "garbage-without-equals",
			}},
			protocol: ProtocolHTTPProtobuf, endpoint: "http://second:2/v1/traces", sampler: DefaultSampler, service: "waypoint",
		},
		{
			name: "OTEL_SDK_DISABLED wins over an endpoint",
			opts: TracingOptions{Endpoint: "http://c:4318", Env: []string{"OTEL_SDK_DISABLED=true"}},
			off:  "OTEL_SDK_DISABLED=true",
		},
		{
			name: "disabled option wins over OTEL_SDK_DISABLED=false",
			opts: TracingOptions{Disabled: true, Endpoint: "http://c:4318", Env: []string{"OTEL_SDK_DISABLED=false"}},
			off:  "disabled by option",
		},
		{
			name: "OTEL_TRACES_EXPORTER=none",
			opts: TracingOptions{Endpoint: "http://c:4318", Env: []string{"OTEL_TRACES_EXPORTER=none"}},
			off:  "OTEL_TRACES_EXPORTER=none",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := resolveTracing(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if c.off != (tt.off != "") || c.offReason != tt.off {
				t.Errorf("off = %v (%q), want %q", c.off, c.offReason, tt.off)
			}
			if c.off && tt.protocol == "" {
				return
			}
			if c.protocol != tt.protocol || c.endpoint != tt.endpoint || c.insecure != tt.insecure {
				t.Errorf("protocol, endpoint, insecure = %q, %q, %v; want %q, %q, %v",
					c.protocol, c.endpoint, c.insecure, tt.protocol, tt.endpoint, tt.insecure)
			}
			if c.sampler != tt.sampler || c.samplerArg != tt.arg {
				t.Errorf("sampler = %q(%q), want %q(%q)", c.sampler, c.samplerArg, tt.sampler, tt.arg)
			}
			if c.serviceName != tt.service {
				t.Errorf("service = %q, want %q", c.serviceName, tt.service)
			}
		})
	}
}

func TestResolveTracingExporterEnv(t *testing.T) {
	c, err := resolveTracing(TracingOptions{Endpoint: "http://c:4318", Env: []string{
		"OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20generic",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS=authorization=Bearer%20t0k,x-team = wp ",
		"OTEL_EXPORTER_OTLP_TIMEOUT=2500",
		"OTEL_EXPORTER_OTLP_COMPRESSION=gzip",
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod,k8s.pod.name=sink-0",
	}})
	if err != nil {
		t.Fatal(err)
	}
	if c.headers["authorization"] != "Bearer t0k" || c.headers["x-team"] != "wp" || len(c.headers) != 2 {
		t.Errorf("headers = %v", c.headers)
	}
	if c.timeout != 2500*time.Millisecond || !c.gzip {
		t.Errorf("timeout, gzip = %v, %v", c.timeout, c.gzip)
	}
	res := attribute.NewSet(c.resource...)
	if v, _ := res.Value("deployment.environment"); v.AsString() != "prod" {
		t.Errorf("resource = %v", c.resource)
	}
	if v, _ := res.Value("k8s.pod.name"); v.AsString() != "sink-0" {
		t.Errorf("resource = %v", c.resource)
	}
}

func TestResolveTracingErrors(t *testing.T) {
	tests := []struct {
		name string
		opts TracingOptions
		want string
	}{
		{"bad sdk disabled", TracingOptions{Env: []string{"OTEL_SDK_DISABLED=yes"}}, `OTEL_SDK_DISABLED="yes": want true or false`},
		{"bad exporter", TracingOptions{Env: []string{"OTEL_TRACES_EXPORTER=zipkin"}}, "only otlp and none"},
		{"bad protocol", TracingOptions{Protocol: "http/json"}, `otlp protocol "http/json"`},
		{"bad protocol env", TracingOptions{Env: []string{"OTEL_EXPORTER_OTLP_PROTOCOL=thrift"}}, `otlp protocol "thrift"`},
		{"bad sampler", TracingOptions{Env: []string{"OTEL_TRACES_SAMPLER=sometimes"}}, `unsupported sampler "sometimes"`},
		{"bad ratio", TracingOptions{SamplerArg: "2"}, "want a ratio between 0 and 1"},
		{"bad force env", TracingOptions{Env: []string{"WAYPOINT_TRACE_FORCE=fid:x"}}, "WAYPOINT_TRACE_FORCE: force entry"},
		{"bad force hash option", TracingOptions{ForceHashes: []string{"abc"}}, "want 0x-prefixed hex"},
		{"http endpoint without scheme", TracingOptions{Endpoint: "collector:4318"}, "scheme must be http or https"},
		{"grpc endpoint without port", TracingOptions{Protocol: "grpc", Endpoint: "collector"}, "want host:port"},
		{"endpoint with bad scheme", TracingOptions{Env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=ftp://c:21"}}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"endpoint without host", TracingOptions{Endpoint: "http:///v1/traces"}, "missing host"},
		{"bad insecure", TracingOptions{Protocol: "grpc", Endpoint: "c:4317", Env: []string{"OTEL_EXPORTER_OTLP_INSECURE=1"}}, "OTEL_EXPORTER_OTLP_INSECURE"},
		{"bad timeout", TracingOptions{Endpoint: "http://c:1", Env: []string{"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT=10s"}}, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"},
		{"bad compression", TracingOptions{Endpoint: "http://c:1", Env: []string{"OTEL_EXPORTER_OTLP_COMPRESSION=zstd"}}, "want gzip or none"},
		{"bad headers", TracingOptions{Endpoint: "http://c:1", Env: []string{"OTEL_EXPORTER_OTLP_HEADERS=novalue"}}, "OTEL_EXPORTER_OTLP_HEADERS: entry"},
		{"bad resource attributes", TracingOptions{Env: []string{"OTEL_RESOURCE_ATTRIBUTES=a=%zz"}}, "OTEL_RESOURCE_ATTRIBUTES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := SetupTracing(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "setup tracing: ") {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// recorded builds the provider exactly as SetupTracing would for opts,
// but exporting synchronously into memory.
func recorded(t *testing.T, opts TracingOptions) (trace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	cfg, err := resolveTracing(opts)
	if err != nil {
		t.Fatal(err)
	}
	sampler, err := cfg.buildSampler()
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp, err := newSDKProvider(context.Background(), cfg, sampler, sdktrace.WithSyncer(exp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, exp
}

// startTrace starts a root ingest.receive span with a child, the shape a
// component produces.
func startTrace(tp trace.TracerProvider, attrs ...attribute.KeyValue) {
	tracer := tp.Tracer("test")
	ctx, root := tracer.Start(context.Background(), SpanIngestReceive, trace.WithAttributes(attrs...))
	_, child := tracer.Start(ctx, SpanIngestPublish)
	child.End()
	root.End()
}

func TestTracingSamplesFromEnv(t *testing.T) {
	const traces = 400
	tests := []struct {
		name     string
		env      []string
		min, max int // exported traces out of 400 unforced ones
		// forced is how many spans of a forced two-span trace are kept:
		// both under a parent-based sampler, only the forced root under
		// always_off, and under a plain ratio sampler the child follows its
		// own draw on the shared trace id (-1: one or two).
		forced int
	}{
		{"always_on", []string{"OTEL_TRACES_SAMPLER=always_on"}, traces, traces, 2},
		{"always_off", []string{"OTEL_TRACES_SAMPLER=always_off"}, 0, 0, 1},
		{"parentbased_always_off", []string{"OTEL_TRACES_SAMPLER=parentbased_always_off"}, 0, 0, 2},
		// 400 draws at 0.5: outside 120..280 has probability below 1e-20.
		{"traceidratio 0.5", []string{"OTEL_TRACES_SAMPLER=traceidratio", "OTEL_TRACES_SAMPLER_ARG=0.5"}, 120, 280, -1},
		{"default sampler ratio 0", []string{"OTEL_TRACES_SAMPLER_ARG=0"}, 0, 0, 2},
		{"default sampler ratio 1", []string{"OTEL_TRACES_SAMPLER_ARG=1"}, traces, traces, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := append([]string{"WAYPOINT_TRACE_FORCE=fid:7", "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1"}, tt.env...)
			tp, exp := recorded(t, TracingOptions{ServiceName: "waypoint-ingest", Env: env})
			for i := range traces {
				startTrace(tp, FID(uint64(1000+i)))
			}
			unforced := len(exp.GetSpans()) / 2
			if unforced < tt.min || unforced > tt.max {
				t.Errorf("exported %d of %d unforced traces, want %d..%d", unforced, traces, tt.min, tt.max)
			}
			exp.Reset()

			startTrace(tp, FID(7), Shard(2))
			spans := exp.GetSpans()
			if n := len(spans); n != tt.forced && (tt.forced != -1 || n < 1 || n > 2) {
				t.Fatalf("forced trace exported %d spans, want %d", n, tt.forced)
			}
			root := spans[len(spans)-1]
			if root.Name != SpanIngestReceive || root.Parent.IsValid() {
				t.Errorf("last span %q parent %v, want the root %s", root.Name, root.Parent, SpanIngestReceive)
			}
			attrs := attribute.NewSet(root.Attributes...)
			if v, ok := attrs.Value(AttrFID); !ok || v.AsInt64() != 7 {
				t.Errorf("root attributes = %v", root.Attributes)
			}
			if v, _ := root.Resource.Set().Value("service.name"); v.AsString() != "waypoint-ingest" {
				t.Errorf("service.name = %q", v.AsString())
			}
		})
	}
}

func TestTracingForceByHashOption(t *testing.T) {
	tp, exp := recorded(t, TracingOptions{
		Endpoint: "http://127.0.0.1:1", Sampler: "parentbased_always_off",
		ForceHashes: []string{strings.ToUpper(hashB[:2]) + hashB[2:]},
		Env:         []string{"WAYPOINT_TRACE_FORCE=fid:9"},
	})
	startTrace(tp, AttrMessageHash.String(hashA))
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("unforced hash exported %d spans", n)
	}
	startTrace(tp, AttrMessageHash.String(hashB))
	startTrace(tp, FID(9)) // env entries add to the option's
	if n := len(exp.GetSpans()); n != 4 {
		t.Fatalf("forced hash and fid exported %d spans, want 4", n)
	}
}

func TestSetupTracingOff(t *testing.T) {
	for env, reason := range map[string]string{
		"": "no OTLP endpoint configured",
		"OTEL_SDK_DISABLED=true OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1": "OTEL_SDK_DISABLED=true",
	} {
		var log bytes.Buffer
		tr, err := SetupTracing(context.Background(), TracingOptions{
			ServiceName: "waypoint-sink", Env: strings.Fields(env), Logger: slog.New(slog.NewTextHandler(&log, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log.String(), "tracing off") || !strings.Contains(log.String(), reason) {
			t.Errorf("env %q: startup log %q, want the reason %q", env, log.String(), reason)
		}
		if tr.Enabled() {
			t.Errorf("env %v: tracing enabled", env)
		}
		_, span := tr.TracerProvider().Tracer("x").Start(context.Background(), SpanSinkProcess)
		if span.IsRecording() || span.SpanContext().IsValid() {
			t.Errorf("env %v: no-op provider made a real span", env)
		}
		span.End()
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

// TestPropagation carries a trace and baggage from a recording process
// through headers into a process with tracing off and back.
func TestPropagation(t *testing.T) {
	tp, exp := recorded(t, TracingOptions{Endpoint: "http://127.0.0.1:1", Sampler: "always_on"})
	up := &Tracing{provider: tp, propagator: newPropagator()}
	down, err := SetupTracing(context.Background(), TracingOptions{})
	if err != nil {
		t.Fatal(err)
	}

	member, err := baggage.NewMember("waypoint.origin", "backfill")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	ctx := baggage.ContextWithBaggage(context.Background(), bag)
	ctx, span := up.TracerProvider().Tracer("up").Start(ctx, SpanIngestPublish)
	headers := propagation.MapCarrier{}
	up.Propagator().Inject(ctx, headers)
	span.End()

	tp0 := headers["traceparent"]
	if !strings.HasPrefix(tp0, "00-"+span.SpanContext().TraceID().String()+"-") || !strings.HasSuffix(tp0, "-01") {
		t.Fatalf("traceparent = %q (headers %v)", tp0, headers)
	}
	if headers["baggage"] != "waypoint.origin=backfill" {
		t.Errorf("baggage = %q", headers["baggage"])
	}
	for k := range headers {
		if k != strings.ToLower(k) {
			t.Errorf("header %q is not lowercase", k)
		}
	}

	// Tracing off downstream still passes the context on unchanged.
	dctx := down.Propagator().Extract(context.Background(), headers)
	dctx, dspan := down.TracerProvider().Tracer("down").Start(dctx, SpanSinkProcess)
	out := propagation.MapCarrier{}
	down.Propagator().Inject(dctx, out)
	dspan.End()
	if out["traceparent"] != tp0 || out["baggage"] != headers["baggage"] {
		t.Errorf("passed through %v, want %v", out, headers)
	}

	// And a recording process continues the same trace under the same parent.
	cctx := up.Propagator().Extract(context.Background(), out)
	_, cspan := up.TracerProvider().Tracer("up").Start(cctx, SpanSinkCommit)
	cspan.End()
	spans := exp.GetSpans()
	last := spans[len(spans)-1]
	if last.SpanContext.TraceID() != span.SpanContext().TraceID() || last.Parent.SpanID() != span.SpanContext().SpanID() || !last.Parent.IsRemote() {
		t.Errorf("continued span %v has parent %v, want remote child of %v", last.SpanContext, last.Parent, span.SpanContext())
	}
}

// TestOffTracerNeverReturnsARecordingParent guards the allocation-free
// shortcut of the off provider: a span recorded by another provider in ctx
// must not come back as "our" span, or ending ours would end theirs.
func TestOffTracerNeverReturnsARecordingParent(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	other := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = other.Shutdown(context.Background()) })
	ctx, parent := other.Tracer("other").Start(context.Background(), "parent")

	off, err := SetupTracing(context.Background(), TracingOptions{Disabled: true})
	if err != nil {
		t.Fatal(err)
	}
	cctx, span := off.TracerProvider().Tracer("x").Start(ctx, SpanSinkProcess)
	span.End()
	if span.IsRecording() || !span.SpanContext().Equal(parent.SpanContext()) {
		t.Errorf("off span recording=%v sc=%v, want non-recording copy of %v", span.IsRecording(), span.SpanContext(), parent.SpanContext())
	}
	if trace.SpanFromContext(cctx).IsRecording() {
		t.Error("child context still carries the recording parent as its span")
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("ending the off span ended the parent (%d spans exported)", n)
	}
	parent.End()
	if n := len(exp.GetSpans()); n != 1 {
		t.Fatalf("parent exported %d times, want once", n)
	}
}

func TestInstallGlobals(t *testing.T) {
	prevTP, prevProp, prevEH := otel.GetTracerProvider(), otel.GetTextMapPropagator(), otel.GetErrorHandler()
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetTextMapPropagator(prevProp)
		otel.SetErrorHandler(prevEH)
	})
	var log bytes.Buffer
	tr, err := SetupTracing(context.Background(), TracingOptions{
		Endpoint: "http://127.0.0.1:1", Logger: slog.New(slog.NewTextHandler(&log, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	tr.InstallGlobals()
	if otel.GetTracerProvider() != tr.TracerProvider() {
		t.Error("global tracer provider not installed")
	}
	fields := otel.GetTextMapPropagator().Fields()
	if !slices.Contains(fields, "traceparent") || !slices.Contains(fields, "baggage") {
		t.Errorf("global propagator fields = %v", fields)
	}
	otel.Handle(errors.New("export failed"))
	if !strings.Contains(log.String(), "export failed") {
		t.Errorf("otel error not logged: %q", log.String())
	}
}

// TestSpanLinkLimit checks that a batch span keeps a link to every message
// of a large batch by default, and that OTEL_SPAN_LINK_COUNT_LIMIT still
// bounds it.
func TestSpanLinkLimit(t *testing.T) {
	const links = 1000
	for _, c := range []struct {
		name string
		env  []string
		want int
	}{
		{"default", nil, links},
		{"env", []string{"OTEL_SPAN_LINK_COUNT_LIMIT=10"}, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := append([]string{"OTEL_TRACES_SAMPLER=always_on"}, c.env...)
			tp, exp := recorded(t, TracingOptions{ServiceName: "waypoint-sink", Env: env})
			tracer := tp.Tracer("test")
			var ls []trace.Link
			for range links {
				_, s := tracer.Start(context.Background(), SpanSinkProcess)
				ls = append(ls, trace.Link{SpanContext: s.SpanContext()})
				s.End()
			}
			_, commit := tracer.Start(context.Background(), SpanSinkCommit, trace.WithLinks(ls...))
			commit.End()
			spans := exp.GetSpans()
			got := spans[len(spans)-1]
			if got.Name != SpanSinkCommit || len(got.Links) != c.want {
				t.Fatalf("%s kept %d links, want %d", got.Name, len(got.Links), c.want)
			}
		})
	}
	if _, err := resolveTracing(TracingOptions{Env: []string{"OTEL_SPAN_LINK_COUNT_LIMIT=many"}}); err == nil ||
		!strings.Contains(err.Error(), "OTEL_SPAN_LINK_COUNT_LIMIT") {
		t.Fatalf("a malformed OTEL_SPAN_LINK_COUNT_LIMIT: err %v, want one naming it", err)
	}
}
