package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "waypoint.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadDefaults(t *testing.T) {
	got, err := Load(LoadOptions{Env: []string{"PATH=/bin", "HOME=/root", "DATABASE_URL=ignored"}})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(*got, want) {
		t.Fatalf("Load with nothing set = %+v, want the defaults %+v", *got, want)
	}
	// Spot-check the values the documentation promises.
	checks := map[string][2]any{
		"hub.url":             {got.Hub.URL, "127.0.0.1:3383"},
		"hub.network":         {got.Hub.Network, "mainnet"},
		"hub.max_receive_mb":  {got.Hub.MaxReceiveMB, 64},
		"sink.max_batch_mb":   {got.Sink.MaxBatchMB, 32},
		"sink.max_pulled_mb":  {got.Sink.MaxPulledMB, 128},
		"sink.pull_size":      {got.Sink.PullSize, 1000},
		"ingest.from_id":      {got.Ingest.FromID, "live"},
		"ingest.max_inflight": {got.Ingest.MaxInFlight, 8192},
		"ingest.memory_limit": {got.Ingest.MemoryLimitMB, 120},
		"sink.memory_limit":   {got.Sink.MemoryLimitMB, 0},
		"nats.stream":         {got.NATS.Stream, "WAYPOINT_EVENTS"},
		"nats.partitions":     {got.NATS.Partitions, 16},
		"nats.replicas":       {got.NATS.Replicas, 1},
		"log.level":           {got.Log.Level, "info"},
		"sink.batch_size":     {got.Sink.BatchSize, 5000},
		"sink.validate":       {got.Sink.Validate, "hash"},
		"sink.dedupe_ttl_s":   {got.Sink.DedupeTTLS, 86400},
		"sink.dedupe_max":     {got.Sink.DedupeMaxEntries, 1_000_000},
		"backfill.concurency": {got.Backfill.Concurrency, 50},
		"metrics.addr":        {got.Metrics.Addr, "127.0.0.1:9090"},
		"write_messages":      {got.Database.WriteMessages, true},
	}
	for k, c := range checks {
		if c[0] != c[1] {
			t.Errorf("default %s = %v, want %v", k, c[0], c[1])
		}
	}
}

// TestPrecedence sets one key in every combination of sources and checks
// that the highest one wins: defaults < file < environment < flags.
func TestPrecedence(t *testing.T) {
	type key struct {
		name, file, env, flag string
		get                   func(*Config) any
		def, fromFile         any
		fromEnv, fromFlag     any
	}
	keys := []key{
		{
			name: "sink.replicas", file: "[sink]\nreplicas = 2\n", env: "WAYPOINT_SINK__REPLICAS=3", flag: "4",
			get: func(c *Config) any { return c.Sink.Replicas }, def: 1, fromFile: 2, fromEnv: 3, fromFlag: 4,
		},
		{
			name: "database.url", file: "[database]\nurl = \"postgres://file/db\"\n", env: "WAYPOINT_DATABASE__URL=postgres://env/db", flag: "postgres://flag/db",
			get: func(c *Config) any { return c.Database.URL }, def: "", fromFile: "postgres://file/db", fromEnv: "postgres://env/db", fromFlag: "postgres://flag/db",
		},
		{
			name: "database.write_messages", file: "[database]\nwrite_messages = false\n", env: "WAYPOINT_DATABASE__WRITE_MESSAGES=true", flag: "false",
			get: func(c *Config) any { return c.Database.WriteMessages }, def: true, fromFile: false, fromEnv: true, fromFlag: false,
		},
		{
			name: "log.level", file: "[log]\nlevel = \"warn\"\n", env: "WAYPOINT_LOG__LEVEL=error", flag: "debug",
			get: func(c *Config) any { return c.Log.Level }, def: "info", fromFile: "warn", fromEnv: "error", fromFlag: "debug",
		},
	}
	combos := []struct {
		name            string
		file, env, flag bool
		want            string // which source wins
	}{
		{"none", false, false, false, "default"},
		{"file", true, false, false, "file"},
		{"env", false, true, false, "env"},
		{"flag", false, false, true, "flag"},
		{"file+env", true, true, false, "env"},
		{"file+flag", true, false, true, "flag"},
		{"env+flag", false, true, true, "flag"},
		{"file+env+flag", true, true, true, "flag"},
	}
	for _, k := range keys {
		for _, c := range combos {
			t.Run(k.name+"/"+c.name, func(t *testing.T) {
				var opts LoadOptions
				if c.file {
					opts.File = writeFile(t, k.file)
				}
				if c.env {
					opts.Env = []string{k.env}
				}
				if c.flag {
					opts.Overrides = []Override{{Key: k.name, Value: k.flag, Name: "--x"}}
				}
				cfg, err := Load(opts)
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				want := map[string]any{"default": k.def, "file": k.fromFile, "env": k.fromEnv, "flag": k.fromFlag}[c.want]
				if got := k.get(cfg); got != want {
					t.Fatalf("%s = %v, want %v (from %s)", k.name, got, want, c.want)
				}
			})
		}
	}
}

func TestEnvAliases(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		env       []string
		overrides []Override
		level     string
		conc      int
	}{
		{name: "LOG_LEVEL alone", env: []string{"LOG_LEVEL=debug"}, level: "debug", conc: 50},
		{name: "WAYPOINT_LOG__LEVEL beats LOG_LEVEL", env: []string{"WAYPOINT_LOG__LEVEL=warn", "LOG_LEVEL=debug"}, level: "warn", conc: 50},
		{name: "LOG_LEVEL is not read when WAYPOINT_LOG__LEVEL is set", env: []string{"LOG_LEVEL=verbose", "WAYPOINT_LOG__LEVEL=warn"}, level: "warn", conc: 50},
		{name: "LOG_LEVEL beats the file", file: "[log]\nlevel = \"error\"\n", env: []string{"LOG_LEVEL=debug"}, level: "debug", conc: 50},
		{name: "flag beats LOG_LEVEL", env: []string{"LOG_LEVEL=debug"}, overrides: []Override{{Key: "log.level", Value: "error"}}, level: "error", conc: 50},
		{name: "empty LOG_LEVEL is unset", env: []string{"LOG_LEVEL="}, level: "info", conc: 50},
		{name: "BACKFILL_CONCURRENCY alone", env: []string{"BACKFILL_CONCURRENCY=7"}, level: "info", conc: 7},
		{name: "WAYPOINT_BACKFILL__CONCURRENCY beats BACKFILL_CONCURRENCY", env: []string{"BACKFILL_CONCURRENCY=7", "WAYPOINT_BACKFILL__CONCURRENCY=9"}, level: "info", conc: 9},
		{name: "BACKFILL_CONCURRENCY beats the file", file: "[backfill]\nconcurrency = 3\n", env: []string{"BACKFILL_CONCURRENCY=7"}, level: "info", conc: 7},
		{name: "flag beats BACKFILL_CONCURRENCY", env: []string{"BACKFILL_CONCURRENCY=7"}, overrides: []Override{{Key: "backfill.concurrency", Value: "11"}}, level: "info", conc: 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := LoadOptions{Env: tt.env, Overrides: tt.overrides}
			if tt.file != "" {
				opts.File = writeFile(t, tt.file)
			}
			cfg, err := Load(opts)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if cfg.Log.Level != tt.level || cfg.Backfill.Concurrency != tt.conc {
				t.Fatalf("log.level=%q backfill.concurrency=%d, want %q and %d", cfg.Log.Level, cfg.Backfill.Concurrency, tt.level, tt.conc)
			}
		})
	}
}

func TestConfigFileFromEnvironment(t *testing.T) {
	a := writeFile(t, "[sink]\nreplicas = 5\n")
	b := writeFile(t, "[sink]\nreplicas = 6\n")
	cfg, err := Load(LoadOptions{Env: []string{"WAYPOINT_CONFIG=" + a}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sink.Replicas != 5 {
		t.Fatalf("WAYPOINT_CONFIG file not read: sink.replicas = %d", cfg.Sink.Replicas)
	}
	cfg, err = Load(LoadOptions{File: b, Env: []string{"WAYPOINT_CONFIG=" + a}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sink.Replicas != 6 {
		t.Fatalf("File should beat WAYPOINT_CONFIG: sink.replicas = %d", cfg.Sink.Replicas)
	}
	_, err = Load(LoadOptions{File: filepath.Join(t.TempDir(), "missing.toml")})
	if err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Fatalf("missing file: err = %v, want it to name the file", err)
	}
}

func TestTablesAndLists(t *testing.T) {
	file := writeFile(t, `
[hub]
shard_indices = [1, 2]
[hub.headers]
"X-Api-Key" = "from-file"
"x-client" = "waypoint"
`)
	cfg, err := Load(LoadOptions{File: file, Env: []string{
		"WAYPOINT_HUB__HEADERS__X_API_KEY=from-env",
		"WAYPOINT_HUB__HEADERS__X_TRACE_ID=abc",
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"x-api-key": "from-env", "x-client": "waypoint", "x-trace-id": "abc"}
	if !reflect.DeepEqual(cfg.Hub.Headers, want) {
		t.Fatalf("headers = %v, want %v", cfg.Hub.Headers, want)
	}
	if !reflect.DeepEqual(cfg.Hub.ShardIndices, []uint32{1, 2}) {
		t.Fatalf("shard_indices = %v", cfg.Hub.ShardIndices)
	}

	for env, want := range map[string][]uint32{"3": {3}, "1, 2,4": {1, 2, 4}, "": {}} {
		cfg, err := Load(LoadOptions{File: file, Env: []string{"WAYPOINT_HUB__SHARD_INDICES=" + env}})
		if err != nil {
			t.Fatal(err)
		}
		if env == "" {
			want = []uint32{1, 2} // empty is unset: the file's value stays
		}
		if !reflect.DeepEqual(cfg.Hub.ShardIndices, want) {
			t.Errorf("WAYPOINT_HUB__SHARD_INDICES=%q: got %v, want %v", env, cfg.Hub.ShardIndices, want)
		}
	}
	// Loading must not leak into the defaults of the next Load.
	if d := Default(); len(d.Hub.Headers) != 0 || len(d.Hub.ShardIndices) != 0 {
		t.Fatalf("Default() changed by Load: %+v", d.Hub)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		env       []string
		overrides []Override
		want      []string // substrings; FILE stands for the file's path
	}{
		{
			name: "unknown file key", file: "[database]\nur = \"x\"\n",
			want: []string{`config: unknown key "database.ur" in file FILE (did you mean "database.url"?)`},
		},
		{
			name: "unknown file section", file: "[databse]\nurl = \"x\"\n",
			want: []string{`config: unknown key "databse" in file FILE (did you mean "database"?)`},
		},
		{
			name: "top-level key", file: "url = \"x\"\n",
			want: []string{`config: unknown key "url" in file FILE`},
		},
		{
			name: "section not a table", file: "database = 3\n",
			want: []string{`config: "database" in file FILE: want a table ([database])`},
		},
		{
			name: "unknown env key", env: []string{"WAYPOINT_DATABSE__URL=postgres://x/y"},
			want: []string{`config: unknown key WAYPOINT_DATABSE__URL in environment (did you mean WAYPOINT_DATABASE__URL?)`},
		},
		{
			name: "single underscore env key", env: []string{"WAYPOINT_DATABASE_URL=postgres://x/y"},
			want: []string{`config: unknown key WAYPOINT_DATABASE_URL in environment`},
		},
		{
			name: "table as one variable", env: []string{"WAYPOINT_HUB__HEADERS=x"},
			want: []string{`config: unknown key WAYPOINT_HUB__HEADERS in environment (set one variable per entry: WAYPOINT_HUB__HEADERS__<NAME>)`},
		},
		{
			name: "table entry without name", env: []string{"WAYPOINT_HUB__HEADERS__=x"},
			want: []string{`config: WAYPOINT_HUB__HEADERS__ in environment: want an entry name after WAYPOINT_HUB__HEADERS__`},
		},
		{
			name: "unknown override", overrides: []Override{{Key: "sink.replica", Value: "2", Name: "--replica"}},
			want: []string{`config: unknown key "sink.replica" on the command line`},
		},
		{
			name: "malformed env integer", env: []string{"WAYPOINT_DATABASE__MAX_CONNECTIONS=abc"},
			want: []string{`config: WAYPOINT_DATABASE__MAX_CONNECTIONS="abc" in environment: want an integer`},
		},
		{
			name: "malformed env bool", env: []string{"WAYPOINT_DATABASE__WRITE_MESSAGES=yes please"},
			want: []string{`config: WAYPOINT_DATABASE__WRITE_MESSAGES="yes please" in environment: want true or false`},
		},
		{
			name: "malformed env list", env: []string{"WAYPOINT_HUB__SHARD_INDICES=1,x"},
			want: []string{`config: WAYPOINT_HUB__SHARD_INDICES="1,x" in environment: want a comma-separated list of integers from 0 to 4294967295`},
		},
		{
			name: "malformed alias", env: []string{"BACKFILL_CONCURRENCY=many"},
			want: []string{`config: BACKFILL_CONCURRENCY="many" in environment: want an integer`},
		},
		{
			name: "malformed file integer", file: "[database]\nmax_connections = \"abc\"\n",
			want: []string{`config: database.max_connections = "abc" in file FILE: want an integer`},
		},
		{
			name: "malformed file string", file: "[hub]\nnetwork = 1\n",
			want: []string{`config: hub.network = 1 in file FILE: want a string`},
		},
		{
			name: "malformed file list", file: "[hub]\nshard_indices = [-1]\n",
			want: []string{`config: hub.shard_indices in file FILE: want a list of integers from 0 to 4294967295`},
		},
		{
			name: "malformed file table", file: "[hub]\nheaders = \"x\"\n",
			want: []string{`config: hub.headers in file FILE: want a table of strings`},
		},
		{
			name: "malformed flag", overrides: []Override{{Key: "sink.replicas", Value: "two", Name: "--replicas"}},
			want: []string{`config: --replicas="two" on the command line: want an integer`},
		},
		{
			name: "toml syntax", file: "[database]\nurl = \"postgres://a:b@c/d\nmax_connections = 1\n",
			want: []string{`config: file FILE: line 2: strings cannot contain newlines`},
		},
		{
			name: "batch timeout over the sink's limit", env: []string{"WAYPOINT_SINK__BATCH_TIMEOUT_MS=5000"},
			want: []string{`config: WAYPOINT_SINK__BATCH_TIMEOUT_MS="5000" in environment: want 1..3000`},
		},
		{
			name: "partitions from file", file: "[nats]\npartitions = 0\n",
			want: []string{`config: nats.partitions = 0 in file FILE: want 1..1024`},
		},
		{
			name: "partitions from env", env: []string{"WAYPOINT_NATS__PARTITIONS=2000"},
			want: []string{`config: WAYPOINT_NATS__PARTITIONS="2000" in environment: want 1..1024`},
		},
		{
			name: "replicas from flag", overrides: []Override{{Key: "sink.replicas", Value: "0", Name: "--replicas"}},
			want: []string{`config: --replicas="0" on the command line: want 1..1024`},
		},
		{
			name: "hub receive limit", env: []string{"WAYPOINT_HUB__MAX_RECEIVE_MB=0"},
			want: []string{`config: WAYPOINT_HUB__MAX_RECEIVE_MB="0" in environment: want 1..2047`},
		},
		{
			name: "backfill page size above the node's page limit", file: "[backfill]\npage_size = 10001\n",
			want: []string{`config: backfill.page_size = 10001 in file FILE: want 1..10000`},
		},
		{
			name: "nats replicas", env: []string{"WAYPOINT_NATS__REPLICAS=0"},
			want: []string{`config: WAYPOINT_NATS__REPLICAS="0" in environment: want 1..5`},
		},
		{
			name: "validate mode", env: []string{"WAYPOINT_SINK__VALIDATE=sha"},
			want: []string{`config: WAYPOINT_SINK__VALIDATE="sha" in environment: want off, hash or full`},
		},
		{
			name: "log level alias", env: []string{"LOG_LEVEL=loud"},
			want: []string{`config: LOG_LEVEL="loud" in environment: want debug, info, warn or error`},
		},
		{
			name: "log format", file: "[log]\nformat = \"xml\"\n",
			want: []string{`config: log.format = "xml" in file FILE: want text or json`},
		},
		{
			name: "network", env: []string{"WAYPOINT_HUB__NETWORK=regtest"},
			want: []string{`config: WAYPOINT_HUB__NETWORK="regtest" in environment: want mainnet, testnet or devnet`},
		},
		{
			name: "database scheme", env: []string{"WAYPOINT_DATABASE__URL=mysql://h/db"},
			want: []string{`config: WAYPOINT_DATABASE__URL="mysql://h/db" in environment: want a URL starting with postgres:// or postgresql://`},
		},
		{
			name: "redis without host", env: []string{"WAYPOINT_REDIS__URL=redis://"},
			want: []string{`config: WAYPOINT_REDIS__URL="redis://" in environment: want a host in the URL`},
		},
		{
			name: "nats list", env: []string{"WAYPOINT_NATS__URL=nats://a:4222,http://b:4222"},
			want: []string{`config: WAYPOINT_NATS__URL="nats://a:4222,http://b:4222" in environment: want a URL starting with nats:// or tls:// or ws:// or wss://`},
		},
		{
			name: "hub url", env: []string{"WAYPOINT_HUB__URL=localhost"},
			want: []string{`config: WAYPOINT_HUB__URL="localhost" in environment: want host:port`},
		},
		{
			name: "hub url scheme", file: "[hub]\nurl = \"grpc://h:3383\"\n",
			want: []string{`config: hub.url = "grpc://h:3383" in file FILE: want host:port`},
		},
		{
			name: "metrics addr", env: []string{"WAYPOINT_METRICS__ADDR=9090"},
			want: []string{`config: WAYPOINT_METRICS__ADDR="9090" in environment: want host:port, or empty to turn metrics off`},
		},
		{
			name: "ingest from_id", env: []string{"WAYPOINT_INGEST__FROM_ID=latest"},
			want: []string{`config: WAYPOINT_INGEST__FROM_ID="latest" in environment: want live or an event id`},
		},
		{
			name: "ingest from_id flag", overrides: []Override{{Key: "ingest.from_id", Value: "-3", Name: "--from-id"}},
			want: []string{`config: --from-id="-3" on the command line: want live or an event id`},
		},
		{
			name: "negative memory limit", file: "[sink]\nmemory_limit_mb = -1\n",
			want: []string{`config: sink.memory_limit_mb = -1 in file FILE: want 0..1048576`},
		},
		{
			name: "sampler ratio", env: []string{"WAYPOINT_TRACING__SAMPLER_RATIO=1.5"},
			want: []string{`config: WAYPOINT_TRACING__SAMPLER_RATIO="1.5" in environment: want a number from 0 to 1`},
		},
		{
			name: "header name", env: []string{"WAYPOINT_HUB__HEADERS__GRPC_TIMEOUT=1"},
			want: []string{`config: WAYPOINT_HUB__HEADERS__GRPC_TIMEOUT in environment: want a header name`},
		},
		{
			name: "header name in file", file: "[hub.headers]\n\"x api\" = \"v\"\n",
			want: []string{`config: hub.headers."x api" in file FILE: want a header name`},
		},
		{
			name: "stream name", env: []string{"WAYPOINT_NATS__STREAM=a.b"},
			want: []string{`config: WAYPOINT_NATS__STREAM="a.b" in environment: want a stream name`},
		},
		{
			name: "password without user", env: []string{"WAYPOINT_NATS__PASSWORD=pw"},
			want: []string{`config: WAYPOINT_NATS__PASSWORD in environment: set nats.user too`},
		},
		{
			name: "every problem at once",
			file: "[sink]\nreplicas = 0\nbogus = 1\n",
			env:  []string{"WAYPOINT_NATS__PARTITIONS=x", "WAYPOINT_NOPE=1"},
			want: []string{
				`config: unknown key "sink.bogus" in file FILE`,
				`config: sink.replicas = 0 in file FILE: want 1..1024`,
				`config: WAYPOINT_NATS__PARTITIONS="x" in environment: want an integer`,
				`config: unknown key WAYPOINT_NOPE in environment`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := LoadOptions{Env: tt.env, Overrides: tt.overrides}
			if tt.file != "" {
				opts.File = writeFile(t, tt.file)
			}
			cfg, err := Load(opts)
			if err == nil {
				t.Fatalf("Load succeeded with %+v, want an error", cfg)
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "FILE", opts.File)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
			if n := strings.Count(err.Error(), "config: "); n != len(tt.want) {
				t.Errorf("error has %d problems, want %d:\n%v", n, len(tt.want), err)
			}
		})
	}
}

func TestReservedEnvironment(t *testing.T) {
	// Not keys, and not errors: the file to read and the test harness's
	// own settings.
	_, err := Load(LoadOptions{Env: []string{
		"WAYPOINT_CONFIG=",
		"WAYPOINT_TEST_NATS_SERVER=/usr/bin/nats-server",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4317",
	}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAcceptedValues(t *testing.T) {
	env := []string{
		"WAYPOINT_DATABASE__URL=postgresql://u:p@db.example:5432/waypoint?sslmode=require",
		"WAYPOINT_REDIS__URL=rediss://:p@cache:6380/1",
		"WAYPOINT_HUB__URL=https://hub.example.com:443",
		"WAYPOINT_NATS__URL=nats://n1:4222, nats://n2:4222,tls://n3:4222",
		"WAYPOINT_NATS__USER=u",
		"WAYPOINT_NATS__PASSWORD=p",
		"WAYPOINT_METRICS__ADDR=:9100",
		"WAYPOINT_HUB__NETWORK=devnet",
		"WAYPOINT_SINK__VALIDATE=full",
		"WAYPOINT_LOG__FORMAT=json",
	}
	cfg, err := Load(LoadOptions{Env: env})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hub.URL != "https://hub.example.com:443" || cfg.NATS.Password != "p" || cfg.Metrics.Addr != ":9100" {
		t.Fatalf("values not applied: %+v", *cfg)
	}
	for _, hub := range []string{"127.0.0.1:3383", "[::1]:3383", "hub:3383", "http://hub:3383", "https://hub"} {
		if _, err := Load(LoadOptions{Env: []string{"WAYPOINT_HUB__URL=" + hub}}); err != nil {
			t.Errorf("hub.url %q: %v", hub, err)
		}
	}
	// metrics.addr can be turned off from the file (an empty variable is unset).
	cfg, err = Load(LoadOptions{File: writeFile(t, "[metrics]\naddr = \"\"\n")})
	if err != nil || cfg.Metrics.Addr != "" {
		t.Fatalf("metrics.addr = \"\": cfg=%v err=%v", cfg, err)
	}
}

const planted = "hunter2-planted"

func secretConfig(t *testing.T) *Config {
	t.Helper()
	cfg, err := Load(LoadOptions{Env: []string{
		"WAYPOINT_DATABASE__URL=postgres://waypoint:" + planted + "@db.internal:5432/waypoint?sslmode=disable&sslpassword=" + planted,
		"WAYPOINT_REDIS__URL=redis://default:" + planted + "@cache.internal:6379/0",
		"WAYPOINT_HUB__URL=https://hubuser:" + planted + "@hub.example.com:443",
		"WAYPOINT_NATS__URL=nats://natsuser:" + planted + "@n1:4222,nats://n2:4222",
		"WAYPOINT_NATS__TOKEN=" + planted,
		"WAYPOINT_NATS__USER=natsuser",
		"WAYPOINT_NATS__PASSWORD=" + planted,
		"WAYPOINT_HUB__HEADERS__X_API_KEY=" + planted,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestRedacted(t *testing.T) {
	cfg := secretConfig(t)
	r := cfg.Redacted()
	wantFields := map[string][2]string{
		"database.url":          {r.Database.URL, "postgres://waypoint:REDACTED@db.internal:5432/waypoint?sslmode=disable&sslpassword=REDACTED"},
		"redis.url":             {r.Redis.URL, "redis://default:REDACTED@cache.internal:6379/0"},
		"hub.url":               {r.Hub.URL, "https://hubuser:REDACTED@hub.example.com:443"},
		"nats.url":              {r.NATS.URL, "nats://natsuser:REDACTED@n1:4222,nats://n2:4222"},
		"nats.token":            {r.NATS.Token, "REDACTED"},
		"nats.password":         {r.NATS.Password, "REDACTED"},
		"nats.user":             {r.NATS.User, "natsuser"},
		"hub.headers.x-api-key": {r.Hub.Headers["x-api-key"], "REDACTED"},
	}
	for k, v := range wantFields {
		if v[0] != v[1] {
			t.Errorf("redacted %s = %q, want %q", k, v[0], v[1])
		}
	}
	if cfg.NATS.Token != planted || cfg.Hub.Headers["x-api-key"] != planted {
		t.Fatal("Redacted modified the original")
	}

	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("loaded", "config", cfg)
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dumps := map[string]string{
		"String":    cfg.String(),
		"%v":        fmt.Sprintf("%v", cfg),
		"%+v value": fmt.Sprintf("%+v", *cfg),
		//lint:ignore S1025 this checks the %s verb itself, which must redact
		"%s":          fmt.Sprintf("%s", *cfg),
		"slog":        logged.String(),
		"MarshalJSON": string(js),
	}
	for name, d := range dumps {
		if strings.Contains(d, planted) {
			t.Errorf("%s leaks the secret:\n%s", name, d)
		}
		for _, keep := range []string{"db.internal", "waypoint", "natsuser", "cache.internal", "x-api-key"} {
			if !strings.Contains(d, keep) {
				t.Errorf("%s lost %q:\n%s", name, keep, d)
			}
		}
	}
	var decoded map[string]map[string]any
	if err := json.Unmarshal(js, &decoded); err != nil {
		t.Fatal(err)
	}
	if decoded["nats"]["partitions"] != float64(16) || decoded["nats"]["token"] != "REDACTED" {
		t.Fatalf("JSON dump not keyed by file names: %s", js)
	}
	if !strings.Contains(logged.String(), `"nats":{"url":"nats://natsuser:REDACTED@n1:4222,nats://n2:4222"`) {
		t.Fatalf("slog group layout unexpected: %s", logged.String())
	}
}

// TestErrorsNeverQuoteSecrets plants a password in values that are wrong in
// different ways and checks the error names the key but not the password.
func TestErrorsNeverQuoteSecrets(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  []string
		key  string
	}{
		{name: "unparsable URL", env: []string{"WAYPOINT_DATABASE__URL=postgres://u:" + planted + "%zz@h/db"}, key: "WAYPOINT_DATABASE__URL"},
		{name: "wrong scheme", env: []string{"WAYPOINT_DATABASE__URL=mysql://u:" + planted + "@h/db"}, key: `WAYPOINT_DATABASE__URL="mysql://u:REDACTED@h/db"`},
		{name: "unparsable URL in file", file: "[redis]\nurl = \"redis://u:" + planted + "%zz@h\"\n", key: "redis.url in file"},
		{name: "bad URL in list", env: []string{"WAYPOINT_NATS__URL=nats://u:" + planted + "@a,http://b"}, key: `WAYPOINT_NATS__URL="nats://u:REDACTED@a,http://b"`},
		{name: "host:port with credentials", env: []string{"WAYPOINT_HUB__URL=u:" + planted + "@hub"}, key: "WAYPOINT_HUB__URL in environment"},
		{name: "password without user", env: []string{"WAYPOINT_NATS__PASSWORD=" + planted}, key: "WAYPOINT_NATS__PASSWORD in environment"},
		{name: "token in file", file: "[nats]\ntoken = 5\n", key: "nats.token in file"},
		{name: "password in file of wrong type", file: "[nats]\npassword = [\"" + planted + "\"]\n", key: "nats.password in file"},
		{name: "bad header name", env: []string{"WAYPOINT_HUB__HEADERS__GRPC_X=" + planted}, key: "WAYPOINT_HUB__HEADERS__GRPC_X"},
		{name: "header value of wrong type", file: "[hub.headers]\nx = [\"" + planted + "\"]\n", key: `hub.headers."x" in file`},
		{name: "toml syntax after a secret", file: "[database]\nurl = \"postgres://u:" + planted + "@h/db\" junk\n", key: "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := LoadOptions{Env: tt.env}
			if tt.file != "" {
				opts.File = writeFile(t, tt.file)
			}
			_, err := Load(opts)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.key) {
				t.Errorf("error does not name %s:\n%s", tt.key, msg)
			}
			if strings.Contains(msg, planted) {
				t.Errorf("error quotes the secret:\n%s", msg)
			}
		})
	}
}

func TestRequire(t *testing.T) {
	cfg := Default()
	err := cfg.Require("database.url", "redis.url", "hub.url")
	if err == nil {
		t.Fatal("Require passed with database.url and redis.url unset")
	}
	for _, w := range []string{
		"config: database.url is not set: set database.url in the config file or WAYPOINT_DATABASE__URL in the environment",
		"config: redis.url is not set",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "hub.url") {
		t.Errorf("hub.url has a default but was reported: %v", err)
	}
	cfg.Database.URL = "postgres://h/db"
	cfg.Redis.URL = "redis://h"
	if err := cfg.Require("database.url", "redis.url"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Require("database.uri"); err == nil || !strings.Contains(err.Error(), `unknown key "database.uri"`) {
		t.Fatalf("unknown key: %v", err)
	}
}

// TestDumpLoadsBack checks that the TOML the status command prints is a
// valid config file that reproduces the configuration.
func TestDumpLoadsBack(t *testing.T) {
	cfg := Default()
	cfg.Database.URL = "postgres://u:p@h/db"
	cfg.Hub.ShardIndices = []uint32{1, 2}
	cfg.Hub.Headers = map[string]string{"x-api-key": "k", "x-other": "o"}
	cfg.NATS.Partitions = 64
	cfg.Database.WriteMessages = false
	cfg.Log.Format = "json"
	b, err := encodeTOML(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Load(LoadOptions{File: writeFile(t, string(b))})
	if err != nil {
		t.Fatalf("load dump:\n%s\n%v", b, err)
	}
	if !reflect.DeepEqual(*got, cfg) {
		t.Fatalf("round trip:\n got %+v\nwant %+v\ndump:\n%s", *got, cfg, b)
	}
	// The redacted dump must load too (status --config-dump > file).
	if _, err := Load(LoadOptions{File: writeFile(t, cfg.String())}); err != nil {
		t.Fatalf("redacted dump does not load: %v\n%s", err, cfg.String())
	}
}

func TestKeys(t *testing.T) {
	byEnv := map[string]Key{}
	for _, k := range Keys() {
		byEnv[k.Env] = k
	}
	// The names the documentation and docker-compose.yml use.
	for env, name := range map[string]string{
		"WAYPOINT_DATABASE__URL":             "database.url",
		"WAYPOINT_DATABASE__MAX_CONNECTIONS": "database.max_connections",
		"WAYPOINT_DATABASE__TIMEOUT_SECONDS": "database.timeout_seconds",
		"WAYPOINT_REDIS__URL":                "redis.url",
		"WAYPOINT_HUB__URL":                  "hub.url",
		"WAYPOINT_HUB__HEADERS__":            "hub.headers",
		"WAYPOINT_NATS__URL":                 "nats.url",
		"WAYPOINT_NATS__STORE_DIR":           "nats.store_dir",
		"WAYPOINT_LOG__LEVEL":                "log.level",
		"WAYPOINT_SINK__BATCH_TIMEOUT_MS":    "sink.batch_timeout_ms",
		"WAYPOINT_BACKFILL__CONCURRENCY":     "backfill.concurrency",
	} {
		if byEnv[env].Name != name {
			t.Errorf("%s maps to %q, want %q", env, byEnv[env].Name, name)
		}
	}
	if !byEnv["WAYPOINT_HUB__HEADERS__"].Table {
		t.Error("hub.headers not marked as a table")
	}
	if a := byEnv["WAYPOINT_LOG__LEVEL"].Aliases; !reflect.DeepEqual(a, []string{"LOG_LEVEL"}) {
		t.Errorf("log.level aliases = %v", a)
	}
	if a := byEnv["WAYPOINT_BACKFILL__CONCURRENCY"].Aliases; !reflect.DeepEqual(a, []string{"BACKFILL_CONCURRENCY"}) {
		t.Errorf("backfill.concurrency aliases = %v", a)
	}
	// Every non-table key can be set from the environment: its type has a
	// parser.
	d := Default()
	dv := reflect.ValueOf(d)
	for _, f := range fields() {
		if f.isTable() {
			continue
		}
		text := fmt.Sprint(dv.FieldByIndex(f.index).Interface())
		if f.typ.Kind() == reflect.Slice {
			text = "1,2"
		}
		if _, problem := fromText(f.typ, text); problem != "" {
			t.Errorf("%s: cannot parse %q: %s", f.key, text, problem)
		}
	}
}

// TestOtherWaypointVariables: variables with the WAYPOINT_ prefix that are
// not keys (telemetry's force list, the services script's ports, the
// benchmarks' and the fault suite's settings) load with the configuration
// instead of failing it as misspelt keys, while a misspelt key still fails.
func TestOtherWaypointVariables(t *testing.T) {
	others := []string{
		"WAYPOINT_TRACE_FORCE=fid:5", "WAYPOINT_PG_PORT=55433", "WAYPOINT_REDIS_PORT=56380",
		"WAYPOINT_CACHE_DIR=/tmp/x", "WAYPOINT_DEBIAN_MIRROR=http://m", "WAYPOINT_NATS_PASSWORD=p",
		"WAYPOINT_JAEGER_UI_ASSETS=/srv/ui", "WAYPOINT_BENCH_ROUNDS=3", "WAYPOINT_FAULTS_ROLE=sink",
		"WAYPOINT_TEST_PG_URL=postgres://x/y",
	}
	got, err := Load(LoadOptions{Env: others})
	if err != nil {
		t.Fatalf("Load with non-key WAYPOINT_ variables: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(*got, want) {
		t.Errorf("non-key variables changed the configuration: %+v", *got)
	}
	_, err = Load(LoadOptions{Env: append(others, "WAYPOINT_TRACE_FORCED=fid:5")})
	if err == nil || !strings.Contains(err.Error(), "unknown key WAYPOINT_TRACE_FORCED") {
		t.Errorf("a misspelt variable loaded: %v", err)
	}
}
