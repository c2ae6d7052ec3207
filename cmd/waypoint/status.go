package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/waypointhq/waypoint/backfill"
	"github.com/waypointhq/waypoint/bus"
	"github.com/waypointhq/waypoint/config"
	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/sink"
)

type statusCmd struct {
	JSON       bool `name:"json" help:"Print JSON instead of text."`
	ConfigDump bool `name:"config-dump" help:"Print the effective configuration, secrets redacted, and exit."`
}

func (statusCmd) Help() string {
	return `Shows, on one screen, each shard's hub height against the ingest checkpoint, the stream's size and each sink partition's backlog, the live sink replicas, the backfill queue, row counts and dead letters. A part whose service is not configured or not reachable says "unavailable" and why; the rest is still shown. With --config-dump it prints the configuration that defaults, file, environment and flags add up to, with passwords, tokens and header values replaced by REDACTED; the text form is a valid config file.

Example:

    waypoint status --config-dump --json`
}

func (c *statusCmd) Run(ctx context.Context, cfg *config.Config, out io.Writer) error {
	if !c.ConfigDump {
		st := collectStatus(ctx, cfg)
		if c.JSON {
			b, err := json.MarshalIndent(st, "", "  ")
			if err != nil {
				return fmt.Errorf("encode status: %w", err)
			}
			_, err = fmt.Fprintf(out, "%s\n", b)
			return err
		}
		st.print(out)
		return nil
	}
	if c.JSON {
		// MarshalJSON redacts.
		b, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			return fmt.Errorf("encode configuration: %w", err)
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	_, err := io.WriteString(out, cfg.String())
	return err
}

// version and commit can be set at link time
// (-ldflags "-X main.version=v1.2.3 -X main.commit=abc123") by builds
// without VCS information, such as the Docker image; otherwise they come
// from the module's build information.
var (
	version = ""
	commit  = ""
)

type versionCmd struct{}

func (versionCmd) Help() string { return "Example:\n\n    waypoint version" }

func (*versionCmd) Run(out io.Writer) error {
	v, rev, built, modified := version, commit, "", false
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if rev == "" {
					rev = s.Value
				}
			case "vcs.time":
				built = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	if rev == "" {
		rev = "unknown"
	}
	if modified {
		rev += " (modified)"
	}
	if built != "" {
		rev += " " + built
	}
	_, err := fmt.Fprintf(out, "waypoint %s\ncommit %s\n%s %s/%s\n", v, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

// statusTimeout bounds each part of "waypoint status", so one unreachable
// service costs seconds, not the whole report.
const statusTimeout = 5 * time.Second

// pipelineStatus is the report of "waypoint status"; each part has either
// its data or Unavailable saying why not.
type pipelineStatus struct {
	Shards   shardsStatus   `json:"shards"`
	Stream   streamStatus   `json:"stream"`
	Sink     replicasStatus `json:"sink"`
	Backfill backfillPart   `json:"backfill"`
	Database databaseStatus `json:"database"`
}

type shardsStatus struct {
	Unavailable string        `json:"unavailable,omitempty"`
	Shards      []shardStatus `json:"shards,omitempty"`
}

type shardStatus struct {
	Shard     uint32 `json:"shard"`
	HubHeight uint64 `json:"hub_height"`
	// Checkpoint is the last event id ingest checkpointed, and its block;
	// LagBlocks is HubHeight minus that block.
	Checkpoint      *uint64 `json:"checkpoint_event_id,omitempty"`
	CheckpointBlock *uint64 `json:"checkpoint_block,omitempty"`
	LagBlocks       *int64  `json:"lag_blocks,omitempty"`
	Unavailable     string  `json:"unavailable,omitempty"`
}

type streamStatus struct {
	Unavailable string            `json:"unavailable,omitempty"`
	Name        string            `json:"name,omitempty"`
	Messages    uint64            `json:"messages"`
	Bytes       uint64            `json:"bytes"`
	Consumers   []consumerPending `json:"consumers,omitempty"`
}

type consumerPending struct {
	Name        string `json:"name"`
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Unavailable string `json:"unavailable,omitempty"`
}

type replicasStatus struct {
	Unavailable string   `json:"unavailable,omitempty"`
	Replicas    []string `json:"replicas,omitempty"`
}

type backfillPart struct {
	Unavailable string           `json:"unavailable,omitempty"`
	Queue       *backfill.Status `json:"queue,omitempty"`
}

type databaseStatus struct {
	Unavailable string `json:"unavailable,omitempty"`
	// Rows are the planner's live-row estimates per table
	// (pg_stat_user_tables), cheap at any size; DeadLetters is exact.
	Rows        map[string]int64 `json:"rows_estimate,omitempty"`
	DeadLetters *int64           `json:"dead_letters,omitempty"`
}

func collectStatus(ctx context.Context, cfg *config.Config) *pipelineStatus {
	st := &pipelineStatus{}
	quiet := slog.New(slog.DiscardHandler)

	heights, hubErr := hubHeights(ctx, cfg, quiet)
	b, busErr := statusBus(ctx, cfg, quiet)
	if b != nil {
		defer b.Close()
	}
	switch {
	case hubErr != nil && busErr != nil:
		st.Shards.Unavailable = fmt.Sprintf("hub: %v; nats: %v", hubErr, busErr)
	default:
		st.Shards.Shards = shardRows(ctx, cfg, heights, hubErr, b, busErr)
	}
	if busErr != nil {
		st.Stream.Unavailable = busErr.Error()
		st.Sink.Unavailable = busErr.Error()
	} else {
		st.Stream = streamPart(ctx, b)
		st.Sink = replicasPart(ctx, b)
	}
	st.Backfill = backfillStatusPart(ctx, cfg)
	st.Database = databasePart(ctx, cfg)
	return st
}

func hubHeights(ctx context.Context, cfg *config.Config, log *slog.Logger) (map[uint32]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	h, err := dialHub(ctx, cfg, log, 0)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	info, err := h.Raw().GetInfo(ctx, &pb.GetInfoRequest{})
	if err != nil {
		return nil, fmt.Errorf("GetInfo: %w", err)
	}
	out := map[uint32]uint64{}
	for _, si := range info.GetShardInfos() {
		if si.GetShardId() != 0 {
			out[si.GetShardId()] = si.GetMaxHeight()
		}
	}
	return out, nil
}

// statusBus connects to nats.url. Without one the stream lives in an
// embedded server inside the running waypoint process, which listens on
// no port; opening its store from a second process is not safe, so that
// part of the status is unavailable.
func statusBus(ctx context.Context, cfg *config.Config, log *slog.Logger) (*bus.Bus, error) {
	if cfg.NATS.URL == "" {
		return nil, errors.New("nats.url is not set: the embedded JetStream server is private to the waypoint process running it")
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	return openBus(ctx, cfg, log, "waypoint-status")
}

func shardRows(ctx context.Context, cfg *config.Config, heights map[uint32]uint64, hubErr error, b *bus.Bus, busErr error) []shardStatus {
	ids := slices.Collect(maps.Keys(heights))
	for _, s := range cfg.Hub.ShardIndices {
		if !slices.Contains(ids, s) {
			ids = append(ids, s)
		}
	}
	slices.Sort(ids)
	if len(ids) == 0 && hubErr != nil {
		return []shardStatus{{Unavailable: "hub: " + hubErr.Error()}}
	}
	var rows []shardStatus
	for _, id := range ids {
		r := shardStatus{Shard: id, HubHeight: heights[id]}
		var probs []string
		if hubErr != nil {
			probs = append(probs, "hub: "+hubErr.Error())
		}
		if busErr != nil {
			probs = append(probs, "nats: "+busErr.Error())
		} else {
			cctx, cancel := context.WithTimeout(ctx, statusTimeout)
			cp, ok, err := b.LoadCheckpoint(cctx, id)
			cancel()
			switch {
			case err != nil:
				probs = append(probs, "checkpoint: "+err.Error())
			case ok:
				blk := cp >> 14
				r.Checkpoint, r.CheckpointBlock = &cp, &blk
				if hubErr == nil {
					lag := int64(heights[id]) - int64(blk)
					r.LagBlocks = &lag
				}
			default:
				probs = append(probs, "no checkpoint yet")
			}
		}
		r.Unavailable = strings.Join(probs, "; ")
		rows = append(rows, r)
	}
	return rows
}

func streamPart(ctx context.Context, b *bus.Bus) streamStatus {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	st := streamStatus{Name: b.StreamName()}
	info, err := b.StreamInfo(ctx)
	if err != nil {
		return streamStatus{Unavailable: err.Error()}
	}
	st.Messages, st.Bytes = info.State.Msgs, info.State.Bytes
	for p := range b.Partitions() {
		name := bus.ConsumerName(sink.DefaultGroup, p)
		c := consumerPending{Name: name}
		cons, err := b.JetStream().Consumer(ctx, b.StreamName(), name)
		if err == nil {
			var ci *jetstream.ConsumerInfo
			if ci, err = cons.Info(ctx); err == nil {
				c.Pending, c.AckPending = ci.NumPending, ci.NumAckPending
			}
		}
		if err != nil {
			c.Unavailable = err.Error()
		}
		st.Consumers = append(st.Consumers, c)
	}
	return st
}

func replicasPart(ctx context.Context, b *bus.Bus) replicasStatus {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	kv, err := b.JetStream().KeyValue(ctx, sink.DefaultMemberBucket)
	if err != nil {
		return replicasStatus{Unavailable: fmt.Sprintf("member bucket %s: %v", sink.DefaultMemberBucket, err)}
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return replicasStatus{Unavailable: fmt.Sprintf("member bucket %s: %v", sink.DefaultMemberBucket, err)}
	}
	st := replicasStatus{Replicas: []string{}}
	for k := range keys.Keys() {
		if id, ok := strings.CutPrefix(k, sink.DefaultGroup+"."); ok {
			st.Replicas = append(st.Replicas, id)
		}
	}
	slices.Sort(st.Replicas)
	return st
}

func backfillStatusPart(ctx context.Context, cfg *config.Config) backfillPart {
	if cfg.Redis.URL == "" {
		return backfillPart{Unavailable: "redis.url is not set"}
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		return backfillPart{Unavailable: err.Error()}
	}
	defer rdb.Close()
	q, err := newQueue(cfg, rdb).Status(ctx)
	if err != nil {
		return backfillPart{Unavailable: err.Error()}
	}
	return backfillPart{Queue: &q}
}

func databasePart(ctx context.Context, cfg *config.Config) databaseStatus {
	if cfg.Database.URL == "" {
		return databaseStatus{Unavailable: "database.url is not set"}
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	pool, err := openDB(ctx, cfg)
	if err != nil {
		return databaseStatus{Unavailable: err.Error()}
	}
	defer pool.Close()
	st := databaseStatus{Rows: map[string]int64{}}
	rows, err := pool.Query(ctx, `SELECT relname::text, n_live_tup FROM pg_stat_user_tables WHERE schemaname = current_schema()`)
	if err != nil {
		return databaseStatus{Unavailable: fmt.Sprintf("row counts: %v", err)}
	}
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			rows.Close()
			return databaseStatus{Unavailable: fmt.Sprintf("row counts: %v", err)}
		}
		st.Rows[name] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return databaseStatus{Unavailable: fmt.Sprintf("row counts: %v", err)}
	}
	var dead int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters`).Scan(&dead); err != nil {
		return databaseStatus{Unavailable: fmt.Sprintf("dead letters: %v", err), Rows: st.Rows}
	}
	st.DeadLetters = &dead
	return st
}

func (st *pipelineStatus) print(w io.Writer) {
	fmt.Fprintln(w, "shards")
	if st.Shards.Unavailable != "" {
		fmt.Fprintf(w, "  unavailable: %s\n", st.Shards.Unavailable)
	}
	for _, s := range st.Shards.Shards {
		line := fmt.Sprintf("  shard %-3d hub height %-10d", s.Shard, s.HubHeight)
		if s.Checkpoint != nil {
			line += fmt.Sprintf(" checkpoint %d (block %d)", *s.Checkpoint, *s.CheckpointBlock)
		}
		if s.LagBlocks != nil {
			line += fmt.Sprintf(" lag %d blocks", *s.LagBlocks)
		}
		if s.Unavailable != "" {
			line += " unavailable: " + s.Unavailable
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "stream")
	if st.Stream.Unavailable != "" {
		fmt.Fprintf(w, "  unavailable: %s\n", st.Stream.Unavailable)
	} else {
		fmt.Fprintf(w, "  %s: %d messages, %d bytes\n", st.Stream.Name, st.Stream.Messages, st.Stream.Bytes)
		for _, c := range st.Stream.Consumers {
			if c.Unavailable != "" {
				fmt.Fprintf(w, "  %-10s unavailable: %s\n", c.Name, c.Unavailable)
				continue
			}
			fmt.Fprintf(w, "  %-10s pending %d, unacknowledged %d\n", c.Name, c.Pending, c.AckPending)
		}
	}
	fmt.Fprintln(w, "sink")
	if st.Sink.Unavailable != "" {
		fmt.Fprintf(w, "  unavailable: %s\n", st.Sink.Unavailable)
	} else {
		fmt.Fprintf(w, "  %d replica(s) live %s\n", len(st.Sink.Replicas), strings.Join(st.Sink.Replicas, " "))
	}
	fmt.Fprintln(w, "backfill")
	if st.Backfill.Unavailable != "" {
		fmt.Fprintf(w, "  unavailable: %s\n", st.Backfill.Unavailable)
	} else {
		fmt.Fprintf(w, "  %s\n", st.Backfill.Queue.String())
	}
	fmt.Fprintln(w, "database")
	if st.Database.Unavailable != "" {
		fmt.Fprintf(w, "  unavailable: %s\n", st.Database.Unavailable)
	}
	if len(st.Database.Rows) > 0 {
		names := slices.Sorted(maps.Keys(st.Database.Rows))
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("%s ≈%d", n, st.Database.Rows[n]))
		}
		fmt.Fprintf(w, "  rows: %s\n", strings.Join(parts, ", "))
	}
	if st.Database.DeadLetters != nil {
		fmt.Fprintf(w, "  dead letters: %d\n", *st.Database.DeadLetters)
	}
}
