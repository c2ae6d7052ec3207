package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"

	"github.com/alecthomas/kong"

	"github.com/waypointhq/waypoint/config"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitConfig  = 78 // EX_CONFIG from sysexits.h
	exitUsage   = 80 // what kong uses for a bad command line
)

// run parses args, loads the configuration when the chosen command needs
// it, and runs the command; it returns the process's exit code. Everything
// the process depends on comes in as arguments so that tests run the real
// CLI in-process.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	var c cli
	exited, exitCode := false, exitOK
	parser, err := newParser(&c, stdout, stderr, func(code int) { exited, exitCode = true, code })
	if err != nil {
		fmt.Fprintf(stderr, "waypoint: build command line: %v\n", err)
		return exitFailure
	}
	if len(args) == 0 {
		args = []string{"--help"}
	}
	kctx, err := parser.Parse(args)
	if exited {
		// --help printed and asked to exit; kong then keeps parsing, so
		// whatever it reports after that is moot.
		return exitCode
	}
	if err != nil {
		help := "waypoint"
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil && pe.Context.Selected() != nil {
			help = pe.Context.Selected().FullPath()
		}
		fmt.Fprintf(stderr, "waypoint: %v\n", err)
		fmt.Fprintf(stderr, "Run \"%s --help\" for usage.\n", help)
		return exitUsage
	}

	kctx.BindTo(ctx, (*context.Context)(nil))
	kctx.BindTo(stdout, (*io.Writer)(nil))
	// Providers run only for commands whose Run asks for the value, so
	// "waypoint version" works whatever state the configuration is in.
	err = kctx.BindSingletonProvider(func() (*config.Config, error) {
		cfg, err := loadConfig(kctx, c.Config, env)
		if err != nil {
			return nil, configError{err}
		}
		return cfg, nil
	})
	if err == nil {
		err = kctx.BindSingletonProvider(func(cfg *config.Config) *slog.Logger {
			return newLogger(stderr, cfg.Log)
		})
	}
	if err != nil {
		fmt.Fprintf(stderr, "waypoint: bind: %v\n", err)
		return exitFailure
	}

	if err := kctx.Run(); err != nil {
		return report(stderr, commandPath(kctx), err)
	}
	return exitOK
}

func newParser(c *cli, stdout, stderr io.Writer, exit func(int)) (*kong.Kong, error) {
	return kong.New(c,
		kong.Name("waypoint"),
		kong.Description("Keeps a Postgres database in sync with the Farcaster network's Snapchain nodes."),
		kong.Writers(stdout, stderr),
		kong.Exit(exit),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
}

// loadConfig reads the configuration with the command line's explicitly
// given flags on top. A flag that maps to a key carries a `config:"key"`
// tag and is a pointer, nil unless the user gave it, so a flag's default
// never hides the file or the environment.
func loadConfig(kctx *kong.Context, file string, env []string) (*config.Config, error) {
	var overrides []config.Override
	for _, f := range kctx.Flags() {
		key := f.Tag.Get("config")
		if key == "" || f.Target.Kind() != reflect.Pointer || f.Target.IsNil() {
			continue
		}
		overrides = append(overrides, config.Override{
			Key:   key,
			Value: fmt.Sprint(f.Target.Elem().Interface()),
			Name:  "--" + f.Name,
		})
	}
	return config.Load(config.LoadOptions{File: file, Env: env, Overrides: overrides})
}

func newLogger(w io.Writer, c config.Log) *slog.Logger {
	var level slog.Level
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// configError marks a configuration that failed to load.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }
func (configError) ExitCode() int   { return exitConfig }

// usageError is a command-line mistake found after parsing.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }
func (usageError) ExitCode() int   { return exitUsage }

// report prints err for the command at path and returns the exit code.
func report(w io.Writer, path string, err error) int {
	var ce configError
	switch {
	case errors.As(err, &ce):
		fmt.Fprintf(w, "%s: invalid configuration:\n", path)
		for _, line := range strings.Split(ce.Error(), "\n") {
			fmt.Fprintf(w, "  %s\n", line)
		}
	default:
		fmt.Fprintf(w, "%s: %v\n", path, err)
	}
	var coder kong.ExitCoder
	if errors.As(err, &coder) {
		return coder.ExitCode()
	}
	return exitFailure
}

// commandPath is "waypoint backfill enqueue" for the chosen command.
func commandPath(kctx *kong.Context) string {
	parts := []string{"waypoint"}
	for _, p := range kctx.Path {
		// A default subcommand (sink's run) is named as its parent, the
		// way it is usually typed.
		if p.Command != nil && p.Command.Tag.Default == "" {
			parts = append(parts, p.Command.Name)
		}
	}
	return strings.Join(parts, " ")
}
