package bus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Backoff between setup attempts, before jitter.
const (
	setupFirstDelay = 100 * time.Millisecond
	setupMaxDelay   = 5 * time.Second
)

// setup puts the stream and the checkpoint bucket in place. Processes
// started together on a fresh cluster send the same creates at once while
// the cluster may still be electing its meta leader: some requests fail
// with errors that go away, and of two identical creates of a replicated
// stream proposed together the server may answer neither. So each attempt
// has its own timeout (a deadline on the context also turns the client's
// default request timeout off), and transient failures are retried with
// jittered backoff until ctx is done.
func (b *Bus) setup(ctx context.Context) error {
	o := b.opts
	if err := b.retry(ctx, "stream "+o.Stream, func(ctx context.Context) error {
		s, err := b.ensureStream(ctx)
		b.stream = s
		return err
	}); err != nil {
		return err
	}
	return b.retry(ctx, "checkpoint bucket "+o.CheckpointBucket, func(ctx context.Context) error {
		kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      o.CheckpointBucket,
			Description: "Waypoint ingest checkpoints: last acknowledged event id per stream and shard",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    o.Replicas,
		})
		if err != nil {
			return fmt.Errorf("bus: checkpoint bucket %s: %w", o.CheckpointBucket, err)
		}
		b.kv = kv
		return nil
	})
}

// ensureStream creates the stream, or checks the one there and brings its
// limits to the configured ones.
func (b *Bus) ensureStream(ctx context.Context) (jetstream.Stream, error) {
	o := b.opts
	want := b.streamConfig()
	s, err := b.js.Stream(ctx, o.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = b.js.CreateStream(ctx, want)
		if err == nil {
			b.log.Info("created stream", "stream", o.Stream, "partitions", o.Partitions, "replicas", o.Replicas)
			return s, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("bus: create stream %s: %w", o.Stream, err)
		}
		// Another process created it in between, with other limits: check
		// it as one that was there before. In a cluster it may not be
		// placed yet, which the next attempt waits out.
		created := err
		if s, err = b.js.Stream(ctx, o.Stream); errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("bus: create stream %s: another process is creating it: %w", o.Stream, created)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bus: look up stream %s: %w", o.Stream, err)
	}
	have := s.CachedInfo().Config
	if err := checkPartitions(o.Stream, have.Metadata, o.Partitions); err != nil {
		return nil, err
	}
	// Keep metadata the server or an operator added.
	meta := make(map[string]string, len(have.Metadata)+1)
	for k, v := range have.Metadata {
		meta[k] = v
	}
	meta[MetadataPartitions] = want.Metadata[MetadataPartitions]
	want.Metadata = meta
	if s, err = b.js.UpdateStream(ctx, want); err != nil {
		return nil, fmt.Errorf("bus: update stream %s to the configured limits: %w", o.Stream, err)
	}
	return s, nil
}

// retry calls f, each call under its own SetupAttemptTimeout, until it
// succeeds, fails in a way retrying cannot mend, or ctx is done.
func (b *Bus) retry(ctx context.Context, what string, f func(ctx context.Context) error) error {
	delay := setupFirstDelay
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, b.opts.SetupAttemptTimeout)
		err := f(actx)
		timedOut := actx.Err() != nil
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (gave up after %d attempts: %w)", err, attempt, context.Cause(ctx))
		}
		if timedOut {
			err = fmt.Errorf("%w: no reply within %v", err, b.opts.SetupAttemptTimeout)
		} else if !transient(err) {
			return err
		}
		// Jitter keeps processes that failed together from retrying in
		// step.
		wait := delay/2 + rand.N(delay)
		b.log.Warn("bus: setting up "+what+" failed, retrying", "attempt", attempt, "err", err, "in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up after %d attempts: %w)", err, attempt, context.Cause(ctx))
		case <-t.C:
		}
		delay = min(2*delay, setupMaxDelay)
	}
}

// transient reports whether err is one a JetStream server gives while it or
// its cluster is starting, electing a leader or placing replicas, or one
// of a race with another process creating the same stream or bucket.
func transient(err error) bool {
	if errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		// The account is configured without JetStream: no wait mends that.
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamNameInUse,
			10005, // no suitable peers for placement
			10006, // JetStream not in clustered mode (yet)
			10007, // cluster not assigned to this server
			10008, // JetStream system temporarily unavailable
			10009, // cluster cannot handle the request (no leader)
			10023, // insufficient resources
			10118: // stream is offline
			return true
		}
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting)
}
