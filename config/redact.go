package config

import (
	"net/url"
	"strings"
)

// redactURLs hides the password of a URL, or of every URL in a
// comma-separated list when list is set. A URL that does not parse cannot
// be redacted precisely, so the whole value becomes REDACTED and ok is
// false.
func redactURLs(s string, list bool) (string, bool) {
	if !list {
		return redactOneURL(s)
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		r, ok := redactOneURL(strings.TrimSpace(p))
		if !ok {
			return redacted, false
		}
		parts[i] = r
	}
	return strings.Join(parts, ","), true
}

func redactURL(s string) string {
	r, _ := redactURLs(s, false)
	return r
}

func redactURLList(s string) string {
	r, _ := redactURLs(s, true)
	return r
}

func redactOneURL(s string) (string, bool) {
	if !strings.Contains(s, "://") {
		// host:port carries no credentials unless someone wrote user:pw@
		// in front of it, which url.Parse would reject anyway.
		if strings.Contains(s, "@") {
			return redacted, false
		}
		return s, true
	}
	u, err := url.Parse(s)
	if err != nil {
		return redacted, false
	}
	changed := false
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), redacted)
			changed = true
		}
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return redacted, false
		}
		for k := range q {
			if secretParam(k) {
				q[k] = []string{redacted}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	if !changed {
		return s, true
	}
	return u.String(), true
}

// secretParam reports query parameters that carry credentials, such as
// libpq's password and sslpassword.
func secretParam(name string) bool {
	n := strings.ToLower(name)
	for _, w := range []string{"password", "passwd", "token", "secret"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}
