package hub

import (
	"testing"
	"time"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		in       string
		hostport string
		tls      bool
	}{
		{"https://hub.example.com", "hub.example.com:443", true},
		{"https://hub.example.com:3383", "hub.example.com:3383", true},
		{"https://hub.example.com/", "hub.example.com:443", true},
		{"http://127.0.0.1:3383", "127.0.0.1:3383", false},
		{"http://node", "node:3383", false},
		{"node:4000", "node:4000", false},
		{"node", "node:3383", false},
		{"[::1]:3383", "[::1]:3383", false},
		{"https://[::1]:8443", "[::1]:8443", true},
	}
	for _, c := range cases {
		ep, err := parseURL(c.in)
		if err != nil {
			t.Errorf("parseURL(%q): %v", c.in, err)
			continue
		}
		if ep.hostport != c.hostport || ep.tls != c.tls {
			t.Errorf("parseURL(%q) = %+v, want %s tls=%v", c.in, ep, c.hostport, c.tls)
		}
	}
}

func TestBackoffDelay(t *testing.T) {
	r := retrier{attempts: 10, base: 100 * time.Millisecond, max: time.Second}
	for attempt, full := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		full *= time.Millisecond
		for range 200 {
			d := r.delay(attempt + 1)
			if d < full/2 || d > full {
				t.Fatalf("delay before attempt %d = %v, want within [%v, %v]", attempt+2, d, full/2, full)
			}
		}
	}
	huge := retrier{base: time.Hour, max: 2 * time.Hour}
	if d := huge.delay(80); d < time.Hour || d > 2*time.Hour {
		t.Fatalf("delay with a large base after many attempts = %v", d)
	}
	if d := (retrier{}).delay(3); d != 0 {
		t.Fatalf("zero base delay = %v", d)
	}
}
