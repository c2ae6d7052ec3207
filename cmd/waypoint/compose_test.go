package main

import (
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
	"gopkg.in/yaml.v3"

	"github.com/waypointhq/waypoint/config"
)

const repoRoot = "../.."

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]any    `yaml:"depends_on"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	Profiles    []string          `yaml:"profiles"`
	Healthcheck map[string]any    `yaml:"healthcheck"`
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(false) // x- extensions and keys this test does not check
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("parse docker-compose.yml: %v", err)
	}
	return f
}

var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}`)

// interpolate resolves ${NAME:-default} the way compose does with NAME
// unset; a variable without a default would make the file depend on the
// shell, so it is an error.
func interpolate(s string) (string, []string, error) {
	var names []string
	var err error
	out := interpolation.ReplaceAllStringFunc(s, func(m string) string {
		sub := interpolation.FindStringSubmatch(m)
		names = append(names, sub[1])
		if sub[2] == "" {
			err = fmt.Errorf("${%s} has no default", sub[1])
		}
		return sub[3]
	})
	if err == nil && strings.Contains(out, "$") {
		err = fmt.Errorf("%q: unsupported interpolation", s)
	}
	return out, names, err
}

func isWaypointService(s composeService) bool {
	return s.Build != nil && s.Build.Dockerfile == "deploy/Dockerfile"
}

func TestComposeServices(t *testing.T) {
	f := loadCompose(t)
	infra := map[string]struct {
		image string
		args  []string
		ports []string
	}{
		"postgres": {image: "pgvector/pgvector:pg17"},
		"redis":    {image: "redis:7", args: []string{"--appendonly", "yes"}},
		"nats":     {image: "nats:2.11", args: []string{"-js", "-sd", "/data"}},
		"jaeger":   {image: "jaegertracing/jaeger:2.", ports: []string{":16686", ":4317", ":4318"}},
	}
	for name, want := range infra {
		s, ok := f.Services[name]
		if !ok {
			t.Errorf("service %s missing", name)
			continue
		}
		if !strings.HasPrefix(s.Image, want.image) {
			t.Errorf("%s image %q, want %s", name, s.Image, want.image)
		}
		cmd := strings.Join(s.Command, " ")
		if a := strings.Join(want.args, " "); !strings.Contains(cmd, a) {
			t.Errorf("%s command %q lacks %q", name, cmd, a)
		}
		for _, p := range want.ports {
			if !slices.ContainsFunc(s.Ports, func(q string) bool { return strings.HasSuffix(q, p) }) {
				t.Errorf("%s does not publish %s: %v", name, p, s.Ports)
			}
		}
	}
	for _, name := range []string{"postgres", "redis"} {
		// The writers wait for these with condition: service_healthy.
		if f.Services[name].Healthcheck["test"] == nil {
			t.Errorf("%s has no healthcheck", name)
		}
	}

	wantCmd := map[string]string{
		"waypoint-ingest":   "ingest",
		"waypoint-sink":     "sink --replicas 2",
		"waypoint-backfill": "backfill worker",
	}
	for name, cmd := range wantCmd {
		s := f.Services[name]
		if !isWaypointService(s) {
			t.Errorf("%s is not built from deploy/Dockerfile", name)
		}
		if got := strings.Join(s.Command, " "); got != cmd {
			t.Errorf("%s command %q, want %q", name, got, cmd)
		}
	}

	for name, s := range f.Services {
		for dep := range s.DependsOn {
			if _, ok := f.Services[dep]; !ok {
				t.Errorf("%s depends on unknown service %s", name, dep)
			}
		}
		for _, v := range s.Volumes {
			vol, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(vol, ".") && !strings.HasPrefix(vol, "/") {
				if _, ok := f.Volumes[vol]; !ok {
					t.Errorf("%s mounts undeclared volume %s", name, vol)
				}
			}
		}
	}
}

// TestComposeWaypointServices checks every service built from
// deploy/Dockerfile against the real CLI and configuration: its command
// parses to a runnable command, each WAYPOINT_* variable is a key, the
// whole environment loads, and the URLs point at services of the file.
func TestComposeWaypointServices(t *testing.T) {
	f := loadCompose(t)
	keys := config.Keys()
	isKey := func(name string) bool {
		for _, k := range keys {
			if name == k.Env || k.Table && strings.HasPrefix(name, k.Env) || slices.Contains(k.Aliases, name) {
				return true
			}
		}
		return false
	}
	n := 0
	for name, s := range f.Services {
		if !isWaypointService(s) {
			if strings.HasPrefix(name, "waypoint") {
				t.Errorf("%s is not built from deploy/Dockerfile", name)
			}
			continue
		}
		n++
		t.Run(name, func(t *testing.T) {
			if len(s.Command) == 0 {
				t.Fatal("no command (the image's default only prints help)")
			}
			var c cli
			exited := false
			k, err := newParser(&c, io.Discard, io.Discard, func(int) { exited = true })
			if err != nil {
				t.Fatal(err)
			}
			kctx, err := k.Parse(s.Command)
			if err != nil || exited {
				t.Fatalf("command %q is not valid for waypoint: %v", s.Command, err)
			}
			if sel := kctx.Selected(); sel == nil || slices.ContainsFunc(sel.Children, func(n *kong.Node) bool { return n.Type == kong.CommandNode }) {
				t.Fatalf("command %q does not select a runnable command", s.Command)
			}

			var env []string
			for k, v := range s.Environment {
				resolved, vars, err := interpolate(v)
				if err != nil {
					t.Errorf("%s: %v", k, err)
				}
				for _, name := range vars {
					if strings.HasPrefix(name, "WAYPOINT_") && !isKey(name) {
						t.Errorf("%s reads ${%s}, which is not a config key", k, name)
					}
				}
				switch {
				case strings.HasPrefix(k, "WAYPOINT_"):
					if !isKey(k) {
						t.Errorf("%s is not a config key", k)
					}
				case strings.HasPrefix(k, "OTEL_"): // standard OpenTelemetry SDK settings
				default:
					t.Errorf("%s is neither a WAYPOINT_ key nor an OTEL_ setting", k)
				}
				env = append(env, k+"="+resolved)
			}
			cfg, err := loadConfig(kctx, "", env)
			if err != nil {
				t.Fatalf("configuration does not load:\n%v", err)
			}

			hosts := map[string]string{"database.url": cfg.Database.URL, "redis.url": cfg.Redis.URL, "hub.url": cfg.Hub.URL}
			for i, u := range strings.Split(cfg.NATS.URL, ",") {
				hosts[fmt.Sprintf("nats.url[%d]", i)] = u
			}
			if _, ok := s.Environment["WAYPOINT_HUB__URL"]; !ok {
				delete(hosts, "hub.url") // the devnet serves rather than dials
			}
			for key, raw := range hosts {
				if raw == "" {
					continue
				}
				host := ""
				if u, err := url.Parse(raw); err == nil && u.Host != "" {
					host = u.Hostname()
				} else if h, _, err := net.SplitHostPort(raw); err == nil {
					host = h
				}
				if _, ok := f.Services[host]; !ok {
					t.Errorf("%s = %q: host %q is not a service of docker-compose.yml", key, raw, host)
				}
			}
		})
	}
	if n < 3 {
		t.Fatalf("found %d waypoint services, want at least ingest, sink and backfill", n)
	}
}

func TestDockerfile(t *testing.T) {
	df := mustRead(t, "deploy/Dockerfile")
	gomod := mustRead(t, "go.mod")
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	for _, want := range []string{
		"FROM golang:" + m[1] + " AS build",
		"CGO_ENABLED=0",
		"-trimpath",
		"./cmd/waypoint",
		"-X main.version=",
		"-X main.commit=",
		"FROM gcr.io/distroless/static-debian12:nonroot",
		"USER nonroot",
		`ENTRYPOINT ["/usr/local/bin/waypoint"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("deploy/Dockerfile lacks %q", want)
		}
	}
}

func mustRead(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestInterpolate(t *testing.T) {
	tests := []struct {
		in, want string
		vars     []string
		bad      bool
	}{
		{in: "plain", want: "plain"},
		{in: "${A:-x}", want: "x", vars: []string{"A"}},
		{in: "nats://${H-n}:4222", want: "nats://n:4222", vars: []string{"H"}},
		{in: "${A}", bad: true, vars: []string{"A"}},
		{in: "$A", bad: true},
	}
	for _, tt := range tests {
		got, vars, err := interpolate(tt.in)
		if (err != nil) != tt.bad || (!tt.bad && got != tt.want) || !slices.Equal(vars, tt.vars) {
			t.Errorf("interpolate(%q) = %q, %v, %v", tt.in, got, vars, err)
		}
	}
}
