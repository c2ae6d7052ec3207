package bus

import (
	"fmt"
	"strconv"
	"strings"
)

// Subject layout. Events that belong to a FID go to
// waypoint.events.<partition>.<fid>, so a consumer of one partition filters
// on waypoint.events.<partition>.> and sees every FID of that partition in
// stream order. Events without a FID (BLOCK_CONFIRMED; any other FID-less
// event type would follow it) go to the shard-level subject
// waypoint.blocks.<shard>, which no partition consumer sees: they are
// bookkeeping (ingest verifies each block against them) that stays in the
// stream for audits and replay.
const (
	EventSubjectPrefix = "waypoint.events."
	BlockSubjectPrefix = "waypoint.blocks."
)

// DefaultPartitions is the partition count of a new stream.
const DefaultPartitions = 16

// MaxPartitions bounds the partition count: every partition is a consumer.
const MaxPartitions = 1024

// Partition returns the partition of fid among n partitions. It is
// FNV-1a-32 over the FID's decimal subject token, mod n: the value the NATS
// server's {{partition(n,k)}} subject-mapping function computes when token k
// is that FID, so a server-side mapping and this function always agree.
func Partition(fid uint64, n int) int {
	if n <= 0 {
		return 0
	}
	var buf [20]byte
	tok := strconv.AppendUint(buf[:0], fid, 10)
	const (
		offset32 = 2166136261
		prime32  = 16777619
	)
	h := uint32(offset32)
	for _, c := range tok {
		h ^= uint32(c)
		h *= prime32
	}
	return int(h % uint32(n))
}

// EventSubject returns the subject of an event for fid in a stream of n
// partitions.
func EventSubject(fid uint64, n int) string {
	var buf [64]byte
	b := append(buf[:0], EventSubjectPrefix...)
	b = strconv.AppendInt(b, int64(Partition(fid, n)), 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, fid, 10)
	return string(b)
}

// BlockSubject returns the subject of a shard's BLOCK_CONFIRMED events.
func BlockSubject(shard uint32) string {
	return BlockSubjectPrefix + strconv.FormatUint(uint64(shard), 10)
}

// PartitionFilter returns the filter subject that selects every event of
// one partition.
func PartitionFilter(partition int) string {
	return EventSubjectPrefix + strconv.Itoa(partition) + ".>"
}

// ParseEventSubject returns the partition and FID named by an event
// subject.
func ParseEventSubject(subject string) (partition int, fid uint64, err error) {
	rest, ok := strings.CutPrefix(subject, EventSubjectPrefix)
	if !ok {
		return 0, 0, errSubject(subject)
	}
	dot := strings.IndexByte(rest, '.')
	if dot <= 0 {
		return 0, 0, errSubject(subject)
	}
	p, err := strconv.Atoi(rest[:dot])
	if err != nil || p < 0 {
		return 0, 0, errSubject(subject)
	}
	fid, err = strconv.ParseUint(rest[dot+1:], 10, 64)
	if err != nil {
		return 0, 0, errSubject(subject)
	}
	return p, fid, nil
}

func errSubject(s string) error {
	return fmt.Errorf("bus: %q is not an event subject (want %s<partition>.<fid>)", s, EventSubjectPrefix)
}
