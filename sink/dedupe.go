package sink

import (
	"context"
	"encoding/hex"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	pb "github.com/waypointhq/waypoint/proto"
	"github.com/waypointhq/waypoint/telemetry"
)

// Dedupe defaults.
const (
	DefaultDedupeTTL    = 24 * time.Hour
	DefaultDedupePrefix = "waypoint:sink:seen:"
	// DefaultDedupeMaxEntries keeps the cache near 130 MB of Redis memory:
	// redeliveries, which it is for, are of recent events.
	DefaultDedupeMaxEntries = 1_000_000
)

// dedupeTimeout bounds one Redis round trip: a slow or absent Redis must
// cost a batch little, since the writer is idempotent anyway.
const dedupeTimeout = 250 * time.Millisecond

// dedupeBackoff is how long Redis is left alone after a failure, so an
// outage costs one timeout per interval rather than one per batch.
const dedupeBackoff = 2 * time.Second

// dedupe is a cache of events already committed: one Redis sorted set
// whose members are an event's type and message hash (see dedupeMember),
// scored by the time of their commit in Unix milliseconds. The event type is part of the member
// because a prune or revoke carries the hash of the message it removes: a
// member of the hash alone would skip the prune once the merge was seen.
// A sorted set, rather than a key per event, bounds the cache both ways:
// members older than ttl count as absent and are trimmed, and each commit
// trims the set to its newest max members. Members are added only after
// the transaction that stored the events committed, so a hit always means
// "stored"; a miss or a Redis error only costs a redundant, idempotent
// write.
type dedupe struct {
	rdb *redis.Client
	key string
	ttl time.Duration
	max int64

	hits, misses, errors atomic.Int64
	downUntil            atomic.Int64 // unix nanos

	metrics *telemetry.Metrics // nil: none
}

// newDedupe returns the cache held in key; ttl and max take their defaults
// when not positive.
func newDedupe(rdb *redis.Client, key string, ttl time.Duration, max int) *dedupe {
	if rdb == nil {
		return nil
	}
	if ttl <= 0 {
		ttl = DefaultDedupeTTL
	}
	if max <= 0 {
		max = DefaultDedupeMaxEntries
	}
	return &dedupe{rdb: rdb, key: key, ttl: ttl, max: int64(max)}
}

// dedupeMember returns the cache member of an event of type typ carrying the
// message hash (as the bus headers spell them): the type's number and the
// hash's bytes, a third of the size spelled out, which makes an entry
// about 130 bytes of Redis memory instead of 180. Values that do not parse
// are kept as they are.
func dedupeMember(typ, hash string) string {
	n, ok := pb.HubEventType_value[typ]
	if !ok || n < 0 || n > 255 {
		return typ + ":" + hash
	}
	var buf [1 + 32]byte
	b, err := hex.AppendDecode(append(buf[:0], byte(n)), []byte(strings.TrimPrefix(hash, "0x")))
	if err != nil {
		return typ + ":" + hash
	}
	return string(b)
}

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

// seen sets seen[i] for each members[i] that is cached; members[i] == "" is
// never seen. On a Redis error every member counts as unseen.
func (d *dedupe) seen(ctx context.Context, members []string, seen []bool) {
	clear(seen)
	if !d.available() {
		return
	}
	ask := make([]string, 0, len(members))
	idx := make([]int, 0, len(members))
	for i, k := range members {
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
	scores, err := d.rdb.ZMScore(ctx, d.key, ask...).Result()
	if err != nil || len(scores) != len(ask) {
		d.fail()
		return
	}
	// An absent member scores 0. One committed before the TTL counts as
	// absent too, though the trim that removes it has not run yet.
	oldest := float64(time.Now().Add(-d.ttl).UnixMilli())
	var hits int64
	for j, s := range scores {
		if s > 0 && s >= oldest {
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

// commit records members as stored and trims the cache to its bounds, in
// one pipelined round trip.
func (d *dedupe) commit(ctx context.Context, members []string) {
	if !d.available() {
		return
	}
	now := time.Now()
	score := float64(now.UnixMilli())
	zs := make([]redis.Z, 0, len(members))
	for _, m := range members {
		if m != "" {
			zs = append(zs, redis.Z{Score: score, Member: m})
		}
	}
	if len(zs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, dedupeTimeout)
	defer cancel()
	pipe := d.rdb.Pipeline()
	pipe.ZAdd(ctx, d.key, zs...)
	pipe.ZRemRangeByScore(ctx, d.key, "-inf", "("+strconv.FormatInt(now.Add(-d.ttl).UnixMilli(), 10))
	// Ranks count from the oldest: all but the newest max go.
	pipe.ZRemRangeByRank(ctx, d.key, 0, -d.max-1)
	// A cache no sink writes to any more goes away by itself.
	pipe.PExpire(ctx, d.key, d.ttl)
	size := pipe.ZCard(ctx, d.key)
	if _, err := pipe.Exec(ctx); err != nil {
		d.fail()
		return
	}
	if d.metrics != nil {
		d.metrics.DedupeCacheEntries.Set(float64(size.Val()))
	}
}
