package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// validate checks every value against its allowed range; each problem is
// reported against the source that set the value.
func (l *loader) validate() {
	c := &l.cfg
	l.check("database.url", checkURL(c.Database.URL, "postgres", "postgresql"))
	l.check("database.max_connections", between(c.Database.MaxConnections, 1, 10000))
	l.check("database.timeout_seconds", between(c.Database.TimeoutSeconds, 1, 86400))

	l.check("redis.url", checkURL(c.Redis.URL, "redis", "rediss", "unix"))
	l.check("redis.pool_size", between(c.Redis.PoolSize, 1, 10000))

	l.check("hub.url", checkHub(c.Hub.URL))
	for _, name := range sortedKeys(c.Hub.Headers) {
		l.check("hub.headers."+name, checkHeaderName(name))
	}
	l.check("hub.network", oneOf(c.Hub.Network, "mainnet", "testnet", "devnet"))
	l.check("hub.max_receive_mb", between(c.Hub.MaxReceiveMB, 1, 2047))

	if c.NATS.URL != "" {
		for _, u := range strings.Split(c.NATS.URL, ",") {
			if p := checkURL(strings.TrimSpace(u), "nats", "tls", "ws", "wss"); p != "" {
				l.check("nats.url", p)
				break
			}
		}
	}
	l.check("nats.stream", checkStreamName(c.NATS.Stream))
	l.check("nats.partitions", between(c.NATS.Partitions, 1, 1024))
	l.check("nats.replicas", between(c.NATS.Replicas, 1, 5))
	if c.NATS.Password != "" && c.NATS.User == "" {
		l.check("nats.password", "set nats.user too: a password needs a user name")
	}

	l.check("log.level", oneOf(c.Log.Level, "debug", "info", "warn", "error"))
	l.check("log.format", oneOf(c.Log.Format, "text", "json"))

	if c.Ingest.FromID != "live" {
		if _, err := strconv.ParseUint(c.Ingest.FromID, 10, 64); err != nil {
			l.check("ingest.from_id", "want live or an event id")
		}
	}
	l.check("ingest.max_inflight", between(c.Ingest.MaxInFlight, 1, 1_000_000))
	l.check("ingest.max_inflight_mb", between(c.Ingest.MaxInFlightMB, 1, 65536))
	l.check("ingest.stall_timeout_s", between(c.Ingest.StallTimeoutS, 1, 86400))
	l.check("ingest.checkpoint_interval_ms", between(c.Ingest.CheckpointIntervalMS, 10, 3_600_000))
	l.check("ingest.memory_limit_mb", between(c.Ingest.MemoryLimitMB, 0, 1<<20))

	l.check("sink.replicas", between(c.Sink.Replicas, 1, 1024))
	l.check("sink.batch_size", between(c.Sink.BatchSize, 1, 1_000_000))
	l.check("sink.pull_size", between(c.Sink.PullSize, 1, 1_000_000))
	// At most a third of the sink's 10 s AckWait (see sink.New).
	l.check("sink.batch_timeout_ms", between(c.Sink.BatchTimeoutMS, 1, 3_000))
	l.check("sink.max_batch_mb", between(c.Sink.MaxBatchMB, 1, 4096))
	l.check("sink.max_pulled_mb", between(c.Sink.MaxPulledMB, 1, 65536))
	l.check("sink.validate", oneOf(c.Sink.Validate, "off", "hash", "full"))
	l.check("sink.dedupe_ttl_s", between(c.Sink.DedupeTTLS, 1, 30*86400))
	l.check("sink.dedupe_max_entries", between(c.Sink.DedupeMaxEntries, 0, 1_000_000_000))
	l.check("sink.memory_limit_mb", between(c.Sink.MemoryLimitMB, 0, 1<<20))

	l.check("backfill.concurrency", between(c.Backfill.Concurrency, 1, 10000))
	l.check("backfill.batch_size", between(c.Backfill.BatchSize, 1, 100000))
	l.check("backfill.page_size", between(c.Backfill.PageSize, 1, 10000))

	if c.Metrics.Addr != "" {
		l.check("metrics.addr", checkHostPort(c.Metrics.Addr, "want host:port, or empty to turn metrics off"))
	}
	if c.Tracing.SamplerRatio != "" {
		if r, err := strconv.ParseFloat(c.Tracing.SamplerRatio, 64); err != nil || !(r >= 0 && r <= 1) {
			l.check("tracing.sampler_ratio", "want a number from 0 to 1")
		}
	}
}

func (l *loader) check(key, problem string) {
	if problem != "" {
		l.fail(l.originOf(key), problem)
	}
}

func between(n, lo, hi int) string {
	if n < lo || n > hi {
		return fmt.Sprintf("want %d..%d", lo, hi)
	}
	return ""
}

func oneOf(s string, words ...string) string {
	if slices.Contains(words, s) {
		return ""
	}
	return "want " + strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// checkURL accepts an empty value (not set) or a URL with one of schemes.
// Its messages never quote the URL: it may hold a password.
func checkURL(s string, schemes ...string) string {
	if s == "" {
		return ""
	}
	want := make([]string, len(schemes))
	for i, sc := range schemes {
		want[i] = sc + "://"
	}
	u, err := url.Parse(s)
	if err != nil {
		return "not a valid URL"
	}
	if !slices.Contains(schemes, u.Scheme) {
		return "want a URL starting with " + strings.Join(want, " or ")
	}
	if u.Host == "" && u.Scheme != "unix" && u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "want a host in the URL"
	}
	return ""
}

func checkHub(s string) string {
	const want = "want host:port, http://host:port (plaintext) or https://host:port (TLS)"
	if s == "" {
		return want
	}
	if !strings.Contains(s, "://") {
		return checkHostPort(s, want)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return want
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return want
		}
	}
	return ""
}

func checkHostPort(s, want string) string {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return want
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return want
	}
	return ""
}

// checkHeaderName applies gRPC's rules for metadata keys.
func checkHeaderName(name string) string {
	const want = "want a header name of a-z, 0-9, '-', '_' and '.', not starting with grpc-"
	if name == "" || strings.HasPrefix(name, "grpc-") {
		return want
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return want
		}
	}
	return ""
}

// checkStreamName applies JetStream's rules for stream names.
func checkStreamName(s string) string {
	if s == "" || len(s) > 255 || strings.ContainsAny(s, " \t\r\n.*>/\\") {
		return "want a stream name without spaces, '.', '*', '>', '/' or '\\'"
	}
	return ""
}
