package bus

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Dead-letter stream: events a consumer could not use are republished to
// waypoint.dlq.<reason> with their original headers, so they can be
// inspected or re-driven without searching the events stream.
const (
	DefaultDeadLetterStream  = "WAYPOINT_DLQ"
	DeadLetterSubjectPrefix  = "waypoint.dlq."
	DefaultDeadLetterMaxAge  = 30 * 24 * time.Hour
	HeaderDeadLetterReason   = "Waypoint-Dlq-Reason"
	HeaderDeadLetterDetail   = "Waypoint-Dlq-Detail"
	HeaderDeadLetterSubject  = "Waypoint-Dlq-Subject"
	HeaderDeadLetterSequence = "Waypoint-Dlq-Sequence"
)

// DeadLetterSubject returns the dead-letter subject of reason; characters
// a subject token cannot hold become '_'.
func DeadLetterSubject(reason string) string {
	if reason == "" {
		reason = "unknown"
	}
	tok := strings.Map(func(r rune) rune {
		if r <= ' ' || r == '.' || r == '*' || r == '>' || r > 0x7e {
			return '_'
		}
		return r
	}, reason)
	return DeadLetterSubjectPrefix + tok
}

// DeadLetterStream creates, or updates, the dead-letter stream.
func (b *Bus) DeadLetterStream(ctx context.Context, name string) (jetstream.Stream, error) {
	if name == "" {
		name = DefaultDeadLetterStream
	}
	s, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: "Waypoint: events consumers could not store, by reason",
		Subjects:    []string{DeadLetterSubjectPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    b.opts.Replicas,
		MaxAge:      DefaultDeadLetterMaxAge,
		MaxMsgs:     -1,
		MaxBytes:    -1,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: dead-letter stream %s: %w", name, err)
	}
	return s, nil
}

// GroupConsumer is PartitionConsumer with a pinned-client priority group
// named after the group: the server delivers the partition to one client
// (the pinned one) at a time, and hands it to another only after the pinned
// client has sent no pull request for pinnedTTL or was unpinned through
// UnpinConsumer. Pulls must name the group (jetstream.FetchPriorityGroup).
func (b *Bus) GroupConsumer(ctx context.Context, group string, partition int, opts ConsumerOptions, pinnedTTL time.Duration) (jetstream.Consumer, error) {
	if group == "" {
		return nil, fmt.Errorf("bus: group consumer needs a group name")
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
	if pinnedTTL <= 0 {
		pinnedTTL = 5 * time.Second
	}
	name := ConsumerName(group, partition)
	c, err := b.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:        name,
		Description:    "Waypoint " + group + ", partition " + strconv.Itoa(partition) + ", pinned",
		FilterSubject:  PartitionFilter(partition),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        opts.AckWait,
		MaxAckPending:  opts.MaxAckPending,
		MaxDeliver:     opts.MaxDeliver,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{group},
		PinnedTTL:      pinnedTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: group consumer %s on stream %s: %w", name, b.opts.Stream, err)
	}
	return c, nil
}

// MemberBucket creates, or updates, a key-value bucket whose entries expire
// ttl after their last write: consumers of a group heartbeat into it to
// announce they are alive.
func (b *Bus) MemberBucket(ctx context.Context, name string, ttl time.Duration) (jetstream.KeyValue, error) {
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name,
		Description: "Waypoint consumer group members, one key per live replica",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.MemoryStorage,
		Replicas:    b.opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: member bucket %s: %w", name, err)
	}
	return kv, nil
}
