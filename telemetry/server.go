package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is where the telemetry server listens unless configured
// otherwise: loopback, so metrics are not exposed by accident.
const DefaultAddr = "127.0.0.1:9090"

// DefaultCheckTimeout bounds a readiness check whose Timeout is zero. It is
// below the Kubernetes default probe timeout of one second, so a slow
// dependency reads as "not ready" rather than as a failed probe.
const DefaultCheckTimeout = 800 * time.Millisecond

// shutdownTimeout bounds the graceful shutdown of in-flight scrapes.
const shutdownTimeout = 5 * time.Second

// Check is one named readiness condition.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
	// Timeout bounds one run of Fn; zero means DefaultCheckTimeout.
	Timeout time.Duration
}

// PostgresCheck is the readiness check "postgres" around a ping function
// such as (*pgxpool.Pool).Ping.
func PostgresCheck(ping func(ctx context.Context) error) Check {
	return Check{Name: "postgres", Fn: func(ctx context.Context) error {
		if ping == nil {
			return errors.New("no ping function")
		}
		if err := ping(ctx); err != nil {
			return fmt.Errorf("ping postgres: %w", err)
		}
		return nil
	}}
}

// LagCheck fails while lag() is above threshold, e.g. a shard's hub lag in
// blocks. A NaN lag fails too: an unknown lag is not a small one.
func LagCheck(name string, lag func() float64, threshold float64) Check {
	return Check{Name: name, Fn: func(context.Context) error {
		if lag == nil {
			return errors.New("no lag function")
		}
		v := lag()
		if math.IsNaN(v) {
			return errors.New("lag unknown")
		}
		if v > threshold {
			return fmt.Errorf("lag %s above threshold %s",
				strconv.FormatFloat(v, 'f', -1, 64), strconv.FormatFloat(threshold, 'f', -1, 64))
		}
		return nil
	}}
}

// Server serves /metrics, /healthz and /readyz.
type Server struct {
	addr    string
	handler http.Handler

	onListen func(net.Addr) // tests learn the port of 127.0.0.1:0 here
}

// NewServer prepares a server on addr (host:port; DefaultAddr in the
// configuration). An empty addr gives a disabled server whose Serve just
// waits for its context. A malformed addr is an error; one that cannot be
// bound is reported by Serve.
func NewServer(addr string, reg prometheus.Gatherer, readiness ...Check) (*Server, error) {
	if addr != "" {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("telemetry server address %q: %w", addr, err)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
			return nil, fmt.Errorf("telemetry server address %q: port %q is not a number from 0 to 65535", addr, port)
		}
		if host == "" {
			// ":9090" would listen on every interface; say so explicitly.
			return nil, fmt.Errorf("telemetry server address %q: missing host (use 127.0.0.1 for loopback, 0.0.0.0 for all interfaces)", addr)
		}
	}
	for i, c := range readiness {
		if c.Name == "" || c.Fn == nil {
			return nil, fmt.Errorf("telemetry server: readiness check %d: name and function are required", i)
		}
	}
	if reg == nil {
		return nil, errors.New("telemetry server: nil metrics gatherer")
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A failing collector should cost its own series, not the scrape.
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	checks := append([]Check(nil), readiness...)
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		serveReady(w, r, checks)
	})
	return &Server{addr: addr, handler: mux}, nil
}

// Handler returns the server's routes, for mounting elsewhere or testing
// without a listener.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve listens on the configured address and serves until ctx is done,
// then shuts down gracefully. It returns nil after a clean shutdown and an
// error naming the address when it cannot listen.
func (s *Server) Serve(ctx context.Context) error {
	if s.addr == "" {
		<-ctx.Done()
		return nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("telemetry server: listen on %s: %w", s.addr, err)
	}
	if s.onListen != nil {
		s.onListen(ln.Addr())
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("telemetry server on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("telemetry server on %s: shutdown: %w", ln.Addr(), err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("telemetry server on %s: %w", ln.Addr(), err)
	}
	return nil
}

type checkResult struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

type readyBody struct {
	Status string        `json:"status"` // "ok" or "unavailable"
	Failed []string      `json:"failed,omitempty"`
	Checks []checkResult `json:"checks"`
}

// serveReady runs every check concurrently, each under its own timeout,
// and answers 200 when all pass and 503 naming the failures otherwise.
func serveReady(w http.ResponseWriter, r *http.Request, checks []Check) {
	results := make([]checkResult, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() { results[i] = runCheck(r.Context(), c) })
	}
	wg.Wait()
	body := readyBody{Status: "ok", Checks: results}
	for _, res := range results {
		if !res.OK {
			body.Failed = append(body.Failed, res.Name)
		}
	}
	code := http.StatusOK
	if len(body.Failed) > 0 {
		body.Status, code = "unavailable", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

func runCheck(ctx context.Context, c Check) (res checkResult) {
	res.Name = c.Name
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The check runs in its own goroutine so one that ignores ctx still
	// cannot hold the probe past its timeout; a panicking check reports
	// as failed instead of taking the process down.
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("check panicked: %v", p)
			}
		}()
		done <- c.Fn(ctx)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = fmt.Errorf("timed out after %s", timeout)
	}
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.OK = true
	return res
}
