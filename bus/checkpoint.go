package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func (b *Bus) checkpointKey(shard uint32) string {
	return b.opts.Stream + ".shard." + strconv.FormatUint(uint64(shard), 10)
}

// Position is what ingest records per shard: the checkpoint and where in
// the stream to look for the shard's events published after it.
type Position struct {
	// ID is the highest event id whose publish, and every earlier one,
	// the server acknowledged; HasID is false before the first.
	ID    uint64
	HasID bool
	// Seq is a stream sequence below which no event of the shard newer
	// than ID is stored; HasSeq is false for a checkpoint saved without one.
	Seq    uint64
	HasSeq bool
}

// String is the bucket value: "<id>:<seq>", ":<seq>" before the first
// acknowledged event, or "<id>" without a sequence (as older versions wrote
// it).
func (p Position) String() string {
	var b []byte
	if p.HasID {
		b = strconv.AppendUint(b, p.ID, 10)
	}
	if p.HasSeq {
		b = append(b, ':')
		b = strconv.AppendUint(b, p.Seq, 10)
	}
	return string(b)
}

func parsePosition(v string) (Position, error) {
	var p Position
	id, seq, hasSeq := strings.Cut(v, ":")
	if id != "" || !hasSeq {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return p, fmt.Errorf("not an event id: %w", err)
		}
		p.ID, p.HasID = n, true
	}
	if hasSeq {
		n, err := strconv.ParseUint(seq, 10, 64)
		if err != nil {
			return p, fmt.Errorf("not a stream sequence: %w", err)
		}
		p.Seq, p.HasSeq = n, true
	}
	return p, nil
}

// LoadPosition returns the shard's saved position; ok is false when the
// shard has none.
func (b *Bus) LoadPosition(ctx context.Context, shard uint32) (p Position, ok bool, err error) {
	key := b.checkpointKey(shard)
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("bus: load checkpoint %s: %w", key, err)
	}
	if p, err = parsePosition(string(e.Value())); err != nil {
		return p, false, fmt.Errorf("bus: checkpoint %s holds %q, %w", key, e.Value(), err)
	}
	return p, true, nil
}

// SavePosition records the shard's position.
func (b *Bus) SavePosition(ctx context.Context, shard uint32, p Position) error {
	key := b.checkpointKey(shard)
	if _, err := b.kv.PutString(ctx, key, p.String()); err != nil {
		return fmt.Errorf("bus: save checkpoint %s=%s: %w", key, p, err)
	}
	return nil
}

// CreatePosition records p as the shard's position unless it already has
// one (another instance may have saved it meanwhile); ok is false then.
func (b *Bus) CreatePosition(ctx context.Context, shard uint32, p Position) (ok bool, err error) {
	key := b.checkpointKey(shard)
	if _, err := b.kv.Create(ctx, key, []byte(p.String())); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil
		}
		return false, fmt.Errorf("bus: create checkpoint %s=%s: %w", key, p, err)
	}
	return true, nil
}

// LoadCheckpoint returns the shard's saved checkpoint: the highest event id
// whose publish, and every earlier one, the server acknowledged. ok is false
// when the shard has none yet.
func (b *Bus) LoadCheckpoint(ctx context.Context, shard uint32) (id uint64, ok bool, err error) {
	p, ok, err := b.LoadPosition(ctx, shard)
	return p.ID, ok && p.HasID, err
}

// SaveCheckpoint records id as the shard's checkpoint, without a stream
// sequence: the next ingest run then relies on the duplicate window alone
// for events published after id.
func (b *Bus) SaveCheckpoint(ctx context.Context, shard uint32, id uint64) error {
	return b.SavePosition(ctx, shard, Position{ID: id, HasID: true})
}

// DeleteCheckpoint forgets the shard's checkpoint, so the next ingest run
// starts live or at its configured from_id.
func (b *Bus) DeleteCheckpoint(ctx context.Context, shard uint32) error {
	key := b.checkpointKey(shard)
	if err := b.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("bus: delete checkpoint %s: %w", key, err)
	}
	return nil
}

// StoredAfter reads the events stream's headers from sequence seq+1 to its
// current end and returns the ids of shard's events stored there, each with
// its stream sequence. Ingest calls it before publishing from a checkpoint,
// so events a crashed or failed run stored after it are not stored again
// however long ago that was: the duplicate window need not cover restarts.
func (b *Bus) StoredAfter(ctx context.Context, shard uint32, seq uint64) (map[uint64]uint64, error) {
	info, err := b.StreamInfo(ctx)
	if err != nil {
		return nil, err
	}
	last := info.State.LastSeq
	stored := map[uint64]uint64{}
	if last <= seq || info.State.Msgs == 0 {
		return stored, nil
	}
	start := max(seq+1, info.State.FirstSeq)
	if start > last {
		return stored, nil
	}
	// A plain ephemeral consumer rather than an ordered one: an ordered
	// consumer recreates itself after a lost connection without regard to
	// ctx, and this read must end with its context.
	c, err := b.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: read stream %s after %d: %w", b.opts.Stream, seq, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		// The inactive threshold removes it should this fail.
		_ = b.stream.DeleteConsumer(dctx, c.CachedInfo().Name)
	}()
	want := strconv.FormatUint(uint64(shard), 10)
	for {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		batch, err := c.Fetch(1024, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			return nil, fmt.Errorf("bus: read stream %s after %d: %w", b.opts.Stream, seq, err)
		}
		n, end, err := b.collect(batch, want, last, stored)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("bus: read stream %s after %d: %w", b.opts.Stream, seq, err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("bus: read stream %s after %d: %w", b.opts.Stream, seq, ctx.Err())
		}
		if end {
			return stored, nil
		}
		if n == 0 {
			// The rest of the range was deleted (expired) meanwhile.
			return stored, nil
		}
	}
}

// collect adds the events of shard want in batch to stored; end reports
// that sequence last was reached.
func (b *Bus) collect(batch jetstream.MessageBatch, want string, last uint64, stored map[uint64]uint64) (n int, end bool, err error) {
	for m := range batch.Messages() {
		n++
		md, err := m.Metadata()
		if err != nil {
			return n, false, err
		}
		h := m.Headers()
		if h.Get(HeaderShard) == want {
			id, err := strconv.ParseUint(h.Get(HeaderEventID), 10, 64)
			if err != nil {
				return n, false, fmt.Errorf("message %d: header %s: %w", md.Sequence.Stream, HeaderEventID, err)
			}
			stored[id] = md.Sequence.Stream
		}
		if md.Sequence.Stream >= last {
			return n, true, nil
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return n, false, err
	}
	return n, false, nil
}
