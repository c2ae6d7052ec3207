package telemetry

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/internal/testsupport"
)

// received is what a test collector got: the decoded requests and the
// headers (gRPC metadata or HTTP headers) they came with.
type received struct {
	mu      sync.Mutex
	reqs    []*coltracepb.ExportTraceServiceRequest
	headers []map[string][]string
}

func (r *received) add(req *coltracepb.ExportTraceServiceRequest, h map[string][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	r.headers = append(r.headers, h)
}

// spans flattens the received requests into spans, each with its
// resource's service.name.
func (r *received) spans() (spans []*tracepb.Span, services []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, req := range r.reqs {
		for _, rs := range req.GetResourceSpans() {
			svc := stringAttr(rs.GetResource().GetAttributes(), "service.name")
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					spans = append(spans, s)
					services = append(services, svc)
				}
			}
		}
	}
	return spans, services
}

func (r *received) header(name string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.headers {
		for k, v := range h {
			if strings.EqualFold(k, name) && len(v) > 0 {
				return v[0]
			}
		}
	}
	return ""
}

func stringAttr(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func intAttr(kvs []*commonpb.KeyValue, key string) (int64, bool) {
	for _, kv := range kvs {
		if kv.GetKey() == key {
			return kv.GetValue().GetIntValue(), true
		}
	}
	return 0, false
}

// grpcCollector is a minimal OTLP/gRPC trace receiver.
type grpcCollector struct {
	coltracepb.UnimplementedTraceServiceServer
	got *received
}

func (c *grpcCollector) Export(ctx context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	c.got.add(req, md)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func startGRPCCollector(t *testing.T) (addr string, got *received) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got = &received{}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, &grpcCollector{got: got})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), got
}

func startHTTPCollector(t *testing.T) (url string, got *received) {
	t.Helper()
	got = &received{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
			http.Error(w, "content type "+ct, http.StatusUnsupportedMediaType)
			return
		}
		b, err := testsupport.RequestBody(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := &coltracepb.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(b, req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got.add(req, r.Header.Clone())
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, got
}

// exportOne sets tracing up from opts, records a two-span trace, shuts
// down (which flushes) and checks what the collector received.
func exportOne(t *testing.T, opts TracingOptions, got *received) {
	t.Helper()
	ctx := context.Background()
	tr, err := SetupTracing(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("tracing is off")
	}
	tracer := tr.TracerProvider().Tracer("github.com/waypointhq/waypoint/telemetry")
	hash := []byte{0xde, 0xad, 0xbe, 0xef}
	rctx, root := tracer.Start(ctx, SpanBackfillJob, trace.WithAttributes(FID(4242), Shard(1)))
	_, child := tracer.Start(rctx, SpanBackfillWrite, trace.WithAttributes(MessageHash(hash), AttrMessageType.String("MESSAGE_TYPE_CAST_ADD")))
	child.End()
	root.End()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}

	spans, services := got.spans()
	if len(spans) != 2 {
		t.Fatalf("collector received %d spans, want 2", len(spans))
	}
	byName := map[string]*tracepb.Span{}
	for i, s := range spans {
		byName[s.GetName()] = s
		if services[i] != "waypoint-backfill" {
			t.Errorf("span %q service.name = %q", s.GetName(), services[i])
		}
	}
	r, c := byName[SpanBackfillJob], byName[SpanBackfillWrite]
	if r == nil || c == nil {
		t.Fatalf("spans = %v", byName)
	}
	rootID := root.SpanContext().TraceID()
	if string(r.GetTraceId()) != string(rootID[:]) || string(c.GetTraceId()) != string(rootID[:]) {
		t.Errorf("trace ids %x, %x; want %s", r.GetTraceId(), c.GetTraceId(), rootID)
	}
	if string(c.GetParentSpanId()) != string(r.GetSpanId()) {
		t.Errorf("child parent %x, want root %x", c.GetParentSpanId(), r.GetSpanId())
	}
	if fid, ok := intAttr(r.GetAttributes(), string(AttrFID)); !ok || fid != 4242 {
		t.Errorf("root %s = %d, %v", AttrFID, fid, ok)
	}
	if h := stringAttr(c.GetAttributes(), string(AttrMessageHash)); h != "0xdeadbeef" {
		t.Errorf("child %s = %q", AttrMessageHash, h)
	}
}

func TestOTLPGRPCExport(t *testing.T) {
	addr, got := startGRPCCollector(t)
	exportOne(t, TracingOptions{
		ServiceName: "waypoint-backfill",
		Env: []string{
			"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
			"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + addr,
			"OTEL_EXPORTER_OTLP_HEADERS=x-waypoint-test=grpc%20ok",
			"OTEL_TRACES_SAMPLER=always_on",
		},
	}, got)
	if h := got.header("x-waypoint-test"); h != "grpc ok" {
		t.Errorf("collector saw header %q", h)
	}
}

func TestOTLPGRPCExportPlaintextHostPort(t *testing.T) {
	addr, got := startGRPCCollector(t)
	exportOne(t, TracingOptions{
		ServiceName: "waypoint-backfill",
		Protocol:    "grpc",
		Endpoint:    addr,
		Env:         []string{"OTEL_EXPORTER_OTLP_TRACES_INSECURE=true", "OTEL_EXPORTER_OTLP_COMPRESSION=gzip"},
		ForceFIDs:   []uint64{4242}, // default 1% sampler: only the force set makes this trace certain
	}, got)
}

func TestOTLPHTTPExport(t *testing.T) {
	url, got := startHTTPCollector(t)
	exportOne(t, TracingOptions{
		ServiceName: "waypoint-backfill",
		Env: []string{
			"OTEL_EXPORTER_OTLP_ENDPOINT=" + url,
			"OTEL_EXPORTER_OTLP_TRACES_HEADERS=authorization=Bearer%20secret",
			"WAYPOINT_TRACE_FORCE=fid:4242",
		},
	}, got)
	if h := got.header("authorization"); h != "Bearer secret" {
		t.Errorf("collector saw authorization %q", h)
	}
}

func TestOTLPHTTPExportGzipOption(t *testing.T) {
	url, got := startHTTPCollector(t)
	exportOne(t, TracingOptions{
		ServiceName: "waypoint-backfill",
		Endpoint:    url, // no path: /v1/traces is added
		Protocol:    "http/protobuf",
		Sampler:     "always_on",
		Env:         []string{"OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_EXPORTER_OTLP_COMPRESSION=gzip"},
	}, got)
	if h := got.header("content-encoding"); h != "gzip" {
		t.Errorf("content-encoding %q, want gzip", h)
	}
}
