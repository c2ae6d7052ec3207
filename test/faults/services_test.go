//go:build faults

package faults

import (
	"context"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/internal/testsupport"
)

// TestFaultPostgresUnavailable makes the test's database refuse
// connections, and cuts the open ones, for 30 seconds while events and
// backfill pages flow. Sinks hold their batch unacknowledged and retry,
// the backfill worker retries its jobs; once connections are allowed again
// everything must land.
func TestFaultPostgresUnavailable(t *testing.T) {
	nats := testsupport.StartNATSServer(t)
	pl := newPipeline(t, devnet.Options{Seed: 109, FIDs: 40, Preload: 1500, Rate: 400, Duration: 8 * time.Second}, "")
	pl.startIngest(nats.URL)
	pl.startSink(nats.URL, 2)
	pl.startBackfill()
	pl.enqueueAll()
	time.Sleep(1500 * time.Millisecond)
	unblock := blockDatabase(t, pl.dbURL)
	time.Sleep(30 * time.Second)
	unblock()
	healed := time.Now()
	pl.waitQueueDrained(60 * time.Second)
	pl.converge("postgres refuses connections 30s", healed, 45*time.Second, nats.URL)
}

// TestFaultRedisLost runs the pipeline on a Redis of its own and
// SIGKILLs it mid-run, restarting it empty two seconds later: the dedupe
// cache and the backfill queue are gone (a flush) and Redis was
// unreachable meanwhile. Sinks must carry on (the cache only saves
// redundant writes) and the lost backfill is queued again, as an operator
// would after losing a non-persistent Redis.
func TestFaultRedisLost(t *testing.T) {
	nats := testsupport.StartNATSServer(t)
	redisd, redisURL := privateRedis(t)
	pl := newPipeline(t, devnet.Options{Seed: 113, FIDs: 40, Preload: 1500, Rate: 400, Duration: 8 * time.Second}, redisURL)
	pl.startIngest(nats.URL)
	pl.startSink(nats.URL, 2)
	pl.startBackfill()
	pl.enqueueAll()
	time.Sleep(2 * time.Second)
	redisd.Kill()
	time.Sleep(2 * time.Second)
	redisd.Start()
	redisd.WaitTCP(redisURL[len("redis://") : len(redisURL)-2])
	n, err := pl.rdb.DBSize(context.Background()).Result()
	if err != nil || n != 0 {
		t.Fatalf("restarted redis has %d keys (%v), want an empty one", n, err)
	}
	pl.enqueueAll()
	healed := time.Now()
	pl.waitQueueDrained(60 * time.Second)
	pl.converge("redis SIGKILLed 2s, back empty", healed, 45*time.Second, nats.URL)
}
