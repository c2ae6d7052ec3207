package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

func (b *Bus) checkpointKey(shard uint32) string {
	return b.opts.Stream + ".shard." + strconv.FormatUint(uint64(shard), 10)
}

// LoadCheckpoint returns the shard's saved checkpoint: the highest event id
// whose publish, and every earlier one, the server acknowledged. ok is false
// when the shard has none yet.
func (b *Bus) LoadCheckpoint(ctx context.Context, shard uint32) (id uint64, ok bool, err error) {
	key := b.checkpointKey(shard)
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("bus: load checkpoint %s: %w", key, err)
	}
	id, err = strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("bus: checkpoint %s holds %q, not an event id: %w", key, e.Value(), err)
	}
	return id, true, nil
}

// SaveCheckpoint records id as the shard's checkpoint.
func (b *Bus) SaveCheckpoint(ctx context.Context, shard uint32, id uint64) error {
	key := b.checkpointKey(shard)
	if _, err := b.kv.Put(ctx, key, strconv.AppendUint(nil, id, 10)); err != nil {
		return fmt.Errorf("bus: save checkpoint %s=%d: %w", key, id, err)
	}
	return nil
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
