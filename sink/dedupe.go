package sink

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/waypointhq/waypoint/telemetry"
)

// Dedupe defaults.
const (
	DefaultDedupeTTL    = 24 * time.Hour
	DefaultDedupePrefix = "waypoint:sink:seen:"
)

// dedupeTimeout bounds one Redis round trip: a slow or absent Redis must
// cost a batch little, since the writer is idempotent anyway.
const dedupeTimeout = 250 * time.Millisecond

// dedupeBackoff is how long Redis is left alone after a failure, so an
// outage costs one timeout per interval rather than one per batch.
const dedupeBackoff = 2 * time.Second

// dedupe is a cache of events already committed, keyed by
// "<prefix><event type>:<message hash>". The event type is part of the key
// because a prune or revoke carries the hash of the message it removes: a
// key on the hash alone would skip the prune once the merge was seen.
// Entries are written only after the transaction that stored the events
// committed, so a hit always means "stored"; a miss or a Redis error only
// costs a redundant, idempotent write.
type dedupe struct {
	rdb    *redis.Client
	prefix string
	ttl    time.Duration

	hits, misses, errors atomic.Int64
	downUntil            atomic.Int64 // unix nanos

	metrics *telemetry.Metrics // nil: none
}

func newDedupe(rdb *redis.Client, prefix string, ttl time.Duration) *dedupe {
	if rdb == nil {
		return nil
	}
	if prefix == "" {
		prefix = DefaultDedupePrefix
	}
	if ttl <= 0 {
		ttl = DefaultDedupeTTL
	}
	return &dedupe{rdb: rdb, prefix: prefix, ttl: ttl}
}

func (d *dedupe) key(typ, hash string) string { return d.prefix + typ + ":" + hash }

func (d *dedupe) available() bool {
	return d != nil && time.Now().UnixNano() >= d.downUntil.Load()
}

func (d *dedupe) fail() {
	d.errors.Add(1)
	if d.metrics != nil {
		d.metrics.DedupeCacheRequests.WithLabelValues(telemetry.DedupeError).Inc()
	}
	d.downUntil.Store(time.Now().Add(dedupeBackoff).UnixNano())
}

// seen sets seen[i] for each keys[i] that is cached; keys[i] == "" is never
// seen. On a Redis error every key counts as unseen.
func (d *dedupe) seen(ctx context.Context, keys []string, seen []bool) {
	clear(seen)
	if !d.available() {
		return
	}
	ask := make([]string, 0, len(keys))
	idx := make([]int, 0, len(keys))
	for i, k := range keys {
		if k != "" {
			ask = append(ask, k)
			idx = append(idx, i)
		}
	}
	if len(ask) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, dedupeTimeout)
	defer cancel()
	vals, err := d.rdb.MGet(ctx, ask...).Result()
	if err != nil || len(vals) != len(ask) {
		d.fail()
		return
	}
	var hits int64
	for j, v := range vals {
		if v != nil {
			seen[idx[j]] = true
			hits++
		}
	}
	d.hits.Add(hits)
	d.misses.Add(int64(len(ask)) - hits)
	if d.metrics != nil {
		d.metrics.DedupeCacheRequests.WithLabelValues(telemetry.DedupeHit).Add(float64(hits))
		d.metrics.DedupeCacheRequests.WithLabelValues(telemetry.DedupeMiss).Add(float64(int64(len(ask)) - hits))
	}
}

// commit records keys as stored, in one pipelined round trip.
func (d *dedupe) commit(ctx context.Context, keys []string) {
	if !d.available() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, dedupeTimeout)
	defer cancel()
	pipe := d.rdb.Pipeline()
	n := 0
	for _, k := range keys {
		if k != "" {
			pipe.Set(ctx, k, "1", d.ttl)
			n++
		}
	}
	if n == 0 {
		return
	}
	if _, err := pipe.Exec(ctx); err != nil {
		d.fail()
	}
}
