package sink

import (
	"context"
	"fmt"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/telemetry"
)

// members returns the cache members of n merges, of distinct hashes
// starting at from.
func members(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = dedupeMember("HUB_EVENT_TYPE_MERGE_MESSAGE", fmt.Sprintf("0x%040x", from+i))
	}
	return out
}

func TestDedupeMember(t *testing.T) {
	const hash = "0x49294cadf15bb09f3003a16840c0368e94828053"
	merge, prune := dedupeMember("HUB_EVENT_TYPE_MERGE_MESSAGE", hash), dedupeMember("HUB_EVENT_TYPE_PRUNE_MESSAGE", hash)
	if len(merge) != 21 || len(prune) != 21 {
		t.Errorf("members of %d and %d bytes, want the type's byte and the hash's 20", len(merge), len(prune))
	}
	// A prune carries the hash of the merge it undoes; skipping it as a
	// duplicate of the merge would leave the message live.
	if merge == prune {
		t.Error("a merge and a prune of one message share a member")
	}
	for _, c := range []struct{ typ, hash, want string }{
		{"HUB_EVENT_TYPE_MERGE_MESSAGE", "0xnot-hex", "HUB_EVENT_TYPE_MERGE_MESSAGE:0xnot-hex"},
		{"SOME_FUTURE_TYPE", hash, "SOME_FUTURE_TYPE:" + hash},
	} {
		if got := dedupeMember(c.typ, c.hash); got != c.want {
			t.Errorf("dedupeMember(%q, %q) = %q, want it spelled out: %q", c.typ, c.hash, got, c.want)
		}
	}
}

// seenCount asks the cache about ms and returns how many it knows.
func seenCount(ctx context.Context, d *dedupe, ms []string) int {
	seen := make([]bool, len(ms))
	d.seen(ctx, ms, seen)
	n := 0
	for _, s := range seen {
		if s {
			n++
		}
	}
	return n
}

// TestDedupeKeepsTheNewestEntries commits more events than the cache may
// hold: it keeps exactly the newest, reports its size, and forgets the
// oldest, which the writer's idempotency then covers.
func TestDedupeKeepsTheNewestEntries(t *testing.T) {
	ctx := context.Background()
	rd := testsupport.NewRedis(t)
	d := newDedupe(rd.Client, rd.Prefix+"seen", time.Hour, 100)
	d.metrics = telemetry.NewMetrics()
	first, second := members(0, 80), members(80, 80)
	d.commit(ctx, first)
	time.Sleep(2 * time.Millisecond) // the second commit scores later
	d.commit(ctx, second)
	if n, err := rd.Client.ZCard(ctx, d.key).Result(); err != nil || n != 100 {
		t.Fatalf("cache holds %d entries (%v), want its bound 100", n, err)
	}
	if got := seenCount(ctx, d, second); got != 80 {
		t.Errorf("%d of the 80 newest entries seen, want all", got)
	}
	if got := seenCount(ctx, d, first[:60]); got != 0 {
		t.Errorf("%d of the 60 oldest entries seen, want none: they were trimmed", got)
	}
	if got := seenCount(ctx, d, first[60:]); got != 20 {
		t.Errorf("%d of the 20 newest of the first commit seen, want 20", got)
	}
	var size dto.Metric
	if err := d.metrics.DedupeCacheEntries.Write(&size); err != nil {
		t.Fatal(err)
	}
	if got := size.GetGauge().GetValue(); got != 100 {
		t.Errorf("waypoint_dedupe_cache_entries = %v, want 100", got)
	}
	if ttl, err := rd.Client.PTTL(ctx, d.key).Result(); err != nil || ttl <= 0 || ttl > time.Hour {
		t.Errorf("cache key expires in %v (%v), want within its TTL of 1h", ttl, err)
	}
}

// TestDedupeForgetsAfterTTL: an entry older than the TTL is a miss at
// once, and the next commit trims it.
func TestDedupeForgetsAfterTTL(t *testing.T) {
	ctx := context.Background()
	rd := testsupport.NewRedis(t)
	const ttl = 300 * time.Millisecond
	d := newDedupe(rd.Client, rd.Prefix+"seen", ttl, 1000)
	old := members(0, 10)
	d.commit(ctx, old)
	if got := seenCount(ctx, d, old); got != 10 {
		t.Fatalf("%d of 10 fresh entries seen, want 10", got)
	}
	time.Sleep(ttl + 50*time.Millisecond)
	if got := seenCount(ctx, d, old); got != 0 {
		t.Errorf("%d of 10 entries older than the TTL seen, want none", got)
	}
	fresh := members(10, 5)
	d.commit(ctx, fresh)
	if n, err := rd.Client.ZCard(ctx, d.key).Result(); err != nil || n != 5 {
		t.Errorf("cache holds %d entries (%v) after a commit, want the 5 fresh ones", n, err)
	}
	if got := seenCount(ctx, d, fresh); got != 5 {
		t.Errorf("%d of 5 fresh entries seen, want 5", got)
	}
}

// TestDedupeEntrySize checks the Redis memory an entry costs against the
// "about 130 bytes" that sink.dedupe_max_entries's documentation gives.
func TestDedupeEntrySize(t *testing.T) {
	ctx := context.Background()
	rd := testsupport.NewRedis(t)
	d := newDedupe(rd.Client, rd.Prefix+"seen", time.Hour, 0)
	const n = 20000
	for i := 0; i < n; i += 5000 {
		d.commit(ctx, members(i, 5000))
	}
	if got, err := rd.Client.ZCard(ctx, d.key).Result(); err != nil || got != n {
		t.Fatalf("cache holds %d entries (%v), want %d", got, err, n)
	}
	bytes, err := rd.Client.MemoryUsage(ctx, d.key, 0).Result()
	if err != nil {
		t.Fatal(err)
	}
	per := float64(bytes) / n
	t.Logf("%.0f bytes of Redis memory per entry", per)
	if per > 150 {
		t.Errorf("%.0f bytes per entry, more than the documented 130 allow for", per)
	}
}
