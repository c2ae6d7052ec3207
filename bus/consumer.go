package bus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerOptions configures a partition consumer. Zero values take the
// defaults noted.
type ConsumerOptions struct {
	// AckWait is how long a delivered message may stay unacknowledged
	// before it is redelivered (default 30s).
	AckWait time.Duration
	// MaxAckPending bounds delivered, unacknowledged messages (default
	// 10000).
	MaxAckPending int
	// MaxDeliver bounds delivery attempts per message; zero or negative
	// retries forever.
	MaxDeliver int
}

// ConsumerName returns the durable name of a group's consumer for one
// partition, "<group>-p<partition>".
func ConsumerName(group string, partition int) string {
	return group + "-p" + strconv.Itoa(partition)
}

// PartitionConsumer creates, or updates to opts, the group's durable pull
// consumer of one partition: every event of the partition from the start
// of the stream, explicit acks. Consumers of the same group and partition
// share one position, so replicas of a group divide work by partition.
func (b *Bus) PartitionConsumer(ctx context.Context, group string, partition int, opts ConsumerOptions) (jetstream.Consumer, error) {
	if group == "" {
		return nil, fmt.Errorf("bus: partition consumer needs a group name")
	}
	if partition < 0 || partition >= b.opts.Partitions {
		return nil, fmt.Errorf("bus: partition %d out of range: stream %s has partitions 0..%d", partition, b.opts.Stream, b.opts.Partitions-1)
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 30 * time.Second
	}
	if opts.MaxAckPending <= 0 {
		opts.MaxAckPending = 10000
	}
	if opts.MaxDeliver <= 0 {
		opts.MaxDeliver = -1
	}
	name := ConsumerName(group, partition)
	c, err := b.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "Waypoint " + group + ", partition " + strconv.Itoa(partition),
		FilterSubject: PartitionFilter(partition),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       opts.AckWait,
		MaxAckPending: opts.MaxAckPending,
		MaxDeliver:    opts.MaxDeliver,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s on stream %s: %w", name, b.opts.Stream, err)
	}
	return c, nil
}
