package telemetry

import (
	"context"
	"fmt"
	"log/slog"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"
)

// TracingOptions configures SetupTracing. Empty fields fall back to the
// OTEL_* variables in Env, then to the defaults; see the package
// documentation for the full precedence.
type TracingOptions struct {
	// ServiceName is the role: waypoint-ingest, waypoint-sink or
	// waypoint-backfill. OTEL_SERVICE_NAME overrides it.
	ServiceName string
	// ServiceVersion, when set, becomes the service.version resource attribute.
	ServiceVersion string
	// Env is the environment in os.Environ() form. Nothing else is read
	// for the variables documented in the package; nil means none are set.
	Env []string

	// Endpoint is the OTLP collector: an http(s):// URL, or host:port for
	// gRPC. Empty with no endpoint in Env leaves tracing off.
	Endpoint string
	// Protocol is "grpc" or "http/protobuf" (the default).
	Protocol string
	// Sampler is one of the Sampler* names; default DefaultSampler.
	Sampler string
	// SamplerArg is the ratio for the ratio samplers, as a decimal string;
	// default DefaultSamplerRatio.
	SamplerArg string
	// ForceFIDs and ForceHashes (0x-hex) are always sampled; they add to
	// the entries of WAYPOINT_TRACE_FORCE.
	ForceFIDs   []uint64
	ForceHashes []string
	// Force lists more entries in the syntax of WAYPOINT_TRACE_FORCE
	// ("fid:123,hash:0x..."), e.g. from a configuration file.
	Force string
	// Disabled turns tracing off whatever the environment says.
	Disabled bool

	// Logger receives the startup summary and, after InstallGlobals,
	// exporter errors. Nil discards them.
	Logger *slog.Logger
}

// Tracing is the process's tracing setup. A Tracing with tracing off hands
// out a no-op provider; every method works either way.
type Tracing struct {
	provider   trace.TracerProvider
	sdk        *sdktrace.TracerProvider // nil when off
	propagator propagation.TextMapPropagator
	logger     *slog.Logger
}

// SetupTracing resolves opts against opts.Env and builds the tracer
// provider. It does not contact the collector: an unreachable collector
// shows up later as export errors, never as a failed start. Configuration
// errors are returned, naming the variable or option at fault.
func SetupTracing(ctx context.Context, opts TracingOptions) (*Tracing, error) {
	cfg, err := resolveTracing(opts)
	if err != nil {
		return nil, fmt.Errorf("setup tracing: %w", err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Tracing{
		provider:   offProvider{},
		propagator: newPropagator(),
		logger:     logger,
	}
	if cfg.off {
		logger.Info("tracing off", "reason", cfg.offReason)
		return t, nil
	}
	exp, err := newExporter(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("setup tracing: %w", err)
	}
	sampler, err := cfg.buildSampler()
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("setup tracing: %w", err)
	}
	tp, err := newSDKProvider(ctx, cfg, sampler, sdktrace.WithBatcher(exp))
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("setup tracing: %w", err)
	}
	t.provider, t.sdk = tp, tp
	logger.Info("tracing on", "service", cfg.serviceName, "protocol", cfg.protocol,
		"endpoint", cfg.endpoint, "sampler", sampler.Description())
	return t, nil
}

// buildSampler returns the configured sampler, wrapped in the force
// sampler when there is anything to force, and in the link sampler.
func (c *tracingConfig) buildSampler() (sdktrace.Sampler, error) {
	s, err := newSampler(c.sampler, c.samplerArg)
	if err != nil {
		return nil, err
	}
	if !c.force.empty() {
		s = &forceSampler{base: s, force: c.force}
	}
	return &linkSampler{base: s}, nil
}

// newSDKProvider builds the provider for cfg around the given span
// processor option; tests pass an in-memory exporter here.
func newSDKProvider(ctx context.Context, cfg tracingConfig, sampler sdktrace.Sampler, processor sdktrace.TracerProviderOption) (*sdktrace.TracerProvider, error) {
	// Built by hand rather than with resource.Default, which would read
	// OTEL_RESOURCE_ATTRIBUTES from the process instead of cfg.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(cfg.resource...),
	)
	if err != nil {
		return nil, fmt.Errorf("build resource: %w", err)
	}
	limits := sdktrace.NewSpanLimits()
	limits.LinkCountLimit = cfg.linkLimit
	return sdktrace.NewTracerProvider(processor, sdktrace.WithSampler(sampler), sdktrace.WithResource(res),
		sdktrace.WithRawSpanLimits(limits)), nil
}

func newExporter(ctx context.Context, cfg tracingConfig) (*otlptrace.Exporter, error) {
	var client otlptrace.Client
	switch cfg.protocol {
	case ProtocolGRPC:
		o := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(cfg.endpoint)}
		if cfg.insecure {
			o = append(o, otlptracegrpc.WithInsecure())
		} else {
			// Explicit credentials, so that OTEL_EXPORTER_OTLP_INSECURE in the
			// process environment cannot turn TLS off behind cfg's back.
			o = append(o, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(nil)))
		}
		if cfg.headers != nil {
			o = append(o, otlptracegrpc.WithHeaders(cfg.headers))
		}
		if cfg.timeout > 0 {
			o = append(o, otlptracegrpc.WithTimeout(cfg.timeout))
		}
		if cfg.gzip {
			o = append(o, otlptracegrpc.WithCompressor("gzip"))
		}
		client = otlptracegrpc.NewClient(o...)
	case ProtocolHTTPProtobuf:
		o := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(cfg.endpoint)}
		if cfg.headers != nil {
			o = append(o, otlptracehttp.WithHeaders(cfg.headers))
		}
		if cfg.timeout > 0 {
			o = append(o, otlptracehttp.WithTimeout(cfg.timeout))
		}
		if cfg.gzip {
			o = append(o, otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
		} else {
			o = append(o, otlptracehttp.WithCompression(otlptracehttp.NoCompression))
		}
		client = otlptracehttp.NewClient(o...)
	default:
		return nil, fmt.Errorf("otlp protocol %q: want grpc or http/protobuf", cfg.protocol)
	}
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("start otlp %s exporter for %s: %w", cfg.protocol, cfg.endpoint, err)
	}
	return exp, nil
}

func newPropagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// TracerProvider returns the provider components take their tracers from.
func (t *Tracing) TracerProvider() trace.TracerProvider { return t.provider }

// Propagator returns the W3C tracecontext + baggage propagator to inject
// into and extract from message headers (lowercase "traceparent",
// "tracestate", "baggage"). It works with tracing off too, so a trace
// started upstream passes through a process that records nothing.
func (t *Tracing) Propagator() propagation.TextMapPropagator { return t.propagator }

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t.sdk != nil }

// InstallGlobals makes this setup the otel global tracer provider,
// propagator and error handler, for third-party instrumentation that only
// knows the globals. Waypoint's own packages never read the globals; call
// this once, from main.
func (t *Tracing) InstallGlobals() {
	otel.SetTracerProvider(t.provider)
	otel.SetTextMapPropagator(t.propagator)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		t.logger.Warn("opentelemetry error", "err", err)
	}))
}

// Shutdown flushes buffered spans and stops the exporter, waiting at most
// until ctx is done. Spans started afterwards are dropped.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	if err := t.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown tracing: %w", err)
	}
	return nil
}
