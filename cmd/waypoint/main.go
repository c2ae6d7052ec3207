// Command waypoint keeps a Postgres database in sync with the Farcaster
// network's Snapchain nodes. Run "waypoint --help" for its commands.
//
// Exit codes: 0 success, 1 failure at run time, 78 invalid configuration,
// 80 invalid command line.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
