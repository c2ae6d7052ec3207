package telemetry

import (
	"encoding/hex"

	"go.opentelemetry.io/otel/attribute"
)

// Span attribute keys shared by every component, so that one query in a
// tracing backend finds a message or an account across ingest, sink and
// backfill. The force sampler reads AttrFID and AttrMessageHash.
const (
	// AttrShard is the Snapchain shard index (int64).
	AttrShard = attribute.Key("farcaster.shard")
	// AttrEventID is the hub event id (int64).
	AttrEventID = attribute.Key("farcaster.event.id")
	// AttrEventType is the hub event type name, e.g. "MERGE_MESSAGE" (string).
	AttrEventType = attribute.Key("farcaster.event.type")
	// AttrFID is the account the span is about (int64). Set it with FID.
	AttrFID = attribute.Key("farcaster.fid")
	// AttrMessageHash is a message hash as lowercase 0x-hex (string). Set it
	// with MessageHash so the force sampler can match it.
	AttrMessageHash = attribute.Key("farcaster.message.hash")
	// AttrMessageType is the message type name, e.g. "MESSAGE_TYPE_CAST_ADD" (string).
	AttrMessageType = attribute.Key("farcaster.message.type")
)

// Span names. Each names one unit of work; the attributes above say which
// event or message it handled.
const (
	SpanIngestReceive   = "ingest.receive"      // one hub event read from a shard stream
	SpanIngestPublish   = "ingest.publish"      // its JetStream publish until acknowledged
	SpanSinkProcess     = "sink.process"        // one message decoded, validated and staged
	SpanSinkCommit      = "sink.commit"         // one batch's COPY + merge transaction
	SpanBackfillEnqueue = "backfill.enqueue"    // a job put on the Redis queue
	SpanBackfillJob     = "backfill.job"        // one claimed job, start to finish
	SpanBackfillFetch   = "backfill.fetch_page" // one page fetched from the hub
	SpanBackfillWrite   = "backfill.write"      // one page written through the sink writer
)

// FID returns the AttrFID attribute. Farcaster ids fit in int64 in practice;
// the conversion keeps the attribute numeric so backends can range-query it.
func FID(fid uint64) attribute.KeyValue {
	return AttrFID.Int64(int64(fid))
}

// MessageHash returns the AttrMessageHash attribute in the 0x-hex form the
// force sampler and WAYPOINT_TRACE_FORCE use.
func MessageHash(hash []byte) attribute.KeyValue {
	return AttrMessageHash.String(hexHash(hash))
}

// Shard returns the AttrShard attribute.
func Shard(shard uint32) attribute.KeyValue {
	return AttrShard.Int64(int64(shard))
}

func hexHash(b []byte) string {
	out := make([]byte, 2+hex.EncodedLen(len(b)))
	out[0], out[1] = '0', 'x'
	hex.Encode(out[2:], b)
	return string(out)
}
