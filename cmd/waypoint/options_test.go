package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/waypointhq/waypoint/config"
	"github.com/waypointhq/waypoint/message"
)

// TestSinkOptionsFromConfig checks that every [sink] key reaches the
// sink's options, from the environment as an operator sets them.
func TestSinkOptionsFromConfig(t *testing.T) {
	cfg := loadEnv(t,
		"WAYPOINT_SINK__REPLICAS=3",
		"WAYPOINT_SINK__BATCH_SIZE=250",
		"WAYPOINT_SINK__BATCH_TIMEOUT_MS=40",
		"WAYPOINT_SINK__MAX_BATCH_MB=5",
		"WAYPOINT_SINK__MAX_PULLED_MB=7",
		"WAYPOINT_SINK__PULL_SIZE=125",
		"WAYPOINT_SINK__VALIDATE=full",
		"WAYPOINT_SINK__DEDUPE_TTL_S=90",
		"WAYPOINT_SINK__DEDUPE_MAX_ENTRIES=5000",
		"WAYPOINT_REDIS__KEY_PREFIX=tenant:",
	)
	o := sinkOptions(cfg)
	checkOptions(t, "sink", []optionCheck{
		{"replicas", o.Replicas, 3},
		{"batch_size", o.BatchSize, 250},
		{"pull_size", o.PullSize, 125},
		{"batch_timeout_ms", o.BatchTimeout, 40 * time.Millisecond},
		{"max_batch_mb", o.MaxBatchBytes, 5 << 20},
		{"max_pulled_mb", o.MaxPulledBytes, 7 << 20},
		{"validate", o.Validate, message.CheckFull},
		{"dedupe_ttl_s", o.DedupeTTL, 90 * time.Second},
		{"dedupe_max_entries", o.DedupeMaxEntries, 5000},
		{"redis.key_prefix", o.DedupePrefix, "tenant:sink:seen:"},
	})
}

// TestDedupeCacheOff: sink.dedupe_max_entries = 0 leaves the sink without
// a dedupe cache though Redis is configured for the backfill queue.
func TestDedupeCacheOff(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	if got := dedupeCache(loadEnv(t, "WAYPOINT_SINK__DEDUPE_MAX_ENTRIES=0"), rdb); got != nil {
		t.Error("dedupe_max_entries = 0: the sink still has a dedupe cache")
	}
	if got := dedupeCache(loadEnv(t), rdb); got != rdb {
		t.Error("by default the sink has no dedupe cache")
	}
}

// optionCheck is one configuration key and the option value it must give.
type optionCheck struct {
	name      string
	got, want any
}

func checkOptions(t *testing.T, section string, checks []optionCheck) {
	t.Helper()
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s.%s: got %v, want %v", section, c.name, c.got, c.want)
		}
	}
}

// loadEnv loads the configuration from env alone, as an operator sets it.
func loadEnv(t *testing.T, env ...string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.LoadOptions{Env: env})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestIngestOptionsFromConfig checks that every [ingest] key reaches the
// ingester's options, and that from_id = "live" leaves FromID unset.
func TestIngestOptionsFromConfig(t *testing.T) {
	cfg := loadEnv(t,
		"WAYPOINT_INGEST__FROM_ID=12345",
		"WAYPOINT_INGEST__MAX_INFLIGHT=100",
		"WAYPOINT_INGEST__MAX_INFLIGHT_MB=3",
		"WAYPOINT_INGEST__STALL_TIMEOUT_S=9",
		"WAYPOINT_INGEST__CHECKPOINT_INTERVAL_MS=250",
		"WAYPOINT_HUB__SHARD_INDICES=2",
	)
	o := ingestOptions(cfg)
	var from any = o.FromID
	if o.FromID != nil {
		from = *o.FromID
	}
	checkOptions(t, "ingest", []optionCheck{
		{"from_id", from, uint64(12345)},
		{"max_inflight", o.MaxInFlight, 100},
		{"max_inflight_mb", o.MaxInFlightBytes, 3 << 20},
		{"stall_timeout_s", o.StallTimeout, 9 * time.Second},
		{"checkpoint_interval_ms", o.CheckpointInterval, 250 * time.Millisecond},
		{"hub.shard_indices", fmt.Sprint(o.Shards), "[2]"},
	})
	if o := ingestOptions(ptr(config.Default())); o.FromID != nil {
		t.Errorf("from_id = live: FromID = %d, want nil (start live)", *o.FromID)
	}
}

func ptr[T any](v T) *T { return &v }

func TestMemoryLimit(t *testing.T) {
	for _, c := range []struct {
		name string
		env  string
		mbs  []int
		want int64
	}{
		{"one stage", "", []int{120}, 120 << 20},
		{"stages add up", "", []int{120, 200}, 320 << 20},
		{"an unlimited stage", "", []int{120, 0}, 0},
		{"GOMEMLIMIT wins", "1GiB", []int{120}, 0},
		{"no stage", "", nil, 0},
	} {
		if got := memoryLimit(c.env, c.mbs...); got != c.want {
			t.Errorf("%s: memoryLimit(%q, %v) = %d, want %d", c.name, c.env, c.mbs, got, c.want)
		}
	}
}
