package main

import (
	"testing"
	"time"

	"github.com/waypointhq/waypoint/config"
	"github.com/waypointhq/waypoint/message"
)

// TestSinkOptionsFromConfig checks that every [sink] key reaches the
// sink's options, from the environment as an operator sets them.
func TestSinkOptionsFromConfig(t *testing.T) {
	cfg, err := config.Load(config.LoadOptions{Env: []string{
		"WAYPOINT_SINK__REPLICAS=3",
		"WAYPOINT_SINK__BATCH_SIZE=250",
		"WAYPOINT_SINK__BATCH_TIMEOUT_MS=40",
		"WAYPOINT_SINK__MAX_BATCH_MB=5",
		"WAYPOINT_SINK__MAX_PULLED_MB=7",
		"WAYPOINT_SINK__VALIDATE=full",
		"WAYPOINT_REDIS__KEY_PREFIX=tenant:",
	}})
	if err != nil {
		t.Fatal(err)
	}
	o := sinkOptions(cfg)
	checks := []struct {
		name      string
		got, want any
	}{
		{"replicas", o.Replicas, 3},
		{"batch_size", o.BatchSize, 250},
		{"batch_timeout_ms", o.BatchTimeout, 40 * time.Millisecond},
		{"max_batch_mb", o.MaxBatchBytes, 5 << 20},
		{"max_pulled_mb", o.MaxPulledBytes, 7 << 20},
		{"validate", o.Validate, message.CheckFull},
		{"redis.key_prefix", o.DedupePrefix, "tenant:sink:seen:"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("sink.%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}
