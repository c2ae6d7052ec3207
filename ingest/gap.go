package ingest

import (
	"context"
	"fmt"

	pb "github.com/waypointhq/waypoint/proto"
)

// GapKind says why events are missing from the bus.
type GapKind int

const (
	// GapMissingEvents: a block's BLOCK_CONFIRMED counts more events than
	// arrived, and GetEvents could not supply the rest.
	GapMissingEvents GapKind = iota + 1
	// GapRetention: the node no longer has the events after the
	// checkpoint (or after the configured from_id); it expired them.
	GapRetention
	// GapSkipped: the subscription jumped past whole blocks and replaying
	// from the checkpoint did not bring them back.
	GapSkipped
	// GapUnpublishable: an event arrived but cannot be put on the bus (its
	// bytes do not parse, or it exceeds the server's payload limit).
	GapUnpublishable
)

func (k GapKind) String() string {
	switch k {
	case GapMissingEvents:
		return "missing-events"
	case GapRetention:
		return "retention"
	case GapSkipped:
		return "skipped"
	case GapUnpublishable:
		return "unpublishable"
	}
	return fmt.Sprintf("GapKind(%d)", int(k))
}

// Gap describes events of one shard that will not reach the bus through
// ingest and have to be recovered another way (a backfill of the FIDs, or
// of the whole shard when they are unknown).
type Gap struct {
	Shard uint32
	Kind  GapKind
	// FromID and ToID bound the affected event ids, [FromID, ToID).
	FromID, ToID uint64
	// Missing counts the missing events by type, when known
	// (GapMissingEvents).
	Missing map[pb.HubEventType]uint64
	// FIDs are the affected FIDs when known; empty means any FID of the
	// shard may be affected.
	FIDs []uint64
	// Err is the underlying cause, if any.
	Err error
}

// GapHandler is told about every gap ingest cannot repair itself. Ingest
// logs and counts each gap as well; an error from the handler is logged
// and does not stop ingest.
type GapHandler interface {
	HandleGap(ctx context.Context, g Gap) error
}

// GapHandlerFunc adapts a function to GapHandler.
type GapHandlerFunc func(ctx context.Context, g Gap) error

// HandleGap calls f.
func (f GapHandlerFunc) HandleGap(ctx context.Context, g Gap) error { return f(ctx, g) }
