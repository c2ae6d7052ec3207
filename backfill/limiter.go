package backfill

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// aimd is an adaptive rate limiter for requests to the hub: the allowed rate
// grows additively while requests succeed at steady latency and is cut
// multiplicatively when the hub pushes back (RESOURCE_EXHAUSTED,
// UNAVAILABLE) or latency climbs well above its long-run average. It never
// exceeds max or drops below min.
type aimd struct {
	lim *rate.Limiter

	mu       sync.Mutex
	cur      float64
	min, max float64
	step     float64 // req/s gained per second of healthy traffic
	cooldown time.Duration
	lastCut  time.Time
	fast     float64 // latency EWMA in seconds, reacts within ~10 requests
	slow     float64 // latency EWMA in seconds, the long-run baseline
	samples  int
}

const (
	cutOnPushback = 0.5
	cutOnLatency  = 0.8
	// latencyRise is how far the recent latency must climb above the
	// baseline before it counts as the hub struggling.
	latencyRise = 2.0
	// latencyFloor ignores rises that stay below it: on a local hub
	// doubling 0.2ms is noise, not load.
	latencyFloor = 20 * time.Millisecond
	warmup       = 20
)

func newAIMD(initial, min, max float64) *aimd {
	if max <= 0 {
		max = DefaultMaxRate
	}
	if min <= 0 || min > max {
		min = max / 100
	}
	if initial <= 0 || initial > max {
		initial = max / 2
	}
	if initial < min {
		initial = min
	}
	a := &aimd{cur: initial, min: min, max: max, step: max / 20, cooldown: 500 * time.Millisecond}
	a.lim = rate.NewLimiter(rate.Limit(initial), burstFor(initial))
	return a
}

func burstFor(r float64) int { return 1 + int(r/20) }

// Wait blocks until a request may be sent.
func (a *aimd) Wait(ctx context.Context) error { return a.lim.Wait(ctx) }

// Rate returns the current allowed rate in requests per second.
func (a *aimd) Rate() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cur
}

// Observe feeds the outcome of one request back into the rate.
func (a *aimd) Observe(latency time.Duration, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	if pushback(err) {
		a.cut(now, cutOnPushback)
		return
	}
	if err != nil {
		return
	}
	l := latency.Seconds()
	a.samples++
	if a.samples == 1 {
		a.fast, a.slow = l, l
	} else {
		a.fast += 0.2 * (l - a.fast)
		a.slow += 0.01 * (l - a.slow)
	}
	if a.samples > warmup && a.fast > latencyRise*a.slow && a.fast > latencyFloor.Seconds() {
		a.cut(now, cutOnLatency)
		return
	}
	// One step per second of traffic at the current rate: cur requests
	// each add step/cur.
	a.set(a.cur + a.step/a.cur)
}

func (a *aimd) cut(now time.Time, factor float64) {
	// Many requests in flight fail together; one cut per cooldown keeps a
	// single overload from collapsing the rate to the floor.
	if now.Sub(a.lastCut) < a.cooldown {
		return
	}
	a.lastCut = now
	a.set(a.cur * factor)
}

func (a *aimd) set(r float64) {
	r = min(max(r, a.min), a.max)
	if r == a.cur {
		return
	}
	a.cur = r
	a.lim.SetLimit(rate.Limit(r))
	a.lim.SetBurst(burstFor(r))
}

// pushback reports whether err is the hub asking clients to slow down.
func pushback(err error) bool {
	switch status.Code(err) {
	case codes.ResourceExhausted:
		return !tooLarge(err)
	case codes.Unavailable:
		return true
	}
	return false
}

// tooLarge reports whether err is grpc-go refusing a response above the
// client's receive limit, which it also reports as RESOURCE_EXHAUSTED but
// which fails the same way every time.
func tooLarge(err error) bool {
	s, _ := status.FromError(err)
	return s.Code() == codes.ResourceExhausted && strings.Contains(s.Message(), "larger than max")
}

// retryable reports whether a request that failed with err may succeed
// when sent again.
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	switch status.Code(err) {
	case codes.ResourceExhausted:
		return !tooLarge(err)
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded)
}
