package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"

	"github.com/waypointhq/waypoint/backfill"
	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/config"
	"github.com/waypointhq/waypoint/embedding"
	"github.com/waypointhq/waypoint/hub"
	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/sink"
	"github.com/waypointhq/waypoint/telemetry"
)

// network maps hub.network to the wire enum.
func network(cfg *config.Config) pb.FarcasterNetwork {
	switch cfg.Hub.Network {
	case "testnet":
		return pb.FarcasterNetwork_FARCASTER_NETWORK_TESTNET
	case "devnet":
		return pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET
	}
	return pb.FarcasterNetwork_FARCASTER_NETWORK_MAINNET
}

// openBus connects to nats.url, or starts the embedded server in
// nats.store_dir, and makes sure the stream exists with the configured
// layout.
func openBus(ctx context.Context, cfg *config.Config, log *slog.Logger, name string) (*bus.Bus, error) {
	n := cfg.NATS
	storeDir := n.StoreDir
	if n.URL == "" && storeDir != "" && !filepath.IsAbs(storeDir) {
		if abs, err := filepath.Abs(storeDir); err == nil {
			storeDir = abs
		}
	}
	return bus.Open(ctx, bus.Options{
		URL:        n.URL,
		CredsFile:  n.CredsFile,
		NKeyFile:   n.NKeyFile,
		Token:      n.Token,
		User:       n.User,
		Password:   n.Password,
		Name:       name,
		StoreDir:   storeDir,
		Stream:     n.Stream,
		Partitions: n.Partitions,
		Replicas:   n.Replicas,
		Logger:     log,
	})
}

// openRedis connects to redis.url; it returns nil, nil when none is set.
func openRedis(ctx context.Context, cfg *config.Config) (*redis.Client, error) {
	if cfg.Redis.URL == "" {
		return nil, nil
	}
	opt, err := redis.ParseURL(cfg.Redis.URL)
	if err != nil {
		return nil, fmt.Errorf("redis: redis.url is not a valid Redis URL")
	}
	opt.PoolSize = cfg.Redis.PoolSize
	c := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redis: connect to %s: %w", opt.Addr, err)
	}
	return c, nil
}

// requireRedis is openRedis for commands that cannot work without Redis.
func requireRedis(ctx context.Context, cfg *config.Config) (*redis.Client, error) {
	if err := cfg.Require("redis.url"); err != nil {
		return nil, err
	}
	return openRedis(ctx, cfg)
}

// dialHub connects to hub.url with the configured headers. retries is the
// client's own retry budget: backfill passes 1 because its adaptive limiter
// must see the node's pushback.
func dialHub(ctx context.Context, cfg *config.Config, log *slog.Logger, retries int) (*hub.Client, error) {
	if err := cfg.Require("hub.url"); err != nil {
		return nil, err
	}
	opts := []hub.Option{hub.WithHeaders(cfg.Hub.Headers), hub.WithLogger(log), hub.WithMaxRecvMsgSize(cfg.Hub.MaxReceiveMB << 20)}
	if retries > 0 {
		opts = append(opts, hub.WithRetry(retries, hub.DefaultRetryBaseDelay, hub.DefaultRetryMaxDelay))
	}
	return hub.Dial(ctx, cfg.Hub.URL, opts...)
}

func validationMode(cfg *config.Config) message.Mode {
	m, _ := message.ParseMode(cfg.Sink.Validate) // checked when the config loaded
	return m
}

func writerOptions(cfg *config.Config, log *slog.Logger) []sink.WriterOption {
	return []sink.WriterOption{
		sink.WithEmbedder(embedding.NewLocal(embedding.DefaultDimensions)),
		sink.WithWriteMessages(cfg.Database.WriteMessages),
		sink.WithLogger(log),
	}
}

// writerFunc adapts the sink's writer to what backfill workers write to.
func writerFunc(w *sink.Writer) backfill.WriterFunc {
	return func(ctx context.Context, events []*pb.HubEvent) error {
		_, err := w.Write(ctx, events)
		return err
	}
}

func newQueue(cfg *config.Config, rdb *redis.Client, opts ...backfill.QueueOption) *backfill.Queue {
	return backfill.NewQueue(rdb, append([]backfill.QueueOption{backfill.WithPrefix(cfg.Redis.KeyPrefix + "backfill:")}, opts...)...)
}

// newWorker builds a backfill worker writing through w, with dead letters
// stored in the database like the live path's.
func newWorker(cfg *config.Config, log *slog.Logger, q *backfill.Queue, h *hub.Client, w *sink.Writer, store backfill.Store, tp trace.TracerProvider, m *telemetry.Metrics) *backfill.Worker {
	return backfill.NewWorker(q, h.Raw(), writerFunc(w), backfill.WorkerOptions{
		TracerProvider: tp,
		Metrics:        m,
		Concurrency:    cfg.Backfill.Concurrency,
		PageSize:       uint32(cfg.Backfill.PageSize),
		Validation:     validationMode(cfg),
		Network:        network(cfg),
		Store:          store,
		Logger:         log.With("component", "backfill"),
	})
}

// isTerminal reports whether f is a character device, i.e. a person is
// probably watching; progress output is drawn only then.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressLine draws a one-line progress bar of seen out of total.
func progressLine(seen, total int) string {
	const width = 30
	if total <= 0 {
		return fmt.Sprintf("\r%d FIDs read", seen)
	}
	done := min(width, seen*width/total)
	return fmt.Sprintf("\r[%s%s] %d/%d FIDs", strings.Repeat("#", done), strings.Repeat(".", width-done), seen, total)
}

// setMemoryLimit gives the process a soft memory limit of the sum of the
// stages' budgets in MiB, unless one of them is unlimited (0) or
// GOMEMLIMIT is set, which the runtime has applied already.
func setMemoryLimit(log *slog.Logger, mbs ...int) {
	if n := memoryLimit(os.Getenv("GOMEMLIMIT"), mbs...); n > 0 {
		debug.SetMemoryLimit(n)
		log.Debug("soft memory limit set", "bytes", n)
	}
}

// memoryLimit returns the limit setMemoryLimit sets, in bytes, or 0 for
// none.
func memoryLimit(env string, mbs ...int) int64 {
	if env != "" || len(mbs) == 0 {
		return 0
	}
	var sum int64
	for _, mb := range mbs {
		if mb <= 0 {
			return 0
		}
		sum += int64(mb) << 20
	}
	return sum
}
