package testsupport

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresURLAs returns the Postgres URL base with role and password as
// its user.
func PostgresURLAs(t testing.TB, base, role, password string) string {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse postgres url: %v", err)
	}
	u.User = url.UserPassword(role, password)
	return u.String()
}

// DropRolesAtEnd drops roles, which the whole server shares, when the test
// ends, after handing what they own in the database of adminURL back to
// its admin. Register it after PostgresURL, so it runs before the
// database is dropped.
func DropRolesAtEnd(t testing.TB, adminURL string, roles ...string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Logf("drop roles: %v", err)
			return
		}
		defer c.Close(ctx)
		// One role at a time: a default ACL naming two roles trips DROP
		// OWNED given both at once.
		for _, r := range roles {
			id := pgx.Identifier{r}.Sanitize()
			for _, stmt := range []string{"REASSIGN OWNED BY " + id + " TO CURRENT_USER", "DROP OWNED BY " + id} {
				if _, err := c.Exec(ctx, stmt); err != nil {
					t.Logf("drop roles: %s: %v", stmt, err)
				}
			}
		}
		for _, r := range roles {
			if _, err := c.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{r}.Sanitize()); err != nil {
				t.Logf("drop role %s: %v", r, err)
			}
		}
	})
}
