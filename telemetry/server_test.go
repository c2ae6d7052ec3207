package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// serve runs s.Serve until the test ends and returns its base URL.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	addrc := make(chan net.Addr, 1)
	s.onListen = func(a net.Addr) { addrc <- a }
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	select {
	case a := <-addrc:
		return "http://" + a.String()
	case err := <-errc:
		t.Fatalf("Serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start listening")
	}
	return ""
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func ready(t *testing.T, base string) (int, readyBody) {
	t.Helper()
	code, body := get(t, base+"/readyz")
	var rb readyBody
	if err := json.Unmarshal([]byte(body), &rb); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, rb
}

// TestReadyzFollowsPostgres drives /readyz with a real dependency: a pool
// on a fresh database that is then dropped (its connections terminated)
// and created again.
func TestReadyzFollowsPostgres(t *testing.T) {
	ctx := context.Background()
	dbURL := testsupport.PostgresURL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	dbName := strings.TrimPrefix(u.Path, "/")
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	admin, err := pgx.Connect(ctx, testsupport.Env(t, "WAYPOINT_DATABASE__URL"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close(ctx) })

	var lag atomic.Int64
	check := PostgresCheck(pool.Ping)
	check.Timeout = 5 * time.Second // the shared server may be busy; failure must come from the drop
	m := NewMetrics()
	s, err := NewServer("127.0.0.1:0", m.Registry, check,
		LagCheck("hub_lag", func() float64 { return float64(lag.Load()) }, 100))
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s)

	code, rb := ready(t, base)
	if code != http.StatusOK || rb.Status != "ok" || len(rb.Failed) != 0 || len(rb.Checks) != 2 {
		t.Fatalf("initially /readyz = %d %+v, want 200 with 2 passing checks", code, rb)
	}

	if _, err := admin.Exec(ctx, "DROP DATABASE "+pgx.Identifier{dbName}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Fatal(err)
	}
	code, rb = ready(t, base)
	if code != http.StatusServiceUnavailable || rb.Status != "unavailable" || len(rb.Failed) != 1 || rb.Failed[0] != "postgres" {
		t.Fatalf("after DROP DATABASE /readyz = %d %+v, want 503 naming postgres", code, rb)
	}
	if !strings.HasPrefix(rb.Checks[0].Error, "ping postgres: ") {
		t.Errorf("postgres check error = %q", rb.Checks[0].Error)
	}
	if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz with postgres gone = %d %q, want 200 ok", code, body)
	}

	lag.Store(250)
	code, rb = ready(t, base)
	if code != http.StatusServiceUnavailable || strings.Join(rb.Failed, ",") != "postgres,hub_lag" {
		t.Fatalf("with lag too /readyz = %d %+v, want 503 naming postgres and hub_lag", code, rb)
	}
	if rb.Checks[1].Error != "lag 250 above threshold 100" {
		t.Errorf("lag check error = %q", rb.Checks[1].Error)
	}

	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{dbName}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	lag.Store(3)
	code, rb = ready(t, base)
	if code != http.StatusOK || len(rb.Failed) != 0 {
		t.Fatalf("after CREATE DATABASE /readyz = %d %+v, want 200", code, rb)
	}
}

func TestHealthzAndMetricsOverHTTP(t *testing.T) {
	m := NewMetrics()
	failing := Check{Name: "never", Fn: func(context.Context) error { return errors.New("down") }}
	s, err := NewServer("127.0.0.1:0", m.Registry, failing)
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s)
	if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, _ := ready(t, base); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503", code)
	}
	m.Reconnects.WithLabelValues(ShardLabel(2)).Inc()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	if got := parseExposition(t, strings.NewReader(body))[`waypoint_reconnects_total{shard="2"}`]; got != 1 {
		t.Errorf("waypoint_reconnects_total{shard=\"2\"} = %v, want 1", got)
	}
	if code, _ := get(t, base+"/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing = %d, want 404", code)
	}
	resp, err := http.Post(base+"/healthz", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", resp.StatusCode)
	}
}

func TestReadinessCheckEdges(t *testing.T) {
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	tests := []struct {
		name    string
		check   Check
		wantErr string // empty: passes; "a|b": either
	}{
		{"passes", Check{Name: "ok", Fn: func(context.Context) error { return nil }}, ""},
		{"fails", Check{Name: "bad", Fn: func(context.Context) error { return errors.New("nats down") }}, "nats down"},
		{"ignores its context", Check{Name: "stuck", Timeout: 50 * time.Millisecond, Fn: func(context.Context) error { <-block; return nil }}, "timed out after 50ms"},
		{"honours its context", Check{Name: "slow", Timeout: 50 * time.Millisecond, Fn: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }}, "deadline exceeded|timed out after 50ms"},
		{"panics", Check{Name: "boom", Fn: func(context.Context) error { panic("bad state") }}, "check panicked: bad state"},
		{"nil ping", PostgresCheck(nil), "no ping function"},
		{"ping error", PostgresCheck(func(context.Context) error { return errors.New("refused") }), "ping postgres: refused"},
		{"lag at threshold", LagCheck("lag", func() float64 { return 100 }, 100), ""},
		{"lag above threshold", LagCheck("lag", func() float64 { return 100.5 }, 100), "lag 100.5 above threshold 100"},
		{"lag unknown", LagCheck("lag", func() float64 { return math.NaN() }, 100), "lag unknown"},
		{"nil lag", LagCheck("lag", nil, 100), "no lag function"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			res := runCheck(context.Background(), tt.check)
			if time.Since(start) > 5*time.Second {
				t.Errorf("check took %v", time.Since(start))
			}
			if res.Name != tt.check.Name {
				t.Errorf("name = %q, want %q", res.Name, tt.check.Name)
			}
			if tt.wantErr == "" {
				if !res.OK || res.Error != "" {
					t.Errorf("result = %+v, want pass", res)
				}
				return
			}
			matched := false
			for alt := range strings.SplitSeq(tt.wantErr, "|") {
				matched = matched || strings.Contains(res.Error, alt)
			}
			if res.OK || !matched {
				t.Errorf("result = %+v, want failure %q", res, tt.wantErr)
			}
		})
	}
}

func TestNewServerRejectsBadConfig(t *testing.T) {
	reg := NewMetrics().Registry
	tests := []struct {
		addr   string
		checks []Check
		want   string
	}{
		{"localhost", nil, "missing port in address"},
		{"127.0.0.1:http", nil, `port "http" is not a number`},
		{"127.0.0.1:70000", nil, `port "70000" is not a number`},
		{"127.0.0.1:-1", nil, `port "-1" is not a number`},
		{":9090", nil, "missing host"},
		{"[::1:9090", nil, "missing ']'"},
		{"127.0.0.1:9090", []Check{{Name: "", Fn: func(context.Context) error { return nil }}}, "readiness check 0: name and function are required"},
		{"127.0.0.1:9090", []Check{{Name: "x"}}, "readiness check 0"},
	}
	for _, tt := range tests {
		_, err := NewServer(tt.addr, reg, tt.checks...)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewServer(%q) error = %v, want %q", tt.addr, err, tt.want)
		}
	}
	if _, err := NewServer(DefaultAddr, nil); err == nil {
		t.Error("NewServer accepted a nil gatherer")
	}
}

func TestServeReportsBindErrors(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	reg := NewMetrics().Registry

	s, err := NewServer(taken.Addr().String(), reg)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Serve(context.Background())
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "telemetry server: listen on "+taken.Addr().String()) {
		t.Errorf("Serve on a taken port = %v", err)
	}

	// An address this machine does not have (TEST-NET-1, never routed).
	s, err = NewServer("192.0.2.1:9090", reg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(context.Background()); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("Serve on a foreign address = %v, want EADDRNOTAVAIL", err)
	}
}

func TestServeShutsDownWithContext(t *testing.T) {
	s, err := NewServer("127.0.0.1:0", NewMetrics().Registry)
	if err != nil {
		t.Fatal(err)
	}
	addrc := make(chan net.Addr, 1)
	s.onListen = func(a net.Addr) { addrc <- a }
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	addr := (<-addrc).String()
	if code, _ := get(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = c.Close()
		t.Error("server still accepts connections after shutdown")
	}
}

func TestDisabledServerWaitsForContext(t *testing.T) {
	s, err := NewServer("", NewMetrics().Registry)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.Serve(ctx); err != nil {
		t.Errorf("disabled Serve = %v, want nil", err)
	}
	if ctx.Err() == nil {
		t.Error("disabled Serve returned before its context was done")
	}
}
