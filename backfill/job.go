package backfill

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
)

// Kind is what a job does with its FIDs.
type Kind string

const (
	// KindBackfill copies every selected data type of a FID.
	KindBackfill Kind = "backfill"
	// KindUserData refreshes only a FID's user data.
	KindUserData Kind = "user_data"
	// KindReconcile compares a FID's live data on the hub with Postgres and
	// repairs the differences in both directions; it is what repairs a gap
	// in the event stream, since a backfill only adds.
	KindReconcile Kind = "reconcile"
)

func (k Kind) valid() bool {
	switch k {
	case KindBackfill, KindUserData, KindReconcile:
		return true
	}
	return false
}

// DataType names one family of data a backfill job can fetch.
type DataType string

const (
	Casts          DataType = "casts"
	Reactions      DataType = "reactions"
	Links          DataType = "links" // link adds and removes plus link compact state
	Verifications  DataType = "verifications"
	UserData       DataType = "user_data"
	LendStorage    DataType = "lend_storage"
	OnChainEvents  DataType = "onchain_events" // every on-chain event type
	UsernameProofs DataType = "username_proofs"
)

// allDataTypes is what a backfill job without a type selection fetches.
var allDataTypes = []DataType{Casts, Reactions, Links, Verifications, UserData, LendStorage, OnChainEvents, UsernameProofs}

// AllDataTypes returns every data type, in the order they are documented.
func AllDataTypes() []DataType { return slices.Clone(allDataTypes) }

// ParseDataTypes parses a comma-separated list such as "casts,reactions".
// The empty string means every type.
func ParseDataTypes(s string) ([]DataType, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []DataType
	for _, f := range strings.Split(s, ",") {
		t := DataType(strings.TrimSpace(f))
		if !slices.Contains(allDataTypes, t) {
			return nil, fmt.Errorf("parse data types: unknown type %q (want one of %s)", t, joinTypes(allDataTypes))
		}
		out = append(out, t)
	}
	return normalizeTypes(out), nil
}

// ParseFIDs parses a comma-separated list of FIDs such as "1,2,3".
func ParseFIDs(s string) ([]uint64, error) {
	var out []uint64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("parse fids: %q is not a positive integer", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("parse fids: no fid in %q", s)
	}
	return out, nil
}

// normalizeTypes sorts and deduplicates ts so that equal selections compare
// equal; nil stays nil and means "all".
func normalizeTypes(ts []DataType) []DataType {
	if len(ts) == 0 {
		return nil
	}
	out := slices.Clone(ts)
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == len(allDataTypes) {
		return nil
	}
	return out
}

func joinTypes(ts []DataType) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return strings.Join(s, ",")
}

func splitTypes(s string) []DataType {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	out := make([]DataType, len(parts))
	for i, p := range parts {
		out[i] = DataType(p)
	}
	return out
}

// Job is one claimed unit of work: a batch of FIDs of one kind.
type Job struct {
	ID         string
	Kind       Kind
	FIDs       []uint64
	Types      []DataType // nil means every type of Kind
	Priority   bool
	Attempt    int    // 1 on the first claim
	LastError  string // error of the previous attempt, if any
	EnqueuedAt time.Time
	// TraceParent and TraceState are the W3C trace context of the request
	// that enqueued the job.
	TraceParent string
	TraceState  string

	lease string
}

// Context returns ctx carrying the job's trace context as the remote parent,
// so spans of the work join the trace that enqueued it.
func (j *Job) Context(ctx context.Context) context.Context {
	if j.TraceParent == "" {
		return ctx
	}
	c := propagation.MapCarrier{"traceparent": j.TraceParent}
	if j.TraceState != "" {
		c["tracestate"] = j.TraceState
	}
	return propagation.TraceContext{}.Extract(ctx, c)
}

// types returns the data types the job fetches.
func (j *Job) types() []DataType {
	switch j.Kind {
	case KindUserData:
		return []DataType{UserData}
	}
	if len(j.Types) == 0 {
		return allDataTypes
	}
	return j.Types
}

func formatFIDs(fids []uint64) string {
	var b strings.Builder
	for i, f := range fids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(f, 10))
	}
	return b.String()
}

func parseFIDList(s string) ([]uint64, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	out := make([]uint64, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse job fids: %w", err)
		}
		out[i] = n
	}
	return out, nil
}
