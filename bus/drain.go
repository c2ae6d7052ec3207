package bus

import (
	"context"
	"fmt"
	"time"
)

// LastSequence returns the stream sequence of the newest message in the
// events stream, 0 when it is empty.
func (b *Bus) LastSequence(ctx context.Context) (uint64, error) {
	si, err := b.StreamInfo(ctx)
	if err != nil {
		return 0, err
	}
	return si.State.LastSeq, nil
}

// WaitConsumed waits until a consumer group has acknowledged every message
// of the events stream up to stream sequence seq on every partition, polling
// every poll. A partition whose consumer does not exist yet counts as not
// done, since its consumer will start from the beginning of the stream.
func (b *Bus) WaitConsumed(ctx context.Context, group string, seq uint64, poll time.Duration) error {
	done := make([]bool, b.opts.Partitions)
	left := len(done)
	for {
		for p := range done {
			if done[p] {
				continue
			}
			c, err := b.js.Consumer(ctx, b.opts.Stream, ConsumerName(group, p))
			if err != nil {
				continue
			}
			ci, err := c.Info(ctx)
			if err != nil {
				continue
			}
			// Messages are delivered in order, so once nothing delivered is
			// unacknowledged, everything up to the last delivered one is
			// acknowledged.
			settled := ci.NumAckPending == 0 && (ci.Delivered.Stream >= seq || ci.NumPending == 0)
			if ci.AckFloor.Stream >= seq || settled {
				done[p] = true
				left--
			}
		}
		if left == 0 {
			return nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wait for group %s to consume up to sequence %d: %d of %d partitions behind: %w", group, seq, left, len(done), ctx.Err())
		case <-t.C:
		}
	}
}
