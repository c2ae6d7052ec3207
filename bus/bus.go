// Package bus owns every JetStream concern of Waypoint: the connection to
// NATS (or an embedded server when no URL is configured), the events
// stream and its subjects, message headers, the per-partition consumers the
// sink reads through, and the per-shard ingest checkpoints.
//
// # Stream
//
// One stream (WAYPOINT_EVENTS by default) holds every event, on file
// storage, with LimitsPolicy retention bounded by MaxAge and MaxBytes and
// DiscardNew: when the stream is full the server rejects new publishes
// instead of deleting the oldest messages, which may not have been
// consumed yet. Ingest sees the rejection, stops advancing its checkpoint
// and retries with backoff, so a full stream stalls the pipeline visibly
// (and the Snapchain node keeps the events for three days) rather than
// losing data silently. MaxAge still expires messages, so it must exceed
// the longest sink outage to be tolerated (7 days by default).
//
// The duplicate window does not need to cover restarts: before publishing
// from a checkpoint, ingest reads the stream back from the sequence saved
// with it (see StoredAfter) and skips the events already stored. The window
// only covers publishes still on their way to the server when that read
// happens: those of a crashed client that an external server has yet to
// process, and those of a pipeline abandoned after a failed publish. The
// server indexes every message id inside the window (about 100 bytes each),
// so the window times the event rate is server memory: a 2-hour window
// held a whole 1M-event backlog replay, about 100 MB of heap, in an
// embedded server's process. Hence the defaults: 2 minutes with an
// external server (the server's own default), 5 seconds embedded, where a
// crash of the process takes the server and everything in flight with it.
//
// # Partitions
//
// Events are published to waypoint.events.<partition>.<fid> (see
// Partition); the partition count is fixed when the stream is created and
// recorded in its metadata under MetadataPartitions. Opening a stream with
// a different count is refused: moving FIDs between partitions would break
// per-FID ordering for consumers already positioned in the stream.
//
// # Checkpoints
//
// A shard's checkpoint is the highest event id below which every publish
// was acknowledged by the server. It lives in a JetStream key-value bucket
// (waypoint_checkpoints), key "<stream>.shard.<n>", with a stream sequence
// below which no newer event of the shard is stored (see Position): the
// stream is partitioned by FID, so finding a shard's last event without it
// would mean scanning the tail of every partition. Ingest saves checkpoints
// periodically and on shutdown, so after a crash the checkpoint lags by at
// most one save interval, and the read back from the saved sequence covers
// about that much of the stream.
package bus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for Options fields left zero.
const (
	DefaultStream           = "WAYPOINT_EVENTS"
	DefaultCheckpointBucket = "waypoint_checkpoints"
	DefaultStoreDir         = "data/nats"
	DefaultMaxAge           = 7 * 24 * time.Hour
	DefaultDuplicateWindow  = 2 * time.Minute
	// EmbeddedDuplicateWindow is the default with the embedded server.
	EmbeddedDuplicateWindow = 5 * time.Second
	DefaultPublishTimeout   = 30 * time.Second
	DefaultMaxPending       = 1 << 16
	// DefaultSetupAttemptTimeout bounds one attempt at creating or
	// checking the stream or the bucket in Open.
	DefaultSetupAttemptTimeout = 5 * time.Second
)

// MetadataPartitions is the stream metadata key holding the partition
// count.
const MetadataPartitions = "waypoint.partitions"

// Options configures Open. Zero values take the defaults above.
type Options struct {
	// URL lists NATS server URLs, comma-separated. Empty starts an
	// embedded server (see StoreDir and ListenAddr) and connects to it
	// in-process.
	URL string
	// Credentials for an external server; at most one of CredsFile,
	// NKeyFile (a seed file), Token and User/Password.
	CredsFile string
	NKeyFile  string
	Token     string
	User      string
	Password  string
	// TLS, when set, is used for the connection; TLSCAFile, TLSCertFile
	// and TLSKeyFile add a root CA and a client certificate from files.
	TLS         *tls.Config
	TLSCAFile   string
	TLSCertFile string
	TLSKeyFile  string
	// Name is the client connection name shown by the server.
	Name string
	// ConnectTimeout bounds the initial connection (default 10s).
	ConnectTimeout time.Duration
	// ConnOptions are appended to the connection options (custom
	// dialers, handlers).
	ConnOptions []nats.Option

	// StoreDir is the embedded server's data directory.
	StoreDir string
	// ListenAddr, when set (host:port, port 0 picks one), makes the
	// embedded server accept TCP clients as well; by default it accepts
	// only the in-process connection. It has no authentication: bind it
	// to a loopback or otherwise private address.
	ListenAddr string

	// Stream is the stream's name.
	Stream string
	// Partitions is the partition count of a new stream; an existing
	// stream must have been created with the same count.
	Partitions int
	// Replicas is the stream's replica count (1 locally, 3 in a cluster).
	Replicas int
	// MaxAge expires messages older than this; negative keeps them
	// forever.
	MaxAge time.Duration
	// MaxBytes bounds the stream's size; zero or negative leaves it to the
	// server's storage limit. Either way publishes fail when it is reached.
	MaxBytes int64
	// DuplicateWindow is how long the server remembers Nats-Msg-Id values
	// (default DefaultDuplicateWindow, EmbeddedDuplicateWindow without a
	// URL).
	DuplicateWindow time.Duration
	// CheckpointBucket is the key-value bucket holding ingest checkpoints.
	CheckpointBucket string

	// PublishTimeout fails an asynchronous publish whose ack has not
	// arrived in time, so a lost connection cannot leave it pending.
	PublishTimeout time.Duration
	// MaxPending bounds asynchronous publishes awaiting acks on the
	// connection; callers keep their own, lower, bounds.
	MaxPending int
	// SetupAttemptTimeout bounds each attempt Open makes at creating or
	// checking the stream and the bucket; a request without a reply in
	// that time is sent again (default DefaultSetupAttemptTimeout).
	SetupAttemptTimeout time.Duration

	Logger *slog.Logger
}

// Bus is an open connection to JetStream with the events stream and the
// checkpoint bucket in place.
type Bus struct {
	opts   Options
	log    *slog.Logger
	srv    *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	kv     jetstream.KeyValue
}

// Open connects to NATS (starting the embedded server when opts.URL is
// empty), then creates or checks the events stream and the checkpoint
// bucket. Errors a cluster gives while it elects its leaders, and those of
// a race with other processes opening the same stream, are retried until
// ctx is done; a stream whose layout conflicts with opts fails at once.
func Open(ctx context.Context, opts Options) (*Bus, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Bus{opts: opts, log: opts.Logger}
	if opts.URL == "" {
		if b.srv, err = startEmbedded(opts); err != nil {
			return nil, err
		}
	}
	if err := b.connect(); err != nil {
		b.shutdownServer()
		return nil, err
	}
	if err := b.setup(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func (o Options) withDefaults() (Options, error) {
	if o.Stream == "" {
		o.Stream = DefaultStream
	}
	if strings.ContainsAny(o.Stream, ". *>\t\n/\\") {
		return o, fmt.Errorf("bus: stream name %q may not contain '.', '*', '>', '/', '\\' or whitespace", o.Stream)
	}
	if o.Partitions == 0 {
		o.Partitions = DefaultPartitions
	}
	if o.Partitions < 1 || o.Partitions > MaxPartitions {
		return o, fmt.Errorf("bus: partitions must be between 1 and %d, got %d", MaxPartitions, o.Partitions)
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		return o, fmt.Errorf("bus: replicas must be between 1 and 5, got %d", o.Replicas)
	}
	switch {
	case o.MaxAge == 0:
		o.MaxAge = DefaultMaxAge
	case o.MaxAge < 0:
		o.MaxAge = 0
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = -1
	}
	if o.DuplicateWindow == 0 {
		o.DuplicateWindow = DefaultDuplicateWindow
		if o.URL == "" {
			o.DuplicateWindow = EmbeddedDuplicateWindow
		}
	}
	if o.DuplicateWindow < 0 {
		return o, fmt.Errorf("bus: duplicate window must be positive, got %s", o.DuplicateWindow)
	}
	if o.MaxAge > 0 && o.DuplicateWindow > o.MaxAge {
		return o, fmt.Errorf("bus: duplicate window %s exceeds max age %s", o.DuplicateWindow, o.MaxAge)
	}
	if o.CheckpointBucket == "" {
		o.CheckpointBucket = DefaultCheckpointBucket
	}
	if o.StoreDir == "" {
		o.StoreDir = DefaultStoreDir
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.SetupAttemptTimeout <= 0 {
		o.SetupAttemptTimeout = DefaultSetupAttemptTimeout
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.Name == "" {
		o.Name = "waypoint"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	n := 0
	for _, set := range []bool{o.CredsFile != "", o.NKeyFile != "", o.Token != "", o.User != "" || o.Password != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return o, errors.New("bus: set at most one of creds file, nkey file, token and user/password")
	}
	if o.URL == "" && n > 0 {
		return o, errors.New("bus: credentials are for an external server, but no NATS URL is set (the embedded server needs none)")
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		return o, errors.New("bus: a TLS client certificate needs both a cert file and a key file")
	}
	return o, nil
}

func (b *Bus) connect() error {
	o := b.opts
	log := b.log
	nopts := []nats.Option{
		nats.Name(o.Name),
		nats.Timeout(o.ConnectTimeout),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "server", redactURL(nc.ConnectedUrl()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	target := redactURL(o.URL)
	if b.srv != nil {
		target = "embedded server"
		nopts = append(nopts, nats.InProcessServer(b.srv))
	} else {
		// A long-running pipeline rides out server restarts and
		// elections instead of exiting.
		nopts = append(nopts, nats.MaxReconnects(-1), nats.ReconnectWait(time.Second))
		switch {
		case o.CredsFile != "":
			nopts = append(nopts, nats.UserCredentials(o.CredsFile))
		case o.NKeyFile != "":
			opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
			if err != nil {
				return fmt.Errorf("bus: read nkey seed file %s: %w", o.NKeyFile, err)
			}
			nopts = append(nopts, opt)
		case o.Token != "":
			nopts = append(nopts, nats.Token(o.Token))
		case o.User != "" || o.Password != "":
			nopts = append(nopts, nats.UserInfo(o.User, o.Password))
		}
		if o.TLS != nil {
			nopts = append(nopts, nats.Secure(o.TLS))
		}
		if o.TLSCAFile != "" {
			nopts = append(nopts, nats.RootCAs(o.TLSCAFile))
		}
		if o.TLSCertFile != "" {
			nopts = append(nopts, nats.ClientCert(o.TLSCertFile, o.TLSKeyFile))
		}
	}
	nopts = append(nopts, o.ConnOptions...)
	nc, err := nats.Connect(o.URL, nopts...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
			return fmt.Errorf("bus: connect to %s: the server rejected the credentials (check the creds file, nkey, token or user/password): %w", target, err)
		}
		return fmt.Errorf("bus: connect to %s: %w", target, err)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(o.MaxPending),
		jetstream.WithPublishAsyncTimeout(o.PublishTimeout),
	)
	if err != nil {
		nc.Close()
		return fmt.Errorf("bus: jetstream: %w", err)
	}
	b.nc, b.js = nc, js
	return nil
}

func (b *Bus) streamConfig() jetstream.StreamConfig {
	o := b.opts
	return jetstream.StreamConfig{
		Name:        o.Stream,
		Description: "Waypoint: Snapchain events, one subject per FID, partitioned",
		Subjects:    []string{EventSubjectPrefix + ">", BlockSubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxAge:      o.MaxAge,
		MaxBytes:    o.MaxBytes,
		MaxMsgs:     -1,
		Duplicates:  o.DuplicateWindow,
		AllowDirect: true,
		Metadata:    map[string]string{MetadataPartitions: strconv.Itoa(o.Partitions)},
	}
}

func checkPartitions(stream string, meta map[string]string, want int) error {
	v, ok := meta[MetadataPartitions]
	if !ok {
		return fmt.Errorf("bus: stream %s exists but has no %s metadata, so its partition count is unknown: refusing to publish into it (delete it or choose another stream name)", stream, MetadataPartitions)
	}
	have, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("bus: stream %s: metadata %s=%q is not a number", stream, MetadataPartitions, v)
	}
	if have != want {
		return fmt.Errorf("bus: stream %s was created with %d partitions but %d are configured; the partition count is fixed per stream: configure %d partitions or use a new stream", stream, have, want, have)
	}
	return nil
}

// Conn returns the NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream returns the JetStream handle the bus was opened with.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Stream returns the events stream.
func (b *Bus) Stream() jetstream.Stream { return b.stream }

// StreamName returns the events stream's name.
func (b *Bus) StreamName() string { return b.opts.Stream }

// Partitions returns the stream's partition count.
func (b *Bus) Partitions() int { return b.opts.Partitions }

// MaxPending returns the connection's bound on asynchronous publishes
// awaiting acks.
func (b *Bus) MaxPending() int { return b.opts.MaxPending }

// ClientURL returns the embedded server's TCP client URL, or "" when the
// bus is connected to an external server or the embedded server does not
// listen.
func (b *Bus) ClientURL() string {
	if b.srv == nil || b.opts.ListenAddr == "" {
		return ""
	}
	return b.srv.ClientURL()
}

// StreamInfo returns the events stream's current configuration and state.
func (b *Bus) StreamInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	info, err := b.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("bus: stream %s info: %w", b.opts.Stream, err)
	}
	return info, nil
}

// PublishAsync publishes msg without waiting for the server's ack; the
// future resolves with the ack, the server's rejection, or a timeout after
// PublishTimeout.
func (b *Bus) PublishAsync(msg *nats.Msg) (jetstream.PubAckFuture, error) {
	f, err := b.js.PublishMsgAsync(msg)
	if err != nil {
		return nil, fmt.Errorf("bus: publish %s: %w", msg.Subject, err)
	}
	return f, nil
}

// Close flushes and closes the connection and stops the embedded server.
func (b *Bus) Close() error {
	var err error
	if b.nc != nil && !b.nc.IsClosed() {
		if ferr := b.nc.FlushTimeout(5 * time.Second); ferr != nil && !errors.Is(ferr, nats.ErrConnectionClosed) {
			err = fmt.Errorf("bus: flush: %w", ferr)
		}
		b.nc.Close()
	}
	b.shutdownServer()
	return err
}

func (b *Bus) shutdownServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if u, err := url.Parse(p); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		} else {
			parts[i] = p
		}
	}
	return strings.Join(parts, ",")
}
