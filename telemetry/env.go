package telemetry

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

// Protocol names accepted in TracingOptions.Protocol and
// OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// environ is a parsed os.Environ()-style list. Later entries win, as they
// do for os/exec, and empty values count as unset, as the OpenTelemetry
// specification asks.
type environ map[string]string

func parseEnviron(env []string) environ {
	m := make(environ, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}

// get returns the first of the named variables that is set and not blank.
func (e environ) get(names ...string) (name, value string) {
	for _, n := range names {
		if v := strings.TrimSpace(e[n]); v != "" {
			return n, v
		}
	}
	return "", ""
}

func (e environ) bool(names ...string) (bool, error) {
	n, v := e.get(names...)
	switch {
	case v == "":
		return false, nil
	case strings.EqualFold(v, "true"):
		return true, nil
	case strings.EqualFold(v, "false"):
		return false, nil
	}
	return false, fmt.Errorf("%s=%q: want true or false", n, v)
}

// tracingConfig is TracingOptions merged with the environment: everything
// SetupTracing needs, already validated.
type tracingConfig struct {
	off       bool   // no exporter, no-op provider
	offReason string // why, for the startup log

	serviceName string
	resource    []attribute.KeyValue

	protocol string
	endpoint string // grpc: host[:port]; http: full URL
	insecure bool   // grpc only; http takes it from the URL scheme
	headers  map[string]string
	timeout  time.Duration // 0: exporter default
	gzip     bool

	sampler    string
	samplerArg string
	force      forceSet

	// linkLimit is the most links a span keeps: a sink.commit span links
	// every sampled message of its batch, far more than the SDK's default
	// of 128 when sampling is high.
	linkLimit int
}

// DefaultSpanLinkLimit is the span link limit unless
// OTEL_SPAN_LINK_COUNT_LIMIT sets another.
const DefaultSpanLinkLimit = 100_000

func resolveTracing(opts TracingOptions) (tracingConfig, error) {
	env := parseEnviron(opts.Env)
	var c tracingConfig

	if opts.Disabled {
		c.off, c.offReason = true, "disabled by option"
		return c, nil
	}
	sdkOff, err := env.bool("OTEL_SDK_DISABLED")
	if err != nil {
		return c, err
	}
	if sdkOff {
		c.off, c.offReason = true, "OTEL_SDK_DISABLED=true"
		return c, nil
	}
	switch _, v := env.get("OTEL_TRACES_EXPORTER"); strings.ToLower(v) {
	case "", "otlp":
	case "none":
		c.off, c.offReason = true, "OTEL_TRACES_EXPORTER=none"
		return c, nil
	default:
		return c, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: only otlp and none are supported", v)
	}

	if err := c.resolveService(opts, env); err != nil {
		return c, err
	}

	c.linkLimit = DefaultSpanLinkLimit
	if n, v := env.get("OTEL_SPAN_LINK_COUNT_LIMIT"); v != "" {
		l, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || l < 0 {
			return c, fmt.Errorf("%s=%q: want a whole number of links, 0 or more", n, v)
		}
		c.linkLimit = l
	}

	c.sampler = firstNonEmpty(opts.Sampler, env["OTEL_TRACES_SAMPLER"], DefaultSampler)
	c.samplerArg = firstNonEmpty(opts.SamplerArg, env["OTEL_TRACES_SAMPLER_ARG"])
	if _, err := newSampler(c.sampler, c.samplerArg); err != nil {
		return c, err
	}
	for _, fid := range opts.ForceFIDs {
		if err := c.force.addFID(fid); err != nil {
			return c, err
		}
	}
	for _, h := range opts.ForceHashes {
		if err := c.force.addHash(h); err != nil {
			return c, err
		}
	}
	if err := c.force.parse(opts.Force); err != nil {
		return c, fmt.Errorf("force option: %w", err)
	}
	if err := c.force.parse(env["WAYPOINT_TRACE_FORCE"]); err != nil {
		return c, fmt.Errorf("WAYPOINT_TRACE_FORCE: %w", err)
	}

	c.protocol = strings.ToLower(firstNonEmpty(opts.Protocol,
		env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"], env["OTEL_EXPORTER_OTLP_PROTOCOL"], ProtocolHTTPProtobuf))
	if c.protocol != ProtocolGRPC && c.protocol != ProtocolHTTPProtobuf {
		return c, fmt.Errorf("otlp protocol %q: want grpc or http/protobuf", c.protocol)
	}
	if err := c.resolveEndpoint(opts, env); err != nil {
		return c, err
	}
	if err := c.resolveExporterEnv(env); err != nil {
		return c, err
	}
	if c.endpoint == "" {
		c.off, c.offReason = true, "no OTLP endpoint configured"
	}
	return c, nil
}

func (c *tracingConfig) resolveService(opts TracingOptions, env environ) error {
	c.serviceName = opts.ServiceName
	if _, v := env.get("OTEL_RESOURCE_ATTRIBUTES"); v != "" {
		attrs, err := parseKeyValues(v)
		if err != nil {
			return fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
		}
		for k, v := range attrs {
			if k == "service.name" {
				c.serviceName = v
				continue
			}
			c.resource = append(c.resource, attribute.String(k, v))
		}
	}
	if _, v := env.get("OTEL_SERVICE_NAME"); v != "" {
		c.serviceName = v
	}
	if c.serviceName == "" {
		c.serviceName = "waypoint"
	}
	c.resource = append(c.resource, attribute.String("service.name", c.serviceName))
	if opts.ServiceVersion != "" {
		c.resource = append(c.resource, attribute.String("service.version", opts.ServiceVersion))
	}
	return nil
}

// resolveEndpoint picks the endpoint by precedence and normalizes it for
// the protocol. The three sources differ only for http/protobuf paths:
// OTEL_EXPORTER_OTLP_ENDPOINT is a base URL that always gets /v1/traces
// appended, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as given, and the
// option gets /v1/traces only when it has no path of its own.
func (c *tracingConfig) resolveEndpoint(opts TracingOptions, env environ) error {
	const tracesPath = "/v1/traces"
	var source, raw string
	var pathFor func(string) string
	switch {
	case strings.TrimSpace(opts.Endpoint) != "":
		source, raw = "endpoint option", strings.TrimSpace(opts.Endpoint)
		pathFor = func(p string) string {
			if p == "" || p == "/" {
				return tracesPath
			}
			return p
		}
	case strings.TrimSpace(env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]) != "":
		source, raw = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", strings.TrimSpace(env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])
		pathFor = func(p string) string {
			if p == "" {
				return "/"
			}
			return p
		}
	case strings.TrimSpace(env["OTEL_EXPORTER_OTLP_ENDPOINT"]) != "":
		source, raw = "OTEL_EXPORTER_OTLP_ENDPOINT", strings.TrimSpace(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
		pathFor = func(p string) string { return strings.TrimSuffix(p, "/") + tracesPath }
	default:
		return nil
	}

	if c.protocol == ProtocolGRPC && !strings.Contains(raw, "://") {
		// host:port without a scheme: plaintext only when asked for.
		if _, _, err := net.SplitHostPort(raw); err != nil {
			return fmt.Errorf("%s %q: want host:port or an http(s):// URL", source, raw)
		}
		insecure, err := env.bool("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE")
		if err != nil {
			return err
		}
		c.endpoint, c.insecure = raw, insecure
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s %q: %w", source, raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%s %q: scheme must be http or https", source, raw)
	}
	if u.Host == "" {
		return fmt.Errorf("%s %q: missing host", source, raw)
	}
	if c.protocol == ProtocolGRPC {
		// gRPC has no path; the scheme only chooses TLS.
		c.endpoint, c.insecure = u.Host, u.Scheme == "http"
		return nil
	}
	u.Path, u.RawPath = pathFor(u.Path), ""
	c.endpoint = u.String()
	return nil
}

func (c *tracingConfig) resolveExporterEnv(env environ) error {
	if n, v := env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"); v != "" {
		h, err := parseKeyValues(v)
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		c.headers = h
	}
	if n, v := env.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"); v != "" {
		ms, err := strconv.ParseUint(v, 10, 32)
		if err != nil || ms == 0 {
			return fmt.Errorf("%s=%q: want a positive number of milliseconds", n, v)
		}
		c.timeout = time.Duration(ms) * time.Millisecond
	}
	switch n, v := env.get("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"); strings.ToLower(v) {
	case "", "none":
	case "gzip":
		c.gzip = true
	default:
		return fmt.Errorf("%s=%q: want gzip or none", n, v)
	}
	return nil
}

// parseKeyValues parses the "k1=v1,k2=v2" lists of OTEL_RESOURCE_ATTRIBUTES
// and OTEL_EXPORTER_OTLP_HEADERS, whose keys and values are URL-encoded.
func parseKeyValues(s string) (map[string]string, error) {
	out := make(map[string]string)
	for item := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("entry %q: want key=value", item)
		}
		key, err := url.PathUnescape(strings.TrimSpace(k))
		if err != nil || key == "" {
			return nil, fmt.Errorf("entry %q: bad key", item)
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("entry %q: bad value: %w", item, err)
		}
		out[key] = val
	}
	return out, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v = strings.TrimSpace(v); v != "" {
			return v
		}
	}
	return ""
}
