package telemetry

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

const (
	hashA = "0x00112233445566778899aabbccddeeff00112233"
	hashB = "0xffeeddccbbaa99887766554433221100ffeeddcc"
)

// traceIDLow and traceIDHigh sit at the two ends of the ratio sampler's
// range: the SDK compares the id's last 8 bytes (shifted right by one)
// against ratio * 2^63, so low is kept by any ratio above zero and high by
// none below one.
var (
	traceIDLow  = trace.TraceID{0: 1}
	traceIDHigh = trace.TraceID{0: 1, 8: 0xff, 9: 0xff, 10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff}
)

func parentCtx(sampled, remote bool) context.Context {
	flags := trace.TraceFlags(0)
	if sampled {
		flags = trace.FlagsSampled
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0: 9, 15: 9},
		SpanID:     trace.SpanID{0: 9},
		TraceFlags: flags,
		Remote:     remote,
	})
	return trace.ContextWithSpanContext(context.Background(), sc)
}

func TestNewSampler(t *testing.T) {
	root := context.Background()
	tests := []struct {
		name, arg string
		ctx       context.Context
		id        trace.TraceID
		want      sdktrace.SamplingDecision
	}{
		{"always_on", "", root, traceIDHigh, sdktrace.RecordAndSample},
		{"ALWAYS_ON", "", root, traceIDHigh, sdktrace.RecordAndSample},
		{"always_off", "", root, traceIDLow, sdktrace.Drop},
		{"always_off", "", parentCtx(true, false), traceIDLow, sdktrace.Drop},
		{"traceidratio", "1", root, traceIDHigh, sdktrace.RecordAndSample},
		{"traceidratio", "0", root, traceIDLow, sdktrace.Drop},
		{"traceidratio", "0.5", root, traceIDLow, sdktrace.RecordAndSample},
		{"traceidratio", "0.5", root, traceIDHigh, sdktrace.Drop},
		// Not parent-based: the parent's decision is ignored.
		{"traceidratio", "0", parentCtx(true, false), traceIDLow, sdktrace.Drop},
		{"parentbased_always_on", "", root, traceIDHigh, sdktrace.RecordAndSample},
		{"parentbased_always_on", "", parentCtx(false, true), traceIDHigh, sdktrace.Drop},
		{"parentbased_always_off", "", root, traceIDLow, sdktrace.Drop},
		{"parentbased_always_off", "", parentCtx(true, true), traceIDLow, sdktrace.RecordAndSample},
		{"parentbased_traceidratio", "0", root, traceIDLow, sdktrace.Drop},
		{"parentbased_traceidratio", "1", root, traceIDHigh, sdktrace.RecordAndSample},
		{"parentbased_traceidratio", "0", parentCtx(true, false), traceIDLow, sdktrace.RecordAndSample},
		{"parentbased_traceidratio", "1", parentCtx(false, false), traceIDLow, sdktrace.Drop},
		// The default ratio, 0.01, keeps the lowest ids and drops the highest.
		{"parentbased_traceidratio", "", root, traceIDLow, sdktrace.RecordAndSample},
		{"parentbased_traceidratio", "", root, traceIDHigh, sdktrace.Drop},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.arg, func(t *testing.T) {
			s, err := newSampler(tt.name, tt.arg)
			if err != nil {
				t.Fatal(err)
			}
			got := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: tt.ctx, TraceID: tt.id, Name: "x"})
			if got.Decision != tt.want {
				t.Errorf("decision = %v, want %v (%s)", got.Decision, tt.want, s.Description())
			}
		})
	}
}

func TestNewSamplerErrors(t *testing.T) {
	tests := []struct{ name, arg, want string }{
		{"jaeger_remote", "", "unsupported sampler"},
		{"", "", "unsupported sampler"},
		{"traceidratio", "abc", "want a ratio between 0 and 1"},
		{"traceidratio", "1.5", "want a ratio between 0 and 1"},
		{"parentbased_traceidratio", "-0.1", "want a ratio between 0 and 1"},
		{"parentbased_traceidratio", "NaN", "want a ratio between 0 and 1"},
	}
	for _, tt := range tests {
		_, err := newSampler(tt.name, tt.arg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("newSampler(%q, %q) error = %v, want %q", tt.name, tt.arg, err, tt.want)
		}
	}
}

func TestForceSetParse(t *testing.T) {
	tests := []struct {
		in      string
		fids    []int64
		hashes  []string
		wantErr string
	}{
		{in: ""},
		{in: " , ,"},
		{in: "fid:123", fids: []int64{123}},
		{in: "fid:1, fid:2 ,hash:" + strings.ToUpper(hashA[2:]), wantErr: "want 0x-prefixed hex"},
		{in: "fid:1, FID: 2 ,hash:0X" + strings.ToUpper(hashA[2:]), fids: []int64{1, 2}, hashes: []string{hashA}},
		{in: "hash:" + hashA + ",hash:" + hashB, hashes: []string{hashA, hashB}},
		{in: "fid:-1", wantErr: "not a decimal number"},
		{in: "fid:18446744073709551615", wantErr: "out of range"},
		{in: "fid:abc", wantErr: "not a decimal number"},
		{in: "123", wantErr: "want fid:<n> or hash:<0x-hex>"},
		{in: "user:1", wantErr: `unknown kind "user"`},
		{in: "hash:0xabc", wantErr: "encoding/hex"},
		{in: "hash:0xzz112233445566778899aabbccddeeff00112233", wantErr: "invalid byte"},
		{in: "hash:0x0011", wantErr: "2 bytes, want 20"},
	}
	for _, tt := range tests {
		var f forceSet
		err := f.parse(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parse(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("parse(%q): %v", tt.in, err)
			continue
		}
		if len(f.fids) != len(tt.fids) || len(f.hashes) != len(tt.hashes) {
			t.Errorf("parse(%q) = %d fids, %d hashes; want %d, %d", tt.in, len(f.fids), len(f.hashes), len(tt.fids), len(tt.hashes))
		}
		for _, fid := range tt.fids {
			if _, ok := f.fids[fid]; !ok {
				t.Errorf("parse(%q): fid %d missing", tt.in, fid)
			}
		}
		for _, h := range tt.hashes {
			if _, ok := f.hashes[h]; !ok {
				t.Errorf("parse(%q): hash %s missing", tt.in, h)
			}
		}
	}
}

func TestForceSampler(t *testing.T) {
	var force forceSet
	if err := force.parse("fid:42,hash:" + hashA); err != nil {
		t.Fatal(err)
	}
	s := &forceSampler{base: sdktrace.ParentBased(sdktrace.NeverSample()), force: force}
	rawA := []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11, 0x22, 0x33}

	tests := []struct {
		name  string
		ctx   context.Context
		attrs []attribute.KeyValue
		want  sdktrace.SamplingDecision
	}{
		{"root with forced fid", context.Background(), []attribute.KeyValue{Shard(1), FID(42)}, sdktrace.RecordAndSample},
		{"root with forced fid as string", context.Background(), []attribute.KeyValue{AttrFID.String("42")}, sdktrace.RecordAndSample},
		{"root with other fid", context.Background(), []attribute.KeyValue{FID(43)}, sdktrace.Drop},
		{"root with fid of wrong type", context.Background(), []attribute.KeyValue{AttrFID.Bool(true)}, sdktrace.Drop},
		{"root with forced hash", context.Background(), []attribute.KeyValue{MessageHash(rawA)}, sdktrace.RecordAndSample},
		{"root with forced hash in upper case", context.Background(), []attribute.KeyValue{AttrMessageHash.String("0x" + strings.ToUpper(hashA[2:]))}, sdktrace.RecordAndSample},
		{"root with other hash", context.Background(), []attribute.KeyValue{AttrMessageHash.String(hashB)}, sdktrace.Drop},
		{"root with fid under another key", context.Background(), []attribute.KeyValue{attribute.Int64("fid", 42)}, sdktrace.Drop},
		{"root without attributes", context.Background(), nil, sdktrace.Drop},
		{"unsampled remote parent, forced fid", parentCtx(false, true), []attribute.KeyValue{FID(42)}, sdktrace.RecordAndSample},
		{"unsampled remote parent, other fid", parentCtx(false, true), []attribute.KeyValue{FID(7)}, sdktrace.Drop},
		// Inside this process the first span decided; a forced attribute on
		// a child of an unsampled span does not make half a trace.
		{"unsampled local parent, forced fid", parentCtx(false, false), []attribute.KeyValue{FID(42)}, sdktrace.Drop},
		{"sampled local parent, no attributes", parentCtx(true, false), nil, sdktrace.RecordAndSample},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: tt.ctx, TraceID: traceIDLow, Name: SpanIngestReceive, Attributes: tt.attrs})
			if got.Decision != tt.want {
				t.Errorf("decision = %v, want %v", got.Decision, tt.want)
			}
		})
	}
	if d := s.Description(); !strings.Contains(d, "fids:1") || !strings.Contains(d, "hashes:1") || !strings.Contains(d, "ParentBased") {
		t.Errorf("Description() = %q", d)
	}
}

func TestForceSamplerKeepsTraceState(t *testing.T) {
	ts, err := trace.ParseTraceState("vendor=value")
	if err != nil {
		t.Fatal(err)
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceState: ts, Remote: true,
	})
	var force forceSet
	if err := force.addFID(5); err != nil {
		t.Fatal(err)
	}
	s := &forceSampler{base: sdktrace.NeverSample(), force: force}
	got := s.ShouldSample(sdktrace.SamplingParameters{
		ParentContext: trace.ContextWithSpanContext(context.Background(), sc),
		TraceID:       sc.TraceID(), Attributes: []attribute.KeyValue{FID(5)},
	})
	if got.Decision != sdktrace.RecordAndSample || got.Tracestate.Get("vendor") != "value" {
		t.Errorf("got %v with tracestate %q, want sampled with vendor=value", got.Decision, got.Tracestate.String())
	}
}

// TestLinkSampler: a root span linked to a sampled span is recorded
// whatever the ratio says, so a batch commit shows up beside the sampled
// messages it wrote; unsampled links change nothing, and a span with a
// parent follows the parent.
func TestLinkSampler(t *testing.T) {
	link := func(sampled bool) trace.Link {
		flags := trace.TraceFlags(0)
		if sampled {
			flags = trace.FlagsSampled
		}
		return trace.Link{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: trace.TraceID{0: 7, 15: 7}, SpanID: trace.SpanID{0: 7}, TraceFlags: flags,
		})}
	}
	root := context.Background()
	tests := []struct {
		name  string
		ctx   context.Context
		links []trace.Link
		want  sdktrace.SamplingDecision
	}{
		{"root, no links", root, nil, sdktrace.Drop},
		{"root, unsampled link", root, []trace.Link{link(false)}, sdktrace.Drop},
		{"root, one sampled link of two", root, []trace.Link{link(false), link(true)}, sdktrace.RecordAndSample},
		{"unsampled parent, sampled link", parentCtx(false, true), []trace.Link{link(true)}, sdktrace.Drop},
		{"sampled parent, no links", parentCtx(true, true), nil, sdktrace.RecordAndSample},
	}
	// Ratio 0 drops every root, so only the link rule can keep one.
	cfg, err := resolveTracing(TracingOptions{Endpoint: "http://127.0.0.1:4318", SamplerArg: "0"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := cfg.buildSampler()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := s.ShouldSample(sdktrace.SamplingParameters{ParentContext: tt.ctx, TraceID: traceIDLow, Name: "x", Links: tt.links})
			if got.Decision != tt.want {
				t.Errorf("decision = %v, want %v (%s)", got.Decision, tt.want, s.Description())
			}
		})
	}
	if d := s.Description(); !strings.HasPrefix(d, "LinkSampler{ParentBased") {
		t.Errorf("Description() = %q", d)
	}
}
