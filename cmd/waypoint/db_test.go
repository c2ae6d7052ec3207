package main

import (
	"strings"
	"testing"

	"github.com/waypointhq/waypoint/internal/testsupport"
)

func TestMigrateCommands(t *testing.T) {
	env := []string{"WAYPOINT_DATABASE__URL=" + testsupport.PostgresURL(t)}

	code, out, errOut := runCLI(t, env, "migrate", "status")
	if code != exitOK || !strings.Contains(out, "pending") {
		t.Fatalf("migrate status on an empty database: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, env, "migrate", "up")
	if code != exitOK || !strings.Contains(out, "applied 0001") {
		t.Fatalf("migrate up: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = runCLI(t, env, "migrate", "up")
	if code != exitOK || !strings.Contains(out, "0 migration(s) applied") {
		t.Fatalf("second migrate up: exit %d, stdout %q", code, out)
	}
	code, out, _ = runCLI(t, env, "migrate", "status")
	if code != exitOK || strings.Contains(out, "pending") || !strings.Contains(out, "applied") {
		t.Fatalf("migrate status after up: exit %d, stdout %q", code, out)
	}
}

func TestDLQListAndSearchOnEmptyDatabase(t *testing.T) {
	env := []string{"WAYPOINT_DATABASE__URL=" + testsupport.PostgresURL(t)}
	if code, _, errOut := runCLI(t, env, "migrate", "up"); code != exitOK {
		t.Fatalf("migrate up: %s", errOut)
	}
	// waypoint dlq is the hidden older name of waypoint sink dlq.
	for _, args := range [][]string{{"sink", "dlq", "list"}, {"dlq", "list"}} {
		code, out, errOut := runCLI(t, env, args...)
		if code != exitOK || !strings.Contains(out, "0 dead letter(s)") {
			t.Fatalf("%s: exit %d, stdout %q, stderr %q", strings.Join(args, " "), code, out, errOut)
		}
	}
	code, out, errOut := runCLI(t, env, "search", "hello", "--limit", "3")
	if code != exitOK || !strings.Contains(out, "no casts found") {
		t.Fatalf("search: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestDatabaseErrorsKeepPasswordOut(t *testing.T) {
	const secret = "s3cr3t-planted"
	env := []string{"WAYPOINT_DATABASE__URL=postgres://waypoint:" + secret + "@127.0.0.1:1/nowhere?sslmode=disable&connect_timeout=2"}
	code, out, errOut := runCLI(t, env, "migrate", "status")
	if code == exitOK {
		t.Fatalf("migrate status against a closed port succeeded: %q", out)
	}
	if strings.Contains(out+errOut, secret) {
		t.Fatalf("the database password leaked into the output: %q", errOut)
	}
	if !strings.Contains(errOut, "postgres") {
		t.Fatalf("error does not say what failed: %q", errOut)
	}
}

func TestMissingDatabaseURL(t *testing.T) {
	code, _, errOut := runCLI(t, nil, "migrate", "up")
	if code == exitOK || !strings.Contains(errOut, "database.url is not set") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}
