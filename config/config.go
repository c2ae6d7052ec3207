// Package config holds Waypoint's settings and loads them from built-in
// defaults, a TOML file, the environment and command-line overrides, in
// that order of increasing priority.
//
// Every key has one name per source, all derived from the `toml` struct tags
// of Config, so a new field is reachable everywhere at once:
//
//	file:         [database] max_connections = 16
//	environment:  WAYPOINT_DATABASE__MAX_CONNECTIONS=16
//	override:     Override{Key: "database.max_connections", ...}
//
// An environment name is WAYPOINT_, the section, "__", then the key, upper
// case. Tables such as hub.headers take one variable per entry: the entry
// name follows another "__", is lower-cased and has "_" turned into "-", so
// WAYPOINT_HUB__HEADERS__X_API_KEY=k sets the header x-api-key (a header
// whose name contains "_" can only be set in the file). Lists such as
// hub.shard_indices are comma-separated. An empty variable counts as unset.
// A few keys also answer to a conventional lower-priority name (LOG_LEVEL,
// BACKFILL_CONCURRENCY); see the `alias` tags.
//
// Unknown keys in the file and unknown WAYPOINT_* variables are errors, so a
// typo never silently falls back to a default. WAYPOINT_CONFIG (the file to
// read) and WAYPOINT_TEST_* (the test harness's own settings) are not keys
// and are ignored.
//
// Config's String, LogValue and MarshalJSON render the redacted form, and
// Load's errors never quote a secret, so a configuration can be printed or
// logged freely.
package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"

	"github.com/BurntSushi/toml"
)

// Config is the complete configuration of every Waypoint command.
//
// Struct tags: `toml` names the key (and through it the environment
// variable), `alias` lists lower-priority environment names, and `redact`
// marks secrets: "url" hides the password inside a URL, "urls" does so for a
// comma-separated list, "value" hides the whole value (for a table, every
// entry's value).
type Config struct {
	Database Database `toml:"database"`
	Redis    Redis    `toml:"redis"`
	Hub      Hub      `toml:"hub"`
	NATS     NATS     `toml:"nats"`
	Log      Log      `toml:"log"`
	Ingest   Ingest   `toml:"ingest"`
	Sink     Sink     `toml:"sink"`
	Backfill Backfill `toml:"backfill"`
	Metrics  Metrics  `toml:"metrics"`
	Tracing  Tracing  `toml:"tracing"`
}

// Database is the Postgres connection.
type Database struct {
	URL            string `toml:"url" redact:"url"`
	MaxConnections int    `toml:"max_connections"`
	TimeoutSeconds int    `toml:"timeout_seconds"`
	// WriteMessages keeps the raw message rows besides the derived tables.
	WriteMessages bool `toml:"write_messages"`
}

// Redis is the backfill queue's server.
type Redis struct {
	URL      string `toml:"url" redact:"url"`
	PoolSize int    `toml:"pool_size"`
	// KeyPrefix starts every key Waypoint writes (backfill queue, dedupe
	// cache), so deployments can share one Redis.
	KeyPrefix string `toml:"key_prefix"`
}

// Hub is the Snapchain node that events and backfill data come from.
type Hub struct {
	// URL is host:port for plaintext gRPC, or http://host:port and
	// https://host:port to choose plaintext or TLS explicitly.
	URL string `toml:"url" redact:"url"`
	// ShardIndices lists the data shards to follow; empty means every
	// shard the node reports in GetInfo.
	ShardIndices []uint32 `toml:"shard_indices"`
	// Network is mainnet, testnet or devnet.
	Network string `toml:"network"`
	// MaxReceiveMB bounds one response read from the node, in MiB; a
	// larger one fails its call instead of being buffered.
	MaxReceiveMB int `toml:"max_receive_mb"`
	// Headers are sent as gRPC metadata on every call (API keys).
	Headers map[string]string `toml:"headers" redact:"value"`
}

// NATS is the JetStream server and stream the pipeline flows through.
type NATS struct {
	// URL is one or more comma-separated server URLs; empty runs an
	// embedded server storing its data in StoreDir.
	URL        string `toml:"url" redact:"urls"`
	StoreDir   string `toml:"store_dir"`
	Stream     string `toml:"stream"`
	Partitions int    `toml:"partitions"`
	Replicas   int    `toml:"replicas"`
	CredsFile  string `toml:"creds_file"`
	NKeyFile   string `toml:"nkey_file"`
	Token      string `toml:"token" redact:"value"`
	User       string `toml:"user"`
	Password   string `toml:"password" redact:"value"`
}

// Log configures the process's slog logger.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `toml:"level" alias:"LOG_LEVEL"`
	// Format is text or json.
	Format string `toml:"format"`
}

// Ingest configures the stage that publishes the hub's events to JetStream.
type Ingest struct {
	// FromID is where a shard with no checkpoint starts: "live" or an
	// event id. A shard with a checkpoint always resumes after it.
	FromID string `toml:"from_id"`
	// MaxInFlight and MaxInFlightMB bound the publishes awaiting the
	// server's ack, in messages and in MiB of payload, across all shards.
	MaxInFlight   int `toml:"max_inflight"`
	MaxInFlightMB int `toml:"max_inflight_mb"`
	// StallTimeoutS reconnects a shard that sent nothing, not even a block
	// confirmation, for this many seconds.
	StallTimeoutS int `toml:"stall_timeout_s"`
	// CheckpointIntervalMS is how often acknowledged progress is saved.
	CheckpointIntervalMS int `toml:"checkpoint_interval_ms"`
	// MemoryLimitMB is the soft memory limit (the Go runtime's GOMEMLIMIT)
	// of a process running ingest; 0 sets none. GOMEMLIMIT in the
	// environment takes precedence.
	MemoryLimitMB int `toml:"memory_limit_mb"`
}

// Sink configures the writers that drain JetStream into Postgres.
type Sink struct {
	Replicas  int `toml:"replicas"`
	BatchSize int `toml:"batch_size"`
	// PullSize is the most messages one pull of a partition takes (and
	// the partition consumer's MaxAckPending); a batch gathers the pulls
	// of several partitions.
	PullSize       int `toml:"pull_size"`
	BatchTimeoutMS int `toml:"batch_timeout_ms"`
	// MaxBatchMB bounds the payload of one write transaction; MaxPulledMB
	// the payload a process holds pulled from the stream and not yet
	// committed, across all its partitions.
	MaxBatchMB  int `toml:"max_batch_mb"`
	MaxPulledMB int `toml:"max_pulled_mb"`
	// Validate is off, hash or full (see message.ParseMode).
	Validate string `toml:"validate"`
	// DedupeTTLS is how long, in seconds, a committed event stays in the
	// Redis dedupe cache; DedupeMaxEntries how many the cache keeps at
	// most, the newest, with 0 turning the cache off.
	DedupeTTLS       int `toml:"dedupe_ttl_s"`
	DedupeMaxEntries int `toml:"dedupe_max_entries"`
	// MemoryLimitMB is the soft memory limit of a process running a sink
	// (see Ingest.MemoryLimitMB); 0 sets none.
	MemoryLimitMB int `toml:"memory_limit_mb"`
}

// Backfill configures the Redis-queued historical import.
type Backfill struct {
	Concurrency int `toml:"concurrency" alias:"BACKFILL_CONCURRENCY"`
	BatchSize   int `toml:"batch_size"`
	PageSize    int `toml:"page_size"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Addr is host:port to serve /metrics on; empty turns it off.
	Addr string `toml:"addr"`
}

// Tracing mirrors the OpenTelemetry settings most often changed; each one
// set here wins over its OTEL_* variable, and everything else (protocol,
// headers, sampler name, OTEL_SDK_DISABLED) is read from OTEL_* alone.
type Tracing struct {
	// Endpoint is the OTLP collector (OTEL_EXPORTER_OTLP_ENDPOINT);
	// empty leaves it to the environment, and with none there tracing is off.
	Endpoint string `toml:"endpoint"`
	// SamplerRatio is the share of traces kept, 0 to 1
	// (OTEL_TRACES_SAMPLER_ARG); empty means the environment's or 0.01.
	SamplerRatio string `toml:"sampler_ratio"`
	// Force lists FIDs and message hashes always traced, in the syntax of
	// WAYPOINT_TRACE_FORCE ("fid:123,hash:0x..."); both lists apply.
	Force string `toml:"force"`
}

// Default returns the built-in configuration; config/sample.toml documents
// the same values.
func Default() Config {
	return Config{
		Database: Database{MaxConnections: 16, TimeoutSeconds: 30, WriteMessages: true},
		Redis:    Redis{PoolSize: 32, KeyPrefix: "waypoint:"},
		Hub: Hub{
			URL:          "127.0.0.1:3383",
			ShardIndices: []uint32{},
			Headers:      map[string]string{},
			Network:      "mainnet",
			MaxReceiveMB: 64,
		},
		NATS: NATS{
			StoreDir:   "data/nats",
			Stream:     "WAYPOINT_EVENTS",
			Partitions: 16,
			Replicas:   1,
		},
		Log: Log{Level: "info", Format: "text"},
		Ingest: Ingest{FromID: "live", MaxInFlight: 8192, MaxInFlightMB: 32, StallTimeoutS: 30, CheckpointIntervalMS: 1000,
			MemoryLimitMB: 120},
		Sink: Sink{Replicas: 1, BatchSize: 5000, PullSize: 1000, BatchTimeoutMS: 100, MaxBatchMB: 32, MaxPulledMB: 128, Validate: "hash",
			DedupeTTLS: 86400, DedupeMaxEntries: 1_000_000},
		Backfill: Backfill{Concurrency: 50, BatchSize: 50, PageSize: 1000},
		Metrics:  Metrics{Addr: "127.0.0.1:9090"},
	}
}

// Key describes one configuration key as each source spells it.
type Key struct {
	// Name is the dotted file key, e.g. "database.max_connections".
	Name string
	// Env is the environment variable, e.g.
	// "WAYPOINT_DATABASE__MAX_CONNECTIONS". For a table it is the prefix
	// that each entry's name is appended to, e.g. "WAYPOINT_HUB__HEADERS__".
	Env string
	// Aliases are lower-priority environment names, e.g. "LOG_LEVEL".
	Aliases []string
	// Table is true for keys whose entries are set one by one.
	Table bool
}

// Keys lists every configuration key in file order.
func Keys() []Key {
	fs := fields()
	out := make([]Key, len(fs))
	for i, f := range fs {
		out[i] = Key{Name: f.key, Env: f.env, Aliases: append([]string(nil), f.aliases...), Table: f.isTable()}
		if f.isTable() {
			out[i].Env += "__"
		}
	}
	return out
}

// Require reports, in one error, every named key that is empty or zero;
// commands call it for the settings they cannot run without.
func (c Config) Require(keys ...string) error {
	var errs []error
	v := reflect.ValueOf(c)
	for _, k := range keys {
		f, ok := fieldByKey(k)
		if !ok {
			errs = append(errs, fmt.Errorf("config: unknown key %q", k))
			continue
		}
		if v.FieldByIndex(f.index).IsZero() {
			errs = append(errs, fmt.Errorf("config: %s is not set: set %s in the config file or %s in the environment", f.key, f.key, f.env))
		}
	}
	return joinErrors(errs)
}

// Redacted returns a deep copy of c with every secret replaced by REDACTED:
// passwords inside URLs (user names and hosts stay), tokens, passwords and
// header values.
func (c Config) Redacted() Config {
	out := c.clone()
	v := reflect.ValueOf(&out).Elem()
	for _, f := range fields() {
		fv := v.FieldByIndex(f.index)
		switch f.redact {
		case "url":
			fv.SetString(redactURL(fv.String()))
		case "urls":
			fv.SetString(redactURLList(fv.String()))
		case "value":
			switch fv.Kind() {
			case reflect.String:
				if fv.String() != "" {
					fv.SetString(redacted)
				}
			case reflect.Map:
				for _, k := range fv.MapKeys() {
					fv.SetMapIndex(k, reflect.ValueOf(redacted))
				}
			}
		}
	}
	return out
}

// String renders the redacted configuration as TOML.
func (c Config) String() string {
	b, err := encodeTOML(c.Redacted())
	if err != nil {
		return "config: " + err.Error()
	}
	return string(b)
}

// LogValue renders the redacted configuration as one slog group per
// section.
func (c Config) LogValue() slog.Value {
	r := c.Redacted()
	v := reflect.ValueOf(r)
	var groups []slog.Attr
	var attrs []any
	section := ""
	for _, f := range fields() {
		sec := f.section
		if sec != section && section != "" {
			groups = append(groups, slog.Group(section, attrs...))
			attrs = nil
		}
		section = sec
		attrs = append(attrs, slog.Any(f.name, v.FieldByIndex(f.index).Interface()))
	}
	if section != "" {
		groups = append(groups, slog.Group(section, attrs...))
	}
	return slog.GroupValue(groups...)
}

// MarshalJSON renders the redacted configuration as a JSON object keyed by
// the file's section and key names, in file order.
func (c Config) MarshalJSON() ([]byte, error) {
	r := c.Redacted()
	v := reflect.ValueOf(r)
	var buf bytes.Buffer
	section := ""
	for _, f := range fields() {
		switch {
		case section == "":
			buf.WriteString("{")
		case f.section != section:
			buf.WriteString("},")
		default:
			buf.WriteString(",")
		}
		if f.section != section {
			fmt.Fprintf(&buf, "%q:{", f.section)
			section = f.section
		}
		b, err := json.Marshal(v.FieldByIndex(f.index).Interface())
		if err != nil {
			return nil, fmt.Errorf("encode %s: %w", f.key, err)
		}
		fmt.Fprintf(&buf, "%q:%s", f.name, b)
	}
	buf.WriteString("}}")
	return buf.Bytes(), nil
}

// clone copies c deeply enough that changing the copy's slices and maps
// leaves c alone.
func (c Config) clone() Config {
	out := c
	v := reflect.ValueOf(&out).Elem()
	for _, f := range fields() {
		fv := v.FieldByIndex(f.index)
		switch fv.Kind() {
		case reflect.Slice:
			cp := reflect.MakeSlice(fv.Type(), fv.Len(), fv.Len())
			reflect.Copy(cp, fv)
			fv.Set(cp)
		case reflect.Map:
			cp := reflect.MakeMapWithSize(fv.Type(), fv.Len())
			iter := fv.MapRange()
			for iter.Next() {
				cp.SetMapIndex(iter.Key(), iter.Value())
			}
			fv.Set(cp)
		}
	}
	return out
}

// encodeTOML writes c in the file format Load reads.
func encodeTOML(c Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode toml: %w", err)
	}
	return buf.Bytes(), nil
}
