package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/waypointhq/waypoint/config"
)

// runCLI runs the real command line in-process.
func runCLI(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, env, &out, &errb)
	return code, out.String(), errb.String()
}

// leafCommands are the commands the documentation promises.
var leafCommands = []string{
	"start", "ingest", "sink run", "sink dlq list", "sink dlq replay",
	"backfill enqueue", "backfill worker", "backfill status", "backfill retry-failed",
	"migrate up", "migrate status", "devnet", "status", "search", "trace", "version",
}

func model(t *testing.T) *kong.Kong {
	t.Helper()
	k, err := newParser(&cli{}, io.Discard, io.Discard, func(int) {})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// commandPaths lists every command node, branches included, as the words
// after "waypoint".
func commandPaths(n *kong.Node) []string {
	var out []string
	for _, c := range n.Children {
		if c.Type != kong.CommandNode || c.Hidden {
			continue
		}
		path := strings.TrimPrefix(c.FullPath(), "waypoint ")
		out = append(out, path)
		out = append(out, commandPaths(c)...)
	}
	return out
}

func TestTopLevelHelp(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "--help")
	if code != exitOK {
		t.Fatalf("--help exit %d, stderr %s", code, errOut)
	}
	for _, c := range leafCommands {
		if !strings.Contains(out, "\n  "+c+" ") {
			t.Errorf("--help does not list %q:\n%s", c, out)
		}
	}
	for _, f := range []string{"--config=FILE", "--database-url=URL", "--redis-url=URL", "--hub-url=ADDR", "--nats-url=URL", "--log-level=LEVEL", "WAYPOINT_CONFIG"} {
		if !strings.Contains(out, f) {
			t.Errorf("--help does not show %s", f)
		}
	}
	// No arguments at all prints the same overview and succeeds.
	if code, out2, _ := runCLI(t, nil); code != exitOK || out2 != out {
		t.Errorf("waypoint with no arguments: exit %d, output differs from --help:\n%s", code, out2)
	}
}

func TestCommandHelp(t *testing.T) {
	paths := commandPaths(model(t).Model.Node)
	var leaves []string
	for _, p := range paths {
		if !slices.ContainsFunc(paths, func(q string) bool { return strings.HasPrefix(q, p+" ") }) {
			leaves = append(leaves, p)
		}
	}
	slices.Sort(leaves)
	want := slices.Clone(leafCommands)
	slices.Sort(want)
	if !slices.Equal(leaves, want) {
		t.Fatalf("commands = %v, want %v", leaves, want)
	}
	for _, p := range paths {
		t.Run(p, func(t *testing.T) {
			args := append(strings.Fields(p), "--help")
			code, out, errOut := runCLI(t, nil, args...)
			if code != exitOK {
				t.Fatalf("exit %d, stderr %s", code, errOut)
			}
			if !strings.Contains(out, "Usage: waypoint "+p) {
				t.Errorf("help lacks the usage line:\n%s", out)
			}
			if !strings.Contains(out, "Example:\n\n    waypoint "+strings.Fields(p)[0]) {
				t.Errorf("help has no example of waypoint %s:\n%s", p, out)
			}
		})
	}
}

func TestCommandFlagsInHelp(t *testing.T) {
	tests := map[string][]string{
		"sink":             {"--replicas=N", "--batch-size=N"},
		"start":            {"--replicas=N", "--batch-size=N"},
		"backfill enqueue": {"--fids=FID,...", "--max-fid=N", "--all", "--batch-size=N", "--user-data-only", "--types=TYPE,...", "--priority", "--reconcile"},
		"backfill worker":  {"--concurrency=N"},
		"backfill status":  {"--watch"},
		"devnet":           {"--listen=ADDR", "--shards=N", "--seed=N", "--fids=N", "--rate=PER-SECOND", "--duration=0s", "--preload=N", "--block-interval=1s", "--retention=72h", "--dump-state=FILE", "--drop-every=N", "--unavailable-every=N", "--stall-every=DURATION", "127.0.0.1:3383)", "(default: 100)"},
		"status":           {"--json", "--config-dump"},
		"search":           {"<query>", "--limit=N", "(default: 10)"},
		"trace":            {"<hash>"},
	}
	for cmd, flags := range tests {
		_, out, _ := runCLI(t, nil, append(strings.Fields(cmd), "--help")...)
		for _, f := range flags {
			if !strings.Contains(out, f) {
				t.Errorf("waypoint %s --help lacks %s:\n%s", cmd, f, out)
			}
		}
	}
}

func TestBadConfig(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("[database]\nur = \"postgres://x/y\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  []string
		args []string
		cmd  string
		want string
	}{
		{"unknown env key", []string{"WAYPOINT_DATABSE__URL=postgres://x/y"}, []string{"ingest"}, "ingest", "config: unknown key WAYPOINT_DATABSE__URL in environment"},
		{"unknown file key", nil, []string{"--config", bad, "sink"}, "sink", `config: unknown key "database.ur" in file ` + bad},
		{"file from WAYPOINT_CONFIG", []string{"WAYPOINT_CONFIG=" + bad}, []string{"status", "--config-dump"}, "status", `config: unknown key "database.ur" in file ` + bad},
		{"malformed env", []string{"WAYPOINT_NATS__PARTITIONS=lots"}, []string{"start"}, "start", `config: WAYPOINT_NATS__PARTITIONS="lots" in environment: want an integer`},
		{"flag out of range", nil, []string{"sink", "--replicas", "0"}, "sink", `config: --replicas="0" on the command line: want 1..1024`},
		{"global flag", nil, []string{"--log-level", "loud", "devnet"}, "devnet", `config: --log-level="loud" on the command line: want debug, info, warn or error`},
		{"missing file", nil, []string{"--config", filepath.Join(t.TempDir(), "nope.toml"), "ingest"}, "ingest", "nope.toml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tt.env, tt.args...)
			if code != exitConfig {
				t.Fatalf("exit %d, want %d; stderr %s", code, exitConfig, errOut)
			}
			if !strings.Contains(errOut, tt.want) {
				t.Fatalf("stderr does not contain %q:\n%s", tt.want, errOut)
			}
			if !strings.HasPrefix(errOut, "waypoint "+tt.cmd+": invalid configuration:\n  config: ") {
				t.Fatalf("stderr does not start with the command:\n%s", errOut)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	// A broken configuration does not stop version: it needs none.
	code, out, errOut := runCLI(t, []string{"WAYPOINT_NOPE=1"}, "version")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "waypoint ") || !strings.HasPrefix(lines[1], "commit ") || !strings.HasPrefix(lines[2], "go1.") {
		t.Fatalf("version output:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bogus"}, "unexpected argument bogus"},
		{[]string{"sink", "--bogus"}, "unknown flag --bogus"},
		{[]string{"sink", "--replicas", "two"}, "--replicas"},
		{[]string{"backfill"}, "expected one of"},
		{[]string{"backfill", "enqueue"}, "say which FIDs: --fids, --max-fid or --all"},
		{[]string{"sink", "dlq", "replay"}, "say which entries: --id or --all"},
		{[]string{"backfill", "enqueue", "--all", "--fids", "1"}, "can't be used together"},
		{[]string{"backfill", "enqueue", "--all", "--types", "casts,bogus"}, `but got "bogus"`},
		{[]string{"trace", "xyz"}, `"xyz" is not a message hash`},
		{[]string{"trace", "0x8f3a54f0b7c8e2d1a9f06b3c4d5e6f708192a3"}, "want 40 hex digits"},
		{[]string{"search"}, `expected "<query>"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errOut := runCLI(t, nil, tt.args...)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr %s", code, exitUsage, errOut)
			}
			if !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "--help\" for usage") {
				t.Fatalf("stderr lacks %q and the help hint:\n%s", tt.want, errOut)
			}
		})
	}
}

func TestConfigDump(t *testing.T) {
	const secret = "s3cret-planted"
	env := []string{
		"WAYPOINT_DATABASE__URL=postgres://waypoint:" + secret + "@env-host/waypoint",
		"WAYPOINT_REDIS__URL=redis://:" + secret + "@cache:6379/0",
		"WAYPOINT_LOG__LEVEL=warn",
		"WAYPOINT_HUB__HEADERS__X_API_KEY=" + secret,
		"WAYPOINT_SINK__REPLICAS=3",
	}
	code, out, errOut := runCLI(t, env, "--log-level", "debug", "--hub-url", "https://hub.example:443", "status", "--config-dump")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	if strings.Contains(out, secret) || strings.Contains(errOut, secret) {
		t.Fatalf("dump leaks the secret:\n%s", out)
	}
	for _, w := range []string{
		`url = "postgres://waypoint:REDACTED@env-host/waypoint"`,
		`url = "redis://:REDACTED@cache:6379/0"`,
		`url = "https://hub.example:443"`, // flag
		`level = "debug"`,                 // flag beats environment
		`replicas = 3`,                    // environment beats default
		`x-api-key = "REDACTED"`,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("dump lacks %s:\n%s", w, out)
		}
	}

	code, out, errOut = runCLI(t, env, "status", "--config-dump", "--json")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	var got map[string]map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	if got["log"]["level"] != "warn" || got["sink"]["replicas"] != float64(3) || got["database"]["url"] != "postgres://waypoint:REDACTED@env-host/waypoint" {
		t.Fatalf("JSON dump: %v", got)
	}
	if strings.Contains(out, secret) {
		t.Fatalf("JSON dump leaks the secret:\n%s", out)
	}
}

// TestFlagOverrides checks that only flags the user gave override, so a
// flag's absence never resets what the file or environment set.
func TestFlagOverrides(t *testing.T) {
	file := filepath.Join(t.TempDir(), "w.toml")
	if err := os.WriteFile(file, []byte("[sink]\nreplicas = 2\nbatch_size = 500\n[backfill]\nbatch_size = 25\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args            []string
		env             []string
		replicas, batch int
		backfillBatch   int
		concurrency     int
		databaseURL     string
	}{
		{args: []string{"sink"}, replicas: 2, batch: 500, backfillBatch: 25, concurrency: 50},
		{args: []string{"sink"}, env: []string{"WAYPOINT_SINK__REPLICAS=3"}, replicas: 3, batch: 500, backfillBatch: 25, concurrency: 50},
		{args: []string{"sink", "--replicas", "4"}, env: []string{"WAYPOINT_SINK__REPLICAS=3"}, replicas: 4, batch: 500, backfillBatch: 25, concurrency: 50},
		{args: []string{"start", "--batch-size", "64"}, replicas: 2, batch: 64, backfillBatch: 25, concurrency: 50},
		{args: []string{"backfill", "enqueue", "--all", "--batch-size", "10"}, replicas: 2, batch: 500, backfillBatch: 10, concurrency: 50},
		{args: []string{"backfill", "worker", "--concurrency", "8"}, env: []string{"BACKFILL_CONCURRENCY=7"}, replicas: 2, batch: 500, backfillBatch: 25, concurrency: 8},
		{args: []string{"backfill", "worker"}, env: []string{"BACKFILL_CONCURRENCY=7"}, replicas: 2, batch: 500, backfillBatch: 25, concurrency: 7},
		{args: []string{"--database-url", "postgres://flag/db", "migrate", "up"}, env: []string{"WAYPOINT_DATABASE__URL=postgres://env/db"}, replicas: 2, batch: 500, backfillBatch: 25, concurrency: 50, databaseURL: "postgres://flag/db"},
		{args: []string{"migrate", "up", "--database-url="}, env: []string{"WAYPOINT_DATABASE__URL=postgres://env/db"}, replicas: 2, batch: 500, backfillBatch: 25, concurrency: 50, databaseURL: ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var c cli
			k, err := newParser(&c, io.Discard, io.Discard, func(int) {})
			if err != nil {
				t.Fatal(err)
			}
			kctx, err := k.Parse(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := loadConfig(kctx, file, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Sink.Replicas != tt.replicas || cfg.Sink.BatchSize != tt.batch || cfg.Backfill.BatchSize != tt.backfillBatch ||
				cfg.Backfill.Concurrency != tt.concurrency || cfg.Database.URL != tt.databaseURL {
				t.Fatalf("got replicas=%d batch=%d backfill.batch=%d concurrency=%d url=%q", cfg.Sink.Replicas, cfg.Sink.BatchSize,
					cfg.Backfill.BatchSize, cfg.Backfill.Concurrency, cfg.Database.URL)
			}
		})
	}
}

// TestConfigFlagsAreKeys walks every flag of the CLI: each `config` tag
// names a real key and sits on a pointer field (else an unset flag's zero
// value would override the file and environment).
func TestConfigFlagsAreKeys(t *testing.T) {
	keys := map[string]bool{}
	for _, k := range config.Keys() {
		keys[k.Name] = true
	}
	n := 0
	var walk func(node *kong.Node)
	walk = func(node *kong.Node) {
		for _, f := range node.Flags {
			key := f.Tag.Get("config")
			if key == "" {
				continue
			}
			n++
			if !keys[key] {
				t.Errorf("flag --%s of %s maps to unknown key %q", f.Name, node.FullPath(), key)
			}
			if f.Target.Kind() != reflect.Pointer {
				t.Errorf("flag --%s maps to %s but is not a pointer", f.Name, key)
			}
			if f.HasDefault {
				t.Errorf("flag --%s maps to %s but has a default, which would hide config", f.Name, key)
			}
		}
		for _, c := range node.Children {
			walk(c)
		}
	}
	walk(model(t).Model.Node)
	if n < 10 {
		t.Fatalf("found %d config flags, want the globals and per-command ones", n)
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(&buf, config.Log{Level: "warn", Format: "json"})
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON record: %v\n%s", err, buf.String())
	}
	if rec["msg"] != "shown" || rec["level"] != "WARN" {
		t.Fatalf("record %v", rec)
	}
	buf.Reset()
	log = newLogger(&buf, config.Log{Level: "debug", Format: "text"})
	log.Debug("details")
	if !strings.Contains(buf.String(), "level=DEBUG msg=details") {
		t.Fatalf("text debug record: %q", buf.String())
	}
}
