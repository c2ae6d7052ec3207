package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/waypointhq/waypoint/backfill"
	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/config"
	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/embedding"
	"github.com/waypointhq/waypoint/ingest"
	"github.com/waypointhq/waypoint/migrations"
	"github.com/waypointhq/waypoint/sink"
)

// cli is the command-line model; kong builds the parser and the help text
// from it. Flags tagged `config:"key"` override that configuration key and
// must be pointers (see loadConfig).
type cli struct {
	globals

	Start    startCmd    `cmd:"" help:"Run ingest and sink in one process."`
	Ingest   ingestCmd   `cmd:"" help:"Follow every shard of the hub and publish its events to JetStream."`
	Sink     sinkCmd     `cmd:"" help:"Write events from JetStream and the backfill queue into Postgres."`
	DLQ      dlqCmd      `cmd:"" name:"dlq" hidden:"" help:"List or replay the messages the sink dead-lettered (the same as waypoint sink dlq)."`
	Backfill backfillCmd `cmd:"" help:"Queue and run imports of historical data from the hub."`
	Migrate  migrateCmd  `cmd:"" help:"Apply or inspect the database schema migrations."`
	Devnet   devnetCmd   `cmd:"" help:"Run a local Snapchain simulator that speaks the real gRPC protocol."`
	Status   statusCmd   `cmd:"" help:"Show the pipeline's progress, or the effective configuration."`
	Search   searchCmd   `cmd:"" help:"Search casts by meaning."`
	Trace    traceCmd    `cmd:"" help:"Follow one message from the hub through JetStream to Postgres."`
	Version  versionCmd  `cmd:"" help:"Print the version, commit and Go version."`
}

// globals are accepted before or after any command.
type globals struct {
	Config      string  `name:"config" placeholder:"FILE" help:"TOML configuration file (env WAYPOINT_CONFIG); see config/sample.toml."`
	DatabaseURL *string `name:"database-url" placeholder:"URL" config:"database.url" help:"Postgres URL (database.url)."`
	RedisURL    *string `name:"redis-url" placeholder:"URL" config:"redis.url" help:"Redis URL of the backfill queue (redis.url)."`
	HubURL      *string `name:"hub-url" placeholder:"ADDR" config:"hub.url" help:"Snapchain node: host:port, http://host:port or https://host:port (hub.url)."`
	NATSURL     *string `name:"nats-url" placeholder:"URL" config:"nats.url" help:"NATS server URLs; empty runs an embedded server (nats.url)."`
	LogLevel    *string `name:"log-level" placeholder:"LEVEL" config:"log.level" help:"debug, info, warn or error (log.level)."`
}

// sinkFlags are shared by the commands that run a sink.
type sinkFlags struct {
	Replicas  *int `name:"replicas" placeholder:"N" config:"sink.replicas" help:"Sink writers in this process (sink.replicas)."`
	BatchSize *int `name:"batch-size" placeholder:"N" config:"sink.batch_size" help:"Messages per COPY batch (sink.batch_size)."`
}

// ingestFlags are shared by the commands that run ingest.
type ingestFlags struct {
	FromID *string `name:"from-id" placeholder:"ID|live" config:"ingest.from_id" help:"Where a shard with no checkpoint starts: live or an event id (ingest.from_id)."`
}

type startCmd struct {
	ingestFlags
	sinkFlags
}

func (startCmd) Help() string {
	return `Runs the ingest and sink stages in one process, with an embedded NATS server unless nats.url is set: the simplest way to run Waypoint on one machine.

Example:

    waypoint start --hub-url 127.0.0.1:3383 --database-url postgres://waypoint@127.0.0.1/waypoint`
}

func (*startCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	setMemoryLimit(log, cfg.Ingest.MemoryLimitMB, cfg.Sink.MemoryLimitMB)
	b, err := openBus(ctx, cfg, log, "waypoint")
	if err != nil {
		return err
	}
	defer b.Close()
	o := newObserver(cfg, log)
	defer o.serve(ctx, "ingest", "sink", "backfill")()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return runIngest(gctx, cfg, log, b, o) })
	g.Go(func() error { return runSink(gctx, cfg, log, b, o) })
	return g.Wait()
}

type ingestCmd struct {
	ingestFlags
}

func (ingestCmd) Help() string {
	return `Subscribes to every data shard of the hub (or those in hub.shard_indices), resuming from the last event it published, and publishes each event to the JetStream stream under a subject partitioned by FID.

Example:

    waypoint ingest --hub-url snapchain:3383 --nats-url nats://127.0.0.1:4222
    waypoint ingest --from-id 0     # a first start replays the node's whole event log`
}

func (*ingestCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	setMemoryLimit(log, cfg.Ingest.MemoryLimitMB)
	b, err := openBus(ctx, cfg, log, "waypoint-ingest")
	if err != nil {
		return err
	}
	defer b.Close()
	o := newObserver(cfg, log)
	defer o.serve(ctx, "ingest")()
	return runIngest(ctx, cfg, log, b, o)
}

// runIngest follows the hub's shards into b. Gaps ingest cannot repair
// from the node's event log become priority reconcile jobs when Redis is
// configured; without it they are logged as errors.
func runIngest(ctx context.Context, cfg *config.Config, log *slog.Logger, b *bus.Bus, o *observer) error {
	h, err := dialHub(ctx, cfg, log, 0)
	if err != nil {
		return err
	}
	defer h.Close()
	tp, prop, err := o.providers(ctx, serviceIngest)
	if err != nil {
		return err
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	var gaps ingest.GapHandler
	if rdb != nil {
		defer rdb.Close()
		gaps = backfill.GapReconciler(newQueue(cfg, rdb, backfill.WithTracerProvider(tp)), h.Raw(), b,
			backfill.WithGapLogger(log), backfill.WithGapPageSize(uint32(cfg.Backfill.PageSize)), backfill.WithGapBatchSize(cfg.Backfill.BatchSize))
	}
	io := ingestOptions(cfg)
	io.Hub, io.Bus, io.GapHandler = h.Raw(), b, gaps
	io.Logger, io.TracerProvider, io.Propagator, io.Metrics = log.With("component", "ingest"), tp, prop, o.metrics
	in, err := ingest.New(io)
	if err != nil {
		return err
	}
	o.setIngester(in, h)
	return in.Run(ctx)
}

// sinkCmd runs the sink unless a subcommand (dlq) is named: its flags
// belong to the run, which is the default subcommand.
type sinkCmd struct {
	sinkFlags
	Run sinkRunCmd `cmd:"" default:"withargs" help:"Write events from JetStream and the backfill queue into Postgres (what waypoint sink alone does)."`
	DLQ dlqCmd     `cmd:"" name:"dlq" help:"List or replay the messages the sink dead-lettered."`
}

func (sinkCmd) Help() string {
	return `Drains the JetStream stream and the Redis backfill queue into Postgres in COPY batches. Several replicas, in one process or many, share the stream's partitions; messages that fail validation go to the dead-letter table, which "waypoint sink dlq" lists and replays.

Example:

    waypoint sink --replicas 2 --batch-size 1000
    waypoint sink dlq list --reason bad_hash`
}

type sinkRunCmd struct{}

func (sinkRunCmd) Help() string {
	return "The sink's flags go before or after \"run\", which may be left out.\n\nExample:\n\n    waypoint sink run --replicas 4"
}

func (*sinkRunCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	setMemoryLimit(log, cfg.Sink.MemoryLimitMB)
	o := newObserver(cfg, log)
	defer o.serve(ctx, "sink", "backfill")()
	return runSink(ctx, cfg, log, nil, o)
}

// ingestOptions maps the [ingest] section (and hub.shard_indices) onto
// ingest.Options; the caller adds the connections and observers.
func ingestOptions(cfg *config.Config) ingest.Options {
	o := ingest.Options{
		Shards:             cfg.Hub.ShardIndices,
		MaxInFlight:        cfg.Ingest.MaxInFlight,
		MaxInFlightBytes:   cfg.Ingest.MaxInFlightMB << 20,
		StallTimeout:       time.Duration(cfg.Ingest.StallTimeoutS) * time.Second,
		CheckpointInterval: time.Duration(cfg.Ingest.CheckpointIntervalMS) * time.Millisecond,
	}
	if id, err := strconv.ParseUint(cfg.Ingest.FromID, 10, 64); err == nil {
		o.FromID = &id // config validation admits only "live" otherwise
	}
	return o
}

// sinkOptions maps the [sink] section (and what it shares with other
// sections) onto sink.Options; the caller adds the connections.
func sinkOptions(cfg *config.Config) sink.Options {
	return sink.Options{
		DedupePrefix:     cfg.Redis.KeyPrefix + "sink:seen:",
		Replicas:         cfg.Sink.Replicas,
		BatchSize:        cfg.Sink.BatchSize,
		PullSize:         cfg.Sink.PullSize,
		BatchTimeout:     time.Duration(cfg.Sink.BatchTimeoutMS) * time.Millisecond,
		MaxBatchBytes:    cfg.Sink.MaxBatchMB << 20,
		MaxPulledBytes:   cfg.Sink.MaxPulledMB << 20,
		Validate:         validationMode(cfg),
		DedupeTTL:        time.Duration(cfg.Sink.DedupeTTLS) * time.Second,
		DedupeMaxEntries: cfg.Sink.DedupeMaxEntries,
		Network:          network(cfg),
	}
}

// dedupeCache returns the Redis client of the sink's dedupe cache: rdb, or
// none when sink.dedupe_max_entries is 0.
func dedupeCache(cfg *config.Config, rdb *redis.Client) *redis.Client {
	if cfg.Sink.DedupeMaxEntries == 0 {
		return nil
	}
	return rdb
}

// runSink drains the stream into Postgres with sink.replicas replicas and,
// when Redis is configured, works the backfill queue in the same process.
// b is an already open bus (waypoint start shares its embedded server), or
// nil to open one.
func runSink(ctx context.Context, cfg *config.Config, log *slog.Logger, b *bus.Bus, o *observer) error {
	pool, err := openMigratedDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	o.setPool(pool)
	tp, prop, err := o.providers(ctx, serviceSink)
	if err != nil {
		return err
	}
	if b == nil {
		if b, err = openBus(ctx, cfg, log, "waypoint-sink"); err != nil {
			return err
		}
		defer b.Close()
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	if rdb != nil {
		defer rdb.Close()
	} else {
		log.Warn("redis.url is not set: no dedupe cache and no backfill queue in this sink")
	}
	// The indexer gives way while the writers work through a backlog.
	load := sink.NewLoad()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		so := sinkOptions(cfg)
		so.Bus, so.Pool, so.Redis = b, pool, dedupeCache(cfg, rdb)
		so.WriterOptions = append(writerOptions(cfg, log), sink.WithMetrics(o.metrics, "sink"), sink.WithLoad(load))
		so.Logger = log.With("component", "sink")
		so.TracerProvider, so.Propagator, so.Metrics = tp, prop, o.metrics
		return sink.Run(gctx, so)
	})
	// Casts are embedded inline; putting their vectors into the HNSW index
	// is slower than the writer, so it runs beside it and catches up.
	g.Go(func() error {
		return sink.RunIndexer(gctx, pool, sink.IndexerOptions{Logger: log.With("component", "indexer"), Load: load})
	})
	if rdb != nil {
		g.Go(func() error { return runBackfillWorker(gctx, cfg, log, pool, rdb, o, load) })
	}
	return g.Wait()
}

type dlqCmd struct {
	List   dlqListCmd   `cmd:"" help:"List dead-lettered messages with their reasons."`
	Replay dlqReplayCmd `cmd:"" help:"Send dead-lettered messages through the sink again."`
}

func (dlqCmd) Help() string {
	return `The dead-letter queue holds the messages the sink could not write, each with the reason (bad hash, bad signature, wrong network, ...).

Example:

    waypoint sink dlq list --limit 20`
}

type dlqListCmd struct {
	Limit  int    `default:"50" help:"Show at most this many entries (default: ${default})."`
	Reason string `placeholder:"REASON" help:"Show only entries with this reason."`
}

func (dlqListCmd) Help() string {
	return "Example:\n\n    waypoint sink dlq list --reason bad_hash --limit 10"
}

func (c *dlqListCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `SELECT id, created_at, source, reason, detail, shard, event_id, message_hash
		FROM dead_letters WHERE $1 = '' OR reason = $1 ORDER BY id DESC LIMIT $2`, c.Reason, c.Limit)
	if err != nil {
		return fmt.Errorf("dlq list: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var (
			id          int64
			at          time.Time
			src, reason string
			detail      string
			shard       *int32
			eventID     *int64
			hash        []byte
		)
		if err := rows.Scan(&id, &at, &src, &reason, &detail, &shard, &eventID, &hash); err != nil {
			return fmt.Errorf("dlq list: %w", err)
		}
		where := src
		if shard != nil && eventID != nil {
			where = fmt.Sprintf("%s shard %d event %d", src, *shard, *eventID)
		}
		fmt.Fprintf(out, "%-6d %s  %-22s %-28s 0x%x  %s\n", id, at.UTC().Format(time.RFC3339), reason, where, hash, oneLine(detail, 80))
		n++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("dlq list: %w", err)
	}
	fmt.Fprintf(out, "%d dead letter(s)\n", n)
	return nil
}

type dlqReplayCmd struct {
	IDs []int64 `name:"id" sep:"," xor:"which" placeholder:"ID" help:"Replay these entries."`
	All bool    `xor:"which" help:"Replay every entry."`
}

func (c *dlqReplayCmd) Validate() error {
	if len(c.IDs) == 0 && !c.All {
		return errors.New("say which entries: --id or --all")
	}
	return nil
}

func (dlqReplayCmd) Help() string {
	return "Entries that fail again stay in the queue with their new reason.\n\nExample:\n\n    waypoint sink dlq replay --id 17,18"
}

func (c *dlqReplayCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	pool, err := openMigratedDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	w, err := sink.NewWriter(ctx, pool, writerOptions(cfg, log)...)
	if err != nil {
		return err
	}
	res, err := sink.ReplayDeadLetters(ctx, pool, w, sink.ReplayOptions{IDs: c.IDs, All: c.All, Validate: validationMode(cfg), Network: network(cfg)})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%d stored, %d failed again, %d not found\n", res.Stored, res.Failed, res.Missing)
	return nil
}

type backfillCmd struct {
	Enqueue     backfillEnqueueCmd     `cmd:"" help:"Queue FIDs for import."`
	Worker      backfillWorkerCmd      `cmd:"" help:"Import queued FIDs from the hub."`
	Status      backfillStatusCmd      `cmd:"" help:"Show the queue's progress."`
	RetryFailed backfillRetryFailedCmd `cmd:"" name:"retry-failed" help:"Queue the failed jobs again."`
}

func (backfillCmd) Help() string {
	return `A backfill imports what the hub holds for a set of FIDs: jobs of backfill.batch_size FIDs wait in a Redis queue, workers fetch each FID's messages with the hub's paged GetAll*ByFid calls, and the sink writes them.

Example:

    waypoint backfill enqueue --max-fid 10000 && waypoint backfill worker --concurrency 50`
}

type backfillEnqueueCmd struct {
	FIDs         []uint64 `name:"fids" sep:"," xor:"target" placeholder:"FID" help:"Import these FIDs."`
	MaxFID       uint64   `name:"max-fid" xor:"target" placeholder:"N" help:"Import FIDs 1 to N."`
	All          bool     `xor:"target" help:"Import every FID the hub has (GetFids on every shard)."`
	BatchSize    *int     `name:"batch-size" placeholder:"N" config:"backfill.batch_size" help:"FIDs per job (backfill.batch_size)."`
	UserDataOnly bool     `name:"user-data-only" xor:"types" help:"Import only user data (profiles)."`
	Types        []string `sep:"," xor:"types" placeholder:"TYPE" enum:"casts,reactions,links,verifications,user_data,username_proofs,onchain_events" help:"Import only these kinds of data: casts, reactions, links, verifications, user_data, username_proofs, onchain_events."`
	Priority     bool     `help:"Queue ahead of the jobs already waiting."`
	Reconcile    bool     `help:"Compare with what the database holds and repair the differences."`
}

// Validate asks for one of the xor group: kong's own "required" on an xor
// group would print all three in the usage line as if each were needed.
func (c *backfillEnqueueCmd) Validate() error {
	if len(c.FIDs) == 0 && c.MaxFID == 0 && !c.All {
		return errors.New("say which FIDs: --fids, --max-fid or --all")
	}
	return nil
}

func (backfillEnqueueCmd) Help() string {
	return "Example:\n\n    waypoint backfill enqueue --fids 1,2,3 --types casts,reactions --priority"
}

func (c *backfillEnqueueCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	if err := cfg.Require("redis.url"); err != nil {
		return err
	}
	types, err := backfill.ParseDataTypes(strings.Join(c.Types, ","))
	if err != nil {
		return usageError{err.Error()}
	}
	kind := backfill.KindBackfill
	switch {
	case c.UserDataOnly:
		kind, types = backfill.KindUserData, []backfill.DataType{backfill.UserData}
	case c.Reconcile:
		kind = backfill.KindReconcile
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	var (
		src   = backfill.FIDList(c.FIDs...)
		total = len(c.FIDs)
	)
	switch {
	case c.MaxFID > 0:
		src, total = backfill.FIDRange(1, c.MaxFID), int(c.MaxFID)
	case c.All:
		h, err := dialHub(ctx, cfg, log, 0)
		if err != nil {
			return err
		}
		defer h.Close()
		if total, err = backfill.HubFIDCount(ctx, h.Raw()); err != nil {
			return err
		}
		src = backfill.HubFIDs(ctx, h.Raw(), uint32(cfg.Backfill.PageSize))
	}
	req := backfill.EnqueueRequest{Kind: kind, Types: types, Priority: c.Priority, BatchSize: cfg.Backfill.BatchSize, Total: total}
	if isTerminal(os.Stderr) {
		req.Progress = func(p backfill.EnqueueProgress) { fmt.Fprint(os.Stderr, progressLine(p.Seen, total)) }
		defer fmt.Fprintln(os.Stderr)
	}
	o := newObserver(cfg, log)
	defer o.shutdown()
	tp, _, err := o.providers(ctx, serviceBackfill)
	if err != nil {
		return err
	}
	res, err := newQueue(cfg, rdb, backfill.WithTracerProvider(tp)).Enqueue(ctx, src, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "queued %d jobs with %d FIDs (%s); %d FIDs already pending", res.Jobs, res.FIDs, kind, res.Skipped)
	if res.Promoted > 0 {
		fmt.Fprintf(out, ", %d moved to the front", res.Promoted)
	}
	fmt.Fprintln(out)
	return nil
}

type backfillWorkerCmd struct {
	Concurrency *int `placeholder:"N" config:"backfill.concurrency" help:"FIDs imported at the same time (backfill.concurrency)."`
}

func (backfillWorkerCmd) Help() string {
	return "Runs until interrupted; several workers can share one queue.\n\nExample:\n\n    waypoint backfill worker --concurrency 20"
}

func (*backfillWorkerCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	if err := cfg.Require("redis.url"); err != nil {
		return err
	}
	pool, err := openMigratedDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	o := newObserver(cfg, log)
	defer o.serve(ctx, "backfill")()
	return runBackfillWorker(ctx, cfg, log, pool, rdb, o, nil)
}

// runBackfillWorker drains the backfill queue; its writes count in load
// when that is not nil.
func runBackfillWorker(ctx context.Context, cfg *config.Config, log *slog.Logger, pool *pgxpool.Pool, rdb *redis.Client, o *observer, load *sink.Load) error {
	o.setPool(pool)
	h, err := dialHub(ctx, cfg, log, 1)
	if err != nil {
		return err
	}
	defer h.Close()
	w, err := sink.NewWriter(ctx, pool, append(writerOptions(cfg, log), sink.WithMetrics(o.metrics, "backfill"), sink.WithLoad(load))...)
	if err != nil {
		return err
	}
	tp, _, err := o.providers(ctx, serviceBackfill)
	if err != nil {
		return err
	}
	q := newQueue(cfg, rdb)
	qctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go o.watchQueue(qctx, q)
	err = newWorker(cfg, log, q, h, w, backfill.NewPostgresStore(pool), tp, o.metrics).Run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

type backfillStatusCmd struct {
	Watch bool `help:"Refresh until interrupted."`
}

func (backfillStatusCmd) Help() string {
	return "Prints queued, running, done and failed job counts.\n\nExample:\n\n    waypoint backfill status --watch"
}

func (c *backfillStatusCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	rdb, err := requireRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	q := newQueue(cfg, rdb)
	for {
		st, err := q.Status(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, st.String())
		if !c.Watch {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}

type backfillRetryFailedCmd struct{}

func (backfillRetryFailedCmd) Help() string {
	return "Example:\n\n    waypoint backfill retry-failed"
}

func (*backfillRetryFailedCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	rdb, err := requireRedis(ctx, cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	n, err := newQueue(cfg, rdb).RetryFailed(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "re-queued %d failed job(s)\n", n)
	return nil
}

type migrateCmd struct {
	Up     migrateUpCmd     `cmd:"" help:"Apply every pending migration."`
	Status migrateStatusCmd `cmd:"" help:"List applied and pending migrations."`
}

func (migrateCmd) Help() string {
	return "Example:\n\n    waypoint migrate up --database-url postgres://waypoint@127.0.0.1/waypoint"
}

type migrateUpCmd struct{}

func (migrateUpCmd) Help() string { return "Example:\n\n    waypoint migrate up" }

func (*migrateUpCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	before, err := migrations.Status(ctx, pool)
	if err != nil {
		return err
	}
	if err := migrations.Up(ctx, pool); err != nil {
		return err
	}
	applied := 0
	for _, m := range before {
		if m.Pending() {
			applied++
			fmt.Fprintf(out, "applied %04d %s\n", m.Version, m.Name)
		}
	}
	fmt.Fprintf(out, "%d migration(s) applied, schema is current\n", applied)
	return nil
}

type migrateStatusCmd struct{}

func (migrateStatusCmd) Help() string { return "Example:\n\n    waypoint migrate status" }

func (*migrateStatusCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	ms, err := migrations.Status(ctx, pool)
	if err != nil {
		return err
	}
	for _, m := range ms {
		state := "pending"
		if !m.Pending() {
			state = "applied " + m.AppliedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(out, "%04d  %-32s %s\n", m.Version, m.Name, state)
	}
	return nil
}

type devnetCmd struct {
	Listen        string        `default:"127.0.0.1:3383" placeholder:"ADDR" help:"Address to serve HubService on (default: ${default})."`
	Shards        int           `default:"2" placeholder:"N" help:"Number of data shards (default: ${default})."`
	Seed          uint64        `default:"1" placeholder:"N" help:"Seed of the generated data; the same seed gives the same network, byte for byte (default: ${default})."`
	FIDs          int           `name:"fids" default:"100" placeholder:"N" help:"Number of simulated users, fids 1..N; 0 generates nothing (default: ${default})."`
	Rate          float64       `default:"100" placeholder:"PER-SECOND" help:"Messages, on-chain events and fname proofs submitted per second after the preload (default: ${default})."`
	Duration      time.Duration `default:"0s" help:"How long the live workload runs after the preload; 0 runs until interrupted."`
	Preload       int           `default:"0" placeholder:"N" help:"Events generated before serving, so Subscribe with from_id replays a backlog (default: ${default})."`
	BlockInterval time.Duration `default:"1s" help:"Time between blocks on each shard; 0 cuts blocks as fast as events come (default: ${default})."`
	Retention     time.Duration `default:"72h" help:"How long events are kept for replay; older from_ids start at the oldest kept event (default: ${default})."`
	DumpState     string        `placeholder:"FILE" help:"On exit, write the expected database state (JSON lines) to FILE."`

	DropEvery        int           `placeholder:"N" help:"Fault: hide every Nth live event of each shard (a gap BLOCK_CONFIRMED reveals)."`
	UnavailableEvery int           `placeholder:"N" help:"Fault: end each Subscribe stream with UNAVAILABLE after N events."`
	StallEvery       time.Duration `help:"Fault: stop every Subscribe stream once per this interval (with --stall-for)."`
	StallFor         time.Duration `help:"Fault: how long each stall lasts."`
}

func (devnetCmd) Help() string {
	return `Serves a simulated Snapchain network on one gRPC port: users, signers, casts, reactions, links, verifications and user data, signed and hashed like the real network's, produced in blocks at a steady rate. Point "waypoint ingest" and "waypoint backfill" at it with --hub-url.

Example:

    waypoint devnet --fids 500 --preload 20000 --rate 200 --dump-state /tmp/devnet.jsonl &
    waypoint ingest --hub-url 127.0.0.1:3383`
}

func (c *devnetCmd) Run(ctx context.Context, log *slog.Logger) error {
	lis, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("devnet: listen on %s: %w", c.Listen, err)
	}
	log.Info("devnet serving HubService", "addr", lis.Addr().String(), "shards", c.Shards, "fids", c.FIDs, "preload", c.Preload)
	return devnet.Run(ctx, devnet.Options{
		Shards:        uint32(c.Shards),
		Seed:          c.Seed,
		FIDs:          c.FIDs,
		Rate:          c.Rate,
		Duration:      c.Duration,
		Preload:       c.Preload,
		BlockInterval: c.BlockInterval,
		Retention:     c.Retention,
		DumpState:     c.DumpState,
		Faults: devnet.Faults{
			DropEvery:        c.DropEvery,
			UnavailableEvery: c.UnavailableEvery,
			StallEvery:       c.StallEvery,
			StallFor:         c.StallFor,
		},
		Logger: log,
	}, lis)
}

type searchCmd struct {
	Query string `arg:"" help:"Text to search for."`
	Limit int    `default:"10" placeholder:"N" help:"Show at most this many casts (default: ${default})."`
}

func (searchCmd) Help() string {
	return "Example:\n\n    waypoint search \"rust async runtimes\" --limit 5"
}

func (c *searchCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	res, err := sink.Search(ctx, pool, embedding.NewLocal(embedding.DefaultDimensions), c.Query, c.Limit)
	if err != nil {
		return err
	}
	for _, r := range res {
		fmt.Fprintf(out, "%.3f  fid %-8d 0x%x  %s\n", r.Distance, r.Fid, r.Hash, oneLine(r.Text, 100))
	}
	if len(res) == 0 {
		fmt.Fprintln(out, "no casts found")
	}
	return nil
}

// oneLine shortens s to at most n runes on one line for tabular output.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

type traceCmd struct {
	Hash   messageHash `arg:"" help:"Message hash: 40 hex digits, with or without 0x."`
	Jaeger string      `default:"http://127.0.0.1:16686" placeholder:"URL" help:"Jaeger UI and query address (default: ${default})."`
	JSON   bool        `name:"json" help:"Print JSON instead of text."`
}

func (traceCmd) Help() string {
	return "Says where a message is in Postgres (messages, dead_letters) and where its trace is in Jaeger: traces are sampled, so a message may have none unless forced with WAYPOINT_TRACE_FORCE or tracing.force.\n\nExample:\n\n    waypoint trace 0x8f3a54f0b7c8e2d1a9f06b3c4d5e6f708192a3b4"
}

func (c *traceCmd) Run(ctx context.Context, cfg *config.Config, log *slog.Logger, out io.Writer) error {
	hash := fmt.Sprintf("0x%x", []byte(c.Hash))
	r := traceReport{Hash: hash, Jaeger: jaegerLookup{SearchURL: jaegerTagQuery(c.Jaeger, "/search", hash)}}
	if pool, err := openDB(ctx, cfg); err != nil {
		r.DBError = err.Error()
	} else {
		if err := lookupMessage(ctx, pool, c.Hash, &r); err != nil {
			r.DBError = err.Error()
		}
		pool.Close()
	}
	ids, err := lookupJaeger(ctx, c.Jaeger, hash)
	if err != nil {
		r.Jaeger.Error = err.Error()
	}
	r.Jaeger.TraceIDs = ids
	if c.JSON {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return fmt.Errorf("encode trace report: %w", err)
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	r.print(out, cfg.Tracing.SamplerRatio)
	return nil
}

// messageHash is a 20-byte BLAKE3 message hash given in hex.
type messageHash []byte

func (h *messageHash) Decode(dctx *kong.DecodeContext) error {
	var s string
	if err := dctx.Scan.PopValueInto("hash", &s); err != nil {
		return err
	}
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"))
	if err != nil || len(b) != 20 {
		return fmt.Errorf("%q is not a message hash: want 40 hex digits", s)
	}
	*h = b
	return nil
}
