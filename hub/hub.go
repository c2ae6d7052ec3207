// Package hub is Waypoint's client for a Snapchain node's gRPC HubService.
// It owns the connection details a node needs (TLS or plaintext h2c chosen by
// URL, API-key headers for hosted nodes, a receive limit large enough for
// full message pages, per-call deadlines and retries of transient failures)
// and turns the node's page-token loops into iterators, so ingest and
// backfill only deal with events and messages.
package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/waypointhq/waypoint/proto"
)

// DefaultPort is Snapchain's gRPC port, used when a plaintext URL names none.
const DefaultPort = 3383

// Defaults for the options of the same names.
const (
	DefaultCallTimeout    = 30 * time.Second
	DefaultMaxRecvMsgSize = 64 << 20
	DefaultRetryAttempts  = 5
	DefaultRetryBaseDelay = 200 * time.Millisecond
	DefaultRetryMaxDelay  = 5 * time.Second
)

// Client is a connection to one Snapchain node. It is safe for concurrent
// use; one Client per node is enough for any number of calls and streams.
type Client struct {
	conn   *grpc.ClientConn
	raw    pb.HubServiceClient
	target string
}

// Option configures Dial.
type Option func(*options)

type options struct {
	headers     map[string]string
	callTimeout time.Duration
	maxRecv     int
	attempts    int
	baseDelay   time.Duration
	maxDelay    time.Duration
	keepalive   *keepalive.ClientParameters
	logger      *slog.Logger
	tlsConfig   *tls.Config
	dialOptions []grpc.DialOption
}

// WithHeaders sends headers as gRPC metadata on every call and stream, for
// example {"x-api-key": "..."} for a hosted node. Names are case-insensitive.
func WithHeaders(headers map[string]string) Option {
	return func(o *options) {
		for k, v := range headers {
			o.headers[k] = v
		}
	}
}

// WithCallTimeout bounds each attempt of a unary call (default 30s; 0 means
// no bound beyond the caller's context). Streams are not bounded: a
// subscription is meant to run for as long as its context lives.
func WithCallTimeout(d time.Duration) Option {
	return func(o *options) { o.callTimeout = d }
}

// WithMaxRecvMsgSize sets the largest response accepted, in bytes (default
// 64 MiB; grpc-go's own 4 MiB is too small for full pages of messages).
func WithMaxRecvMsgSize(n int) Option {
	return func(o *options) { o.maxRecv = n }
}

// WithRetry makes a unary call that fails with UNAVAILABLE or
// RESOURCE_EXHAUSTED try again, up to maxAttempts attempts in all, waiting
// between attempts an exponentially growing, jittered delay that starts at
// baseDelay and never exceeds maxDelay. Waiting stops when the call's context
// ends. maxAttempts 1 disables retries. Defaults: 5, 200ms, 5s. Streams are
// never retried here: their callers resume from the last event they saw.
func WithRetry(maxAttempts int, baseDelay, maxDelay time.Duration) Option {
	return func(o *options) {
		o.attempts, o.baseDelay, o.maxDelay = maxAttempts, baseDelay, maxDelay
	}
}

// WithKeepalive enables HTTP/2 keepalive pings, which detect a dead
// connection under a quiet subscription. Unset by default, because a server
// that enforces a ping policy (grpc-go's allows one ping per 5 minutes)
// closes connections that ping more often than it permits.
func WithKeepalive(params keepalive.ClientParameters) Option {
	return func(o *options) { o.keepalive = &params }
}

// WithLogger receives retry notices (default: discarded).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithTLSConfig replaces the TLS configuration used for https:// URLs
// (default: system roots), e.g. to trust a private CA through RootCAs or, in
// tests, to set InsecureSkipVerify. It is an error with a plaintext URL.
func WithTLSConfig(c *tls.Config) Option {
	return func(o *options) { o.tlsConfig = c }
}

// WithDialOptions appends raw grpc-go dial options, applied after the ones
// this package sets, for what it does not cover (stats handlers, for one).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOptions = append(o.dialOptions, opts...) }
}

// headerName is what gRPC allows in a metadata key (after lower-casing).
var headerName = regexp.MustCompile(`^[0-9a-z_.-]+$`)

func (o *options) validate() error {
	for k := range o.headers {
		lk := strings.ToLower(k)
		if !headerName.MatchString(lk) {
			return fmt.Errorf("header %q: name must be letters, digits, '-', '_' or '.'", k)
		}
		if strings.HasPrefix(lk, "grpc-") {
			return fmt.Errorf("header %q: grpc- names are reserved", k)
		}
	}
	switch {
	case o.callTimeout < 0:
		return fmt.Errorf("call timeout %v is negative", o.callTimeout)
	case o.maxRecv <= 0:
		return fmt.Errorf("max receive size %d is not positive", o.maxRecv)
	case o.attempts < 1:
		return fmt.Errorf("retry attempts %d: want at least 1", o.attempts)
	case o.baseDelay < 0 || o.maxDelay < 0:
		return fmt.Errorf("retry delays %v, %v: must not be negative", o.baseDelay, o.maxDelay)
	case o.maxDelay < o.baseDelay:
		return fmt.Errorf("retry max delay %v is below base delay %v", o.maxDelay, o.baseDelay)
	}
	return nil
}

// Dial prepares a client for the node at rawURL:
//
//	https://host[:port]   TLS, system roots unless WithTLSConfig (port 443 if omitted)
//	http://host[:port]    plaintext HTTP/2 (h2c), port 3383 if omitted
//	host[:port]           same as http://
//
// Dial does not wait for the network: the connection is made in the
// background and calls wait for it, so a node that is still starting up
// costs retries rather than a failed Dial. Errors from Dial are about the
// URL and options only (or ctx having ended already; ctx is not kept).
func Dial(ctx context.Context, rawURL string, opts ...Option) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial hub %q: %w", rawURL, err)
	}
	o := options{
		headers:     map[string]string{},
		callTimeout: DefaultCallTimeout,
		maxRecv:     DefaultMaxRecvMsgSize,
		attempts:    DefaultRetryAttempts,
		baseDelay:   DefaultRetryBaseDelay,
		maxDelay:    DefaultRetryMaxDelay,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("dial hub %q: %w", rawURL, err)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	ep, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}

	var creds credentials.TransportCredentials
	switch {
	case ep.tls:
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.tlsConfig != nil {
			cfg = o.tlsConfig.Clone()
		}
		creds = credentials.NewTLS(cfg)
	case o.tlsConfig != nil:
		return nil, fmt.Errorf("dial hub %q: a TLS configuration was given for a plaintext url; use https://", rawURL)
	default:
		creds = insecure.NewCredentials()
	}

	md := make([]string, 0, 2*len(o.headers))
	for k, v := range o.headers {
		md = append(md, strings.ToLower(k), v)
	}
	r := retrier{attempts: o.attempts, base: o.baseDelay, max: o.maxDelay, timeout: o.callTimeout, log: o.logger}
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(o.maxRecv)),
		grpc.WithChainUnaryInterceptor(r.intercept, unaryHeaders(md)),
		grpc.WithChainStreamInterceptor(streamHeaders(md)),
	}
	if o.keepalive != nil {
		dialOpts = append(dialOpts, grpc.WithKeepaliveParams(*o.keepalive))
	}
	dialOpts = append(dialOpts, o.dialOptions...)

	conn, err := grpc.NewClient("dns:///"+ep.hostport, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("dial hub %q: %w", rawURL, err)
	}
	conn.Connect()
	return &Client{conn: conn, raw: pb.NewHubServiceClient(conn), target: ep.hostport}, nil
}

type endpoint struct {
	hostport string
	tls      bool
}

func parseURL(raw string) (endpoint, error) {
	bad := func(format string, args ...any) (endpoint, error) {
		return endpoint{}, fmt.Errorf("hub url %q: %s", raw, fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(raw) == "" {
		return bad("empty; want https://host:port, http://host:port or host:port")
	}
	if !strings.Contains(raw, "://") {
		host, port, err := net.SplitHostPort(raw)
		if err != nil {
			if strings.ContainsAny(raw, ":/?#@ ") {
				return bad("want host:port: %v", err)
			}
			host, port = raw, strconv.Itoa(DefaultPort)
		}
		return bare(raw, host, port, false)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("%v", err)
	}
	var port string
	switch u.Scheme {
	case "https":
		port = "443"
	case "http":
		port = strconv.Itoa(DefaultPort)
	default:
		return bad("unsupported scheme %q; want https or http", u.Scheme)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return bad("want only scheme://host[:port], without credentials, path or query")
	}
	if p := u.Port(); p != "" {
		port = p
	}
	return bare(raw, u.Hostname(), port, u.Scheme == "https")
}

func bare(raw, host, port string, useTLS bool) (endpoint, error) {
	if host == "" {
		return endpoint{}, fmt.Errorf("hub url %q: no host", raw)
	}
	if strings.ContainsAny(host, "/?#@ ") {
		return endpoint{}, fmt.Errorf("hub url %q: bad host %q", raw, host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return endpoint{}, fmt.Errorf("hub url %q: port %q is not a number from 1 to 65535", raw, port)
	}
	return endpoint{hostport: net.JoinHostPort(host, port), tls: useTLS}, nil
}

// Raw returns the generated client, for RPCs this package does not wrap.
// Its unary calls get the same headers, deadline and retries.
func (c *Client) Raw() pb.HubServiceClient { return c.raw }

// Close closes the connection; streams and calls in flight fail.
func (c *Client) Close() error {
	if err := c.conn.Close(); err != nil {
		return fmt.Errorf("close hub connection to %s: %w", c.target, err)
	}
	return nil
}

// Info returns the node's GetInfo: version, shard count and per-shard heights.
func (c *Client) Info(ctx context.Context) (*pb.GetInfoResponse, error) {
	r, err := c.raw.GetInfo(ctx, &pb.GetInfoRequest{})
	if err != nil {
		return nil, fmt.Errorf("get hub info from %s: %w", c.target, err)
	}
	return r, nil
}

// subscribeTypes is what Subscribe asks for when the caller names no types:
// every event a consumer of a data shard can receive. (The node treats an
// empty list as "none", which is never what a caller means.)
func subscribeTypes() []pb.HubEventType {
	return []pb.HubEventType{
		pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
		pb.HubEventType_HUB_EVENT_TYPE_PRUNE_MESSAGE,
		pb.HubEventType_HUB_EVENT_TYPE_REVOKE_MESSAGE,
		pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF,
		pb.HubEventType_HUB_EVENT_TYPE_MERGE_ON_CHAIN_EVENT,
		pb.HubEventType_HUB_EVENT_TYPE_MERGE_FAILURE,
		pb.HubEventType_HUB_EVENT_TYPE_BLOCK_CONFIRMED,
	}
}

// Subscribe opens the event stream of one data shard (1..num_shards). With
// fromID set the node first replays stored events with id >= *fromID, then
// continues live; with nil, live only. No types means all of them. The
// stream is not retried or bounded by the call timeout: when it fails, resume
// with a new Subscribe from the last id seen + 1.
func (c *Client) Subscribe(ctx context.Context, shard uint32, fromID *uint64, types ...pb.HubEventType) (grpc.ServerStreamingClient[pb.HubEvent], error) {
	if shard == 0 {
		return nil, errors.New("subscribe to shard 0: it is the block shard and has no events; data shards start at 1")
	}
	if len(types) == 0 {
		types = subscribeTypes()
	}
	req := &pb.SubscribeRequest{EventTypes: types, ShardIndex: &shard}
	if fromID != nil {
		from := *fromID
		req.FromId = &from
	}
	s, err := c.raw.Subscribe(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("subscribe to shard %d on %s: %w", shard, c.target, err)
	}
	return s, nil
}

func unaryHeaders(md []string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if len(md) > 0 {
			ctx = metadata.AppendToOutgoingContext(ctx, md...)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

func streamHeaders(md []string) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if len(md) > 0 {
			ctx = metadata.AppendToOutgoingContext(ctx, md...)
		}
		return streamer(ctx, desc, cc, method, opts...)
	}
}

// retrier applies the per-attempt deadline and retries transient failures of
// unary calls.
type retrier struct {
	attempts  int
	base, max time.Duration
	timeout   time.Duration
	log       *slog.Logger
}

func (r retrier) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	for attempt := 1; ; attempt++ {
		err := r.once(ctx, method, req, reply, cc, invoker, opts)
		if err == nil || attempt >= r.attempts || !retryable(err) {
			return err
		}
		delay := r.delay(attempt)
		r.log.LogAttrs(ctx, slog.LevelWarn, "hub call failed, retrying",
			slog.String("method", method), slog.Int("attempt", attempt), slog.Int("max_attempts", r.attempts),
			slog.String("code", status.Code(err).String()), slog.Duration("delay", delay), slog.String("error", err.Error()))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return status.Errorf(status.FromContextError(ctx.Err()).Code(),
				"%s: gave up after %d attempts: %v (last error: %v)", method, attempt, ctx.Err(), err)
		case <-t.C:
		}
	}
}

func (r retrier) once(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts []grpc.CallOption) error {
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// delay is the wait before attempt+1: base·2^(attempt-1) capped at max, of
// which the upper half is random so that clients that failed together do not
// retry together.
func (r retrier) delay(attempt int) time.Duration {
	d := r.base
	for i := 1; i < attempt && d < r.max; i++ {
		d *= 2
	}
	if d > r.max || d < 0 {
		d = r.max
	}
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// retryable reports whether a failed call may succeed if simply repeated.
// RESOURCE_EXHAUSTED is also what grpc-go reports for a response over the
// local receive limit; that one fails identically every time, so it is not
// retried.
func retryable(err error) bool {
	s := status.Convert(err)
	switch s.Code() {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		return !strings.Contains(s.Message(), "larger than max")
	}
	return false
}
