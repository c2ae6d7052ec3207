package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/waypointhq/waypoint/config"
)

type statusCmd struct {
	JSON       bool `name:"json" help:"Print JSON instead of text."`
	ConfigDump bool `name:"config-dump" help:"Print the effective configuration, secrets redacted, and exit."`
}

func (statusCmd) Help() string {
	return `Shows each shard's last ingested event, the stream's backlog and the sink's progress. With --config-dump it prints the configuration that defaults, file, environment and flags add up to, with passwords, tokens and header values replaced by REDACTED; the text form is a valid config file.

Example:

    waypoint status --config-dump --json`
}

func (c *statusCmd) Run(ctx context.Context, cfg *config.Config, out io.Writer) error {
	if !c.ConfigDump {
		return notImplemented("status")
	}
	if c.JSON {
		// MarshalJSON redacts.
		b, err := json.MarshalIndent(cfg, "", "  ")
		if err != nil {
			return fmt.Errorf("encode configuration: %w", err)
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	_, err := io.WriteString(out, cfg.String())
	return err
}

// version and commit can be set at link time
// (-ldflags "-X main.version=v1.2.3 -X main.commit=abc123") by builds
// without VCS information, such as the Docker image; otherwise they come
// from the module's build information.
var (
	version = ""
	commit  = ""
)

type versionCmd struct{}

func (versionCmd) Help() string { return "Example:\n\n    waypoint version" }

func (*versionCmd) Run(out io.Writer) error {
	v, rev, built, modified := version, commit, "", false
	if info, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = info.Main.Version
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if rev == "" {
					rev = s.Value
				}
			case "vcs.time":
				built = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	if rev == "" {
		rev = "unknown"
	}
	if modified {
		rev += " (modified)"
	}
	if built != "" {
		rev += " " + built
	}
	_, err := fmt.Fprintf(out, "waypoint %s\ncommit %s\n%s %s/%s\n", v, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}
