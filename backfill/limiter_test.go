package backfill

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestAIMD(t *testing.T) {
	exhausted := status.Error(codes.ResourceExhausted, "slow down")
	tests := []struct {
		name  string
		steps func(a *aimd)
		check func(t *testing.T, r float64)
	}{
		{"healthy traffic climbs additively", func(a *aimd) {
			for range 100 {
				a.Observe(time.Millisecond, nil)
			}
		}, func(t *testing.T, r float64) {
			// Each success adds step/cur: 100 successes at ~50 req/s add
			// about 2 seconds' worth of steps (5 req/s each).
			if r <= 50 || r > 62 {
				t.Fatalf("rate = %v, want a little above 50", r)
			}
		}},
		{"pushback halves once per cooldown", func(a *aimd) {
			a.Observe(time.Millisecond, exhausted)
			a.Observe(time.Millisecond, exhausted)
			a.Observe(time.Millisecond, status.Error(codes.Unavailable, "down"))
		}, func(t *testing.T, r float64) {
			if r != 25 {
				t.Fatalf("rate = %v, want 25", r)
			}
		}},
		{"a response over the receive limit is not pushback", func(a *aimd) {
			a.Observe(time.Millisecond, status.Error(codes.ResourceExhausted, "grpc: received message larger than max (5 vs. 4)"))
		}, func(t *testing.T, r float64) {
			if r != 50 {
				t.Fatalf("rate = %v, want unchanged 50", r)
			}
		}},
		{"never above the ceiling", func(a *aimd) {
			for range 10000 {
				a.Observe(time.Millisecond, nil)
			}
		}, func(t *testing.T, r float64) {
			if r != 100 {
				t.Fatalf("rate = %v, want the ceiling 100", r)
			}
		}},
		{"never below the floor", func(a *aimd) {
			for range 20 {
				a.lastCut = time.Time{}
				a.Observe(time.Millisecond, exhausted)
			}
		}, func(t *testing.T, r float64) {
			if r != 1 {
				t.Fatalf("rate = %v, want the floor 1", r)
			}
		}},
		{"other errors leave the rate alone", func(a *aimd) {
			a.Observe(time.Millisecond, status.Error(codes.InvalidArgument, "bad"))
			a.Observe(time.Millisecond, errors.New("boom"))
		}, func(t *testing.T, r float64) {
			if r != 50 {
				t.Fatalf("rate = %v", r)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAIMD(50, 1, 100)
			tc.steps(a)
			tc.check(t, a.Rate())
		})
	}
}

func TestAIMDLatencyRise(t *testing.T) {
	a := newAIMD(50, 1, 100)
	for range 50 {
		a.Observe(30*time.Millisecond, nil)
	}
	before := a.Rate()
	for range 10 {
		a.Observe(300*time.Millisecond, nil)
	}
	if a.Rate() >= before {
		t.Fatalf("latency rising tenfold left the rate at %v (was %v)", a.Rate(), before)
	}
	// Sub-millisecond noise doubling on a local hub is not a rise.
	b := newAIMD(50, 1, 100)
	for range 50 {
		b.Observe(200*time.Microsecond, nil)
	}
	before = b.Rate()
	for range 10 {
		b.Observe(time.Millisecond, nil)
	}
	if b.Rate() < before {
		t.Fatalf("a rise below the latency floor cut the rate to %v", b.Rate())
	}
}

func TestAIMDLimitsRate(t *testing.T) {
	a := newAIMD(100, 1, 100)
	ctx := context.Background()
	start := time.Now()
	for range 30 {
		if err := a.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Burst 6 at 100/s: 30 requests need at least (30-6)/100 s.
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("30 requests passed in %v at 100 req/s", d)
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "x"), true},
		{status.Error(codes.ResourceExhausted, "x"), true},
		{status.Error(codes.ResourceExhausted, "grpc: received message larger than max"), false},
		{status.Error(codes.DeadlineExceeded, "x"), true},
		{status.Error(codes.InvalidArgument, "x"), false},
		{status.Error(codes.NotFound, "x"), false},
		{context.Canceled, false},
		{context.DeadlineExceeded, true},
	}
	for _, tc := range tests {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
