package telemetry

import (
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Sampler names accepted in TracingOptions.Sampler and OTEL_TRACES_SAMPLER.
const (
	SamplerAlwaysOn                = "always_on"
	SamplerAlwaysOff               = "always_off"
	SamplerTraceIDRatio            = "traceidratio"
	SamplerParentBasedAlwaysOn     = "parentbased_always_on"
	SamplerParentBasedAlwaysOff    = "parentbased_always_off"
	SamplerParentBasedTraceIDRatio = "parentbased_traceidratio"
)

// DefaultSampler and DefaultSamplerRatio keep tracing affordable at full
// ingest speed: one trace in a hundred, continued across processes by the
// parent's decision, plus whatever the force set asks for.
const (
	DefaultSampler      = SamplerParentBasedTraceIDRatio
	DefaultSamplerRatio = 0.01
)

// hashLen is the size of a Farcaster message hash (BLAKE3-160). Force
// entries of another length could never match, so they are rejected.
const hashLen = 20

// newSampler builds the named sampler; arg is the ratio for the ratio
// samplers (empty means DefaultSamplerRatio) and ignored by the others.
func newSampler(name, arg string) (sdktrace.Sampler, error) {
	ratio := func() (float64, error) {
		if arg == "" {
			return DefaultSamplerRatio, nil
		}
		r, err := strconv.ParseFloat(strings.TrimSpace(arg), 64)
		if err != nil || math.IsNaN(r) || r < 0 || r > 1 {
			return 0, fmt.Errorf("sampler argument %q: want a ratio between 0 and 1", arg)
		}
		return r, nil
	}
	switch strings.ToLower(strings.TrimSpace(name)) {
	case SamplerAlwaysOn:
		return sdktrace.AlwaysSample(), nil
	case SamplerAlwaysOff:
		return sdktrace.NeverSample(), nil
	case SamplerParentBasedAlwaysOn:
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case SamplerParentBasedAlwaysOff:
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case SamplerTraceIDRatio:
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.TraceIDRatioBased(r), nil
	case SamplerParentBasedTraceIDRatio:
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	default:
		return nil, fmt.Errorf("unsupported sampler %q (want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio)", name)
	}
}

// forceSet is the set of accounts and messages whose traces are always
// recorded, whatever the ratio says.
type forceSet struct {
	fids   map[int64]struct{}
	hashes map[string]struct{} // lowercase 0x-hex
}

func (f *forceSet) empty() bool { return len(f.fids) == 0 && len(f.hashes) == 0 }

func (f *forceSet) addFID(fid uint64) error {
	if fid > math.MaxInt64 {
		return fmt.Errorf("force fid %d: out of range", fid)
	}
	if f.fids == nil {
		f.fids = make(map[int64]struct{})
	}
	f.fids[int64(fid)] = struct{}{}
	return nil
}

func (f *forceSet) addHash(s string) error {
	h := strings.ToLower(strings.TrimSpace(s))
	raw, ok := strings.CutPrefix(h, "0x")
	if !ok {
		return fmt.Errorf("force hash %q: want 0x-prefixed hex", s)
	}
	b, err := hex.DecodeString(raw)
	if err != nil {
		return fmt.Errorf("force hash %q: %w", s, err)
	}
	if len(b) != hashLen {
		return fmt.Errorf("force hash %q: %d bytes, want %d", s, len(b), hashLen)
	}
	if f.hashes == nil {
		f.hashes = make(map[string]struct{})
	}
	f.hashes[h] = struct{}{}
	return nil
}

// parse adds the entries of a WAYPOINT_TRACE_FORCE value:
// comma-separated "fid:<decimal>" and "hash:<0x-hex>" items.
func (f *forceSet) parse(s string) error {
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		kind, val, ok := strings.Cut(item, ":")
		if !ok {
			return fmt.Errorf("force entry %q: want fid:<n> or hash:<0x-hex>", item)
		}
		switch strings.ToLower(strings.TrimSpace(kind)) {
		case "fid":
			n, err := strconv.ParseUint(strings.TrimSpace(val), 10, 64)
			if err != nil {
				return fmt.Errorf("force entry %q: fid is not a decimal number", item)
			}
			if err := f.addFID(n); err != nil {
				return err
			}
		case "hash":
			if err := f.addHash(val); err != nil {
				return err
			}
		default:
			return fmt.Errorf("force entry %q: unknown kind %q (want fid or hash)", item, kind)
		}
	}
	return nil
}

// match reports whether attrs name a forced FID or message hash.
func (f *forceSet) match(attrs []attribute.KeyValue) bool {
	for _, kv := range attrs {
		switch kv.Key {
		case AttrFID:
			if len(f.fids) == 0 {
				continue
			}
			var fid int64
			switch kv.Value.Type() {
			case attribute.INT64:
				fid = kv.Value.AsInt64()
			case attribute.STRING:
				n, err := strconv.ParseInt(kv.Value.AsString(), 10, 64)
				if err != nil {
					continue
				}
				fid = n
			default:
				continue
			}
			if _, ok := f.fids[fid]; ok {
				return true
			}
		case AttrMessageHash:
			if len(f.hashes) == 0 || kv.Value.Type() != attribute.STRING {
				continue
			}
			if _, ok := f.hashes[strings.ToLower(kv.Value.AsString())]; ok {
				return true
			}
		}
	}
	return false
}

// forceSampler records every span that starts a trace in this process
// (a root, or the first span under a remote parent) and carries a forced
// FID or hash in its start attributes; all other decisions are the base
// sampler's. Spans below a forced span follow it only when the base sampler
// is parent-based, which the default is.
type forceSampler struct {
	base  sdktrace.Sampler
	force forceSet
}

func (s *forceSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	psc := trace.SpanContextFromContext(p.ParentContext)
	if (!psc.IsValid() || psc.IsRemote()) && s.force.match(p.Attributes) {
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: psc.TraceState()}
	}
	return s.base.ShouldSample(p)
}

func (s *forceSampler) Description() string {
	return fmt.Sprintf("ForceSampler{fids:%d,hashes:%d,base:%s}", len(s.force.fids), len(s.force.hashes), s.base.Description())
}

// linkSampler records a root span linked to at least one sampled span,
// such as a sink batch commit linked to the messages it wrote: without it
// the batch would be sampled on its own trace id, and a sampled message's
// trace would almost never show where it was committed. Everything else is
// the base sampler's decision.
type linkSampler struct {
	base sdktrace.Sampler
}

func (s *linkSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if !trace.SpanContextFromContext(p.ParentContext).IsValid() {
		for _, l := range p.Links {
			if l.SpanContext.IsSampled() {
				return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
			}
		}
	}
	return s.base.ShouldSample(p)
}

func (s *linkSampler) Description() string {
	return "LinkSampler{" + s.base.Description() + "}"
}
