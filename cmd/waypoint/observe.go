package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/waypointhq/waypoint/backfill"
	"github.com/waypointhq/waypoint/config"
	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/ingest"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/telemetry"
)

// Service names, one per role. "waypoint start" runs ingest and sink in
// one process with one tracer provider each, so every span is filed under
// the role that did the work whichever command ran it.
const (
	serviceIngest   = "waypoint-ingest"
	serviceSink     = "waypoint-sink"
	serviceBackfill = "waypoint-backfill"
)

// hubLagThreshold is the hub lag, in blocks, above which an ingesting
// process reports itself not ready: about a minute behind at one block per
// second.
const hubLagThreshold = 60

// observer is what one long-running command shares for being observed:
// the metric set, the /metrics /healthz /readyz server, and a tracer
// provider per role. The readiness checks read state the roles register
// once they run; until then a check fails, which is the truth.
type observer struct {
	cfg     *config.Config
	log     *slog.Logger
	env     []string
	metrics *telemetry.Metrics

	mu       sync.Mutex
	tracing  map[string]*telemetry.Tracing
	pool     *pgxpool.Pool
	ingester *ingest.Ingester
	hub      *hub.Client
}

// newObserver prepares the telemetry of a command. Tracing reads the
// OTEL_* variables of the process environment, under the [tracing] keys.
func newObserver(cfg *config.Config, log *slog.Logger) *observer {
	return &observer{cfg: cfg, log: log, env: os.Environ(), metrics: telemetry.NewMetrics(), tracing: map[string]*telemetry.Tracing{}}
}

// tracer returns the tracing setup of the role named service, creating it
// on first use from the OTEL_* environment and the [tracing] section.
func (o *observer) tracer(ctx context.Context, service string) (*telemetry.Tracing, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if t, ok := o.tracing[service]; ok {
		return t, nil
	}
	t, err := telemetry.SetupTracing(ctx, telemetry.TracingOptions{
		ServiceName: service,
		Env:         o.env,
		Endpoint:    o.cfg.Tracing.Endpoint,
		SamplerArg:  o.cfg.Tracing.SamplerRatio,
		Force:       o.cfg.Tracing.Force,
		Logger:      o.log.With("component", "tracing"),
	})
	if err != nil {
		return nil, err
	}
	o.tracing[service] = t
	return t, nil
}

// providers returns the role's tracer provider and propagator.
func (o *observer) providers(ctx context.Context, service string) (trace.TracerProvider, propagation.TextMapPropagator, error) {
	t, err := o.tracer(ctx, service)
	if err != nil {
		return nil, nil, err
	}
	return t.TracerProvider(), t.Propagator(), nil
}

func (o *observer) setPool(p *pgxpool.Pool) {
	o.mu.Lock()
	o.pool = p
	o.mu.Unlock()
}

func (o *observer) setIngester(in *ingest.Ingester, h *hub.Client) {
	o.mu.Lock()
	o.ingester, o.hub = in, h
	o.mu.Unlock()
}

// serve runs the telemetry server until ctx is done or stop is called,
// then flushes the tracer providers. roles lists what the command runs
// ("ingest", "sink", "backfill") and so the readiness checks: Postgres
// for sink and backfill, hub lag for ingest. A server that cannot listen is
// logged, not fatal: losing /metrics must not stop the pipeline.
func (o *observer) serve(ctx context.Context, roles ...string) (stop func()) {
	var checks []telemetry.Check
	for _, r := range roles {
		switch r {
		case "sink", "backfill":
			if len(checks) == 0 || checks[0].Name != "postgres" {
				checks = append([]telemetry.Check{telemetry.PostgresCheck(o.ping)}, checks...)
			}
		case "ingest":
			checks = append(checks, telemetry.Check{Name: "hub_lag", Fn: o.checkLag, Timeout: 2 * time.Second})
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	srv, err := telemetry.NewServer(o.cfg.Metrics.Addr, o.metrics.Registry, checks...)
	if err != nil {
		o.log.Error("telemetry server", "err", err)
	} else {
		wg.Go(func() {
			if err := srv.Serve(sctx); err != nil {
				o.log.Error("telemetry server stopped", "err", err)
			}
		})
	}
	for _, r := range roles {
		if r == "ingest" {
			wg.Go(func() { o.lagLoop(sctx) })
		}
	}
	return func() {
		cancel()
		wg.Wait()
		o.shutdown()
	}
}

// shutdown flushes and stops every tracer provider.
func (o *observer) shutdown() {
	o.mu.Lock()
	ts := o.tracing
	o.tracing = map[string]*telemetry.Tracing{}
	o.mu.Unlock()
	for name, t := range ts {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := t.Shutdown(ctx); err != nil {
			o.log.Warn("tracing shutdown", "service", name, "err", err)
		}
		cancel()
	}
}

func (o *observer) ping(ctx context.Context) error {
	o.mu.Lock()
	p := o.pool
	o.mu.Unlock()
	if p == nil {
		return errors.New("not connected yet")
	}
	return p.Ping(ctx)
}

// lag returns, per shard, the hub's height minus the block of the last
// event ingest received.
func (o *observer) lag(ctx context.Context) (map[uint32]float64, error) {
	o.mu.Lock()
	in, h := o.ingester, o.hub
	o.mu.Unlock()
	if in == nil || h == nil {
		return nil, errors.New("ingest not started yet")
	}
	info, err := h.Raw().GetInfo(ctx, &pb.GetInfoRequest{})
	if err != nil {
		return nil, fmt.Errorf("hub GetInfo: %w", err)
	}
	heights := map[uint32]uint64{}
	for _, si := range info.GetShardInfos() {
		heights[si.GetShardId()] = si.GetMaxHeight()
	}
	out := map[uint32]float64{}
	for _, st := range in.Stats().Shards {
		hgt, ok := heights[st.Shard]
		if !ok {
			out[st.Shard] = math.NaN()
			continue
		}
		if st.LastEventAt.IsZero() {
			// Nothing received yet: the whole chain is ahead.
			out[st.Shard] = float64(hgt)
			continue
		}
		out[st.Shard] = max(0, float64(hgt)-float64(st.LastEventID>>14))
	}
	return out, nil
}

func (o *observer) checkLag(ctx context.Context) error {
	lags, err := o.lag(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for shard, l := range lags {
		o.metrics.HubLagBlocks.WithLabelValues(telemetry.ShardLabel(shard)).Set(l)
		if math.IsNaN(l) || l > hubLagThreshold {
			errs = append(errs, fmt.Errorf("shard %d: lag %v blocks (threshold %d)", shard, l, hubLagThreshold))
		}
	}
	return errors.Join(errs...)
}

// lagLoop keeps waypoint_hub_lag_blocks current between readiness probes.
func (o *observer) lagLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_ = o.checkLag(cctx)
			cancel()
		}
	}
}

// watchQueue keeps waypoint_backfill_jobs current from the queue's status.
func (o *observer) watchQueue(ctx context.Context, q *backfill.Queue) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := q.Status(cctx)
		cancel()
		if err == nil {
			for state, c := range map[string]backfill.Count{
				"queued": st.Queued, "retrying": st.Retrying, "in_progress": st.InProgress, "done": st.Done, "failed": st.Failed,
			} {
				o.metrics.BackfillJobs.WithLabelValues(state).Set(float64(c.Jobs))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// traceReport is what "waypoint trace" found about one message.
type traceReport struct {
	Hash    string       `json:"hash"`
	Stored  *storedInfo  `json:"stored,omitempty"`
	Dead    []deadInfo   `json:"dead_letters,omitempty"`
	DBError string       `json:"database_error,omitempty"`
	Jaeger  jaegerLookup `json:"jaeger"`
}

type storedInfo struct {
	FID       int64      `json:"fid"`
	Type      string     `json:"type"`
	Timestamp time.Time  `json:"timestamp"`
	StoredAt  time.Time  `json:"stored_at"`
	DeletedAt *time.Time `json:"deleted_at,omitempty"`
	PrunedAt  *time.Time `json:"pruned_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

type deadInfo struct {
	ID      int64     `json:"id"`
	At      time.Time `json:"at"`
	Source  string    `json:"source"`
	Reason  string    `json:"reason"`
	Detail  string    `json:"detail"`
	Shard   *int32    `json:"shard,omitempty"`
	EventID *int64    `json:"event_id,omitempty"`
}

// jaegerLookup is the Jaeger search for the message's traces: the UI
// address to open, and what the query API answered when asked.
type jaegerLookup struct {
	SearchURL string   `json:"search_url"`
	TraceIDs  []string `json:"trace_ids,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// jaegerTagQuery returns the ingest service's tag query for hash, under
// base (a Jaeger UI or query address) and path ("/search" for the UI,
// "/api/traces" for the query API).
func jaegerTagQuery(base, path, hash string) string {
	tags := fmt.Sprintf(`{"%s":"%s"}`, telemetry.AttrMessageHash, hash)
	q := url.Values{"service": {serviceIngest}, "tags": {tags}}
	if path == "/api/traces" {
		q.Set("lookback", "168h")
		q.Set("limit", "20")
	}
	return strings.TrimRight(base, "/") + path + "?" + q.Encode()
}

// lookupMessage fills r from Postgres.
func lookupMessage(ctx context.Context, pool *pgxpool.Pool, hash []byte, r *traceReport) error {
	var s storedInfo
	var typ int16
	err := pool.QueryRow(ctx, `SELECT fid, type, "timestamp", created_at, deleted_at, pruned_at, revoked_at FROM messages WHERE hash = $1`, hash).
		Scan(&s.FID, &typ, &s.Timestamp, &s.StoredAt, &s.DeletedAt, &s.PrunedAt, &s.RevokedAt)
	switch {
	case err == nil:
		s.Type = pb.MessageType(typ).String()
		r.Stored = &s
	case !errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("look up messages: %w", err)
	}
	rows, err := pool.Query(ctx, `SELECT id, created_at, source, reason, detail, shard, event_id FROM dead_letters WHERE message_hash = $1 ORDER BY id`, hash)
	if err != nil {
		return fmt.Errorf("look up dead_letters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d deadInfo
		if err := rows.Scan(&d.ID, &d.At, &d.Source, &d.Reason, &d.Detail, &d.Shard, &d.EventID); err != nil {
			return fmt.Errorf("look up dead_letters: %w", err)
		}
		r.Dead = append(r.Dead, d)
	}
	return rows.Err()
}

// lookupJaeger asks Jaeger's query API for the message's traces.
func lookupJaeger(ctx context.Context, base, hash string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, jaegerTagQuery(base, "/api/traces", hash), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jaeger query API: %s", resp.Status)
	}
	var body struct {
		Data []struct {
			TraceID string `json:"traceID"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&body); err != nil {
		return nil, fmt.Errorf("jaeger query API: decode: %w", err)
	}
	var ids []string
	for _, t := range body.Data {
		ids = append(ids, t.TraceID)
	}
	return ids, nil
}

func (r *traceReport) print(w io.Writer, ratio string) {
	fmt.Fprintf(w, "message %s\n", r.Hash)
	switch {
	case r.DBError != "":
		fmt.Fprintf(w, "  database: unavailable: %s\n", r.DBError)
	case r.Stored != nil:
		s := r.Stored
		fmt.Fprintf(w, "  stored in messages: fid %d, %s, timestamp %s, written %s\n", s.FID, s.Type,
			s.Timestamp.UTC().Format(time.RFC3339), s.StoredAt.UTC().Format(time.RFC3339))
		for _, m := range []struct {
			what string
			at   *time.Time
		}{{"deleted", s.DeletedAt}, {"pruned", s.PrunedAt}, {"revoked", s.RevokedAt}} {
			if m.at != nil {
				fmt.Fprintf(w, "  %s at %s\n", m.what, m.at.UTC().Format(time.RFC3339))
			}
		}
	default:
		fmt.Fprintln(w, "  not in messages")
	}
	for _, d := range r.Dead {
		where := d.Source
		if d.Shard != nil && d.EventID != nil {
			where = fmt.Sprintf("%s shard %d event %d", d.Source, *d.Shard, *d.EventID)
		}
		fmt.Fprintf(w, "  dead-lettered (id %d, %s) by %s: %s %s\n", d.ID, d.At.UTC().Format(time.RFC3339), where, d.Reason, oneLine(d.Detail, 80))
	}
	if r.DBError == "" && r.Stored == nil && len(r.Dead) == 0 {
		fmt.Fprintln(w, "  not in dead_letters either: not received yet, or never sent to this pipeline")
	}
	fmt.Fprintf(w, "trace: %s\n", r.Jaeger.SearchURL)
	switch {
	case r.Jaeger.Error != "":
		fmt.Fprintf(w, "  jaeger: unavailable: %s\n", r.Jaeger.Error)
	case len(r.Jaeger.TraceIDs) > 0:
		fmt.Fprintf(w, "  jaeger has %d trace(s): %s\n", len(r.Jaeger.TraceIDs), strings.Join(r.Jaeger.TraceIDs, ", "))
	default:
		if ratio == "" {
			ratio = "OTEL_TRACES_SAMPLER_ARG, default 0.01"
		}
		fmt.Fprintf(w, "  jaeger has no trace for it: traces are sampled (ratio %s); set WAYPOINT_TRACE_FORCE=hash:%s (or tracing.force) to record this message's next journey\n", ratio, r.Hash)
	}
}
