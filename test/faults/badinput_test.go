//go:build faults

package faults

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/devnet"
	"github.com/waypointhq/waypoint/ingest"
	"github.com/waypointhq/waypoint/internal/testsupport"
	pb "github.com/waypointhq/waypoint/proto"
)

// outcome is where a piece of bad input is expected to end up.
type outcome int

const (
	deadLettered outcome = iota + 1 // a dead_letters row with the given reason
	stored                          // valid: stored, and in the ground truth
	storedOrDead                    // valid on the wire but refused by the node: stored as valid, or dead-lettered
	keptOrDead                      // a message type without a table: raw bytes kept in messages, or dead-lettered
	gapReported                     // ingest cannot publish it and reports an unpublishable gap
	notDelivered                    // an event type ingest did not subscribe to: the hub filters it out
)

// TestFaultBadInput feeds the pipeline, after a normal workload, hub
// events that are wrong in every way the sink or ingest must survive,
// each in its own block, followed by a valid cast. Each must end where its
// case says (with a reason), the valid cast behind them must be stored,
// and Postgres must still equal the simulator.
func TestFaultBadInput(t *testing.T) {
	const fids = 30
	nats := testsupport.StartNATSServer(t)
	pl := newPipeline(t, devnet.Options{Seed: 137, FIDs: fids, Preload: 1500, Rate: 400, Duration: 2 * time.Second}, "")
	pl.startIngest(nats.URL)
	pl.startSink(nats.URL, 2)
	testsupport.SettledState(t, pl.sim)

	// A user of the test's own, so valid messages can be submitted.
	const fid = fids + 1
	signer := devnet.NewSigner(777)
	if err := pl.sim.Register(fid, signer, 1); err != nil {
		t.Fatal(err)
	}
	pl.fids = fid
	// Injected messages the node never merged are for a FID outside the
	// compared range, so that one stored as valid does not count against
	// the ground truth; each is accounted for on its own below.
	const badFID = 1000
	shard := pl.sim.ShardFor(badFID)
	ts := uint32(time.Date(2025, 6, 1, 1, 0, 0, 0, time.UTC).Unix() - 1609459200)

	badHash := signer.CastAdd(badFID, ts, "bad hash")
	badHash.Hash = bytes.Clone(badHash.Hash)
	badHash.Hash[0] ^= 0xff
	badSig := signer.CastAdd(badFID, ts+1, "bad signature")
	badSig.Signature = bytes.Clone(badSig.Signature)
	badSig.Signature[0] ^= 0xff
	unknownType, err := signer.Sign(&pb.MessageData{Type: pb.MessageType(99), Fid: badFID, Timestamp: ts + 2, Network: pl.sim.Network()})
	if err != nil {
		t.Fatal(err)
	}
	wrongNet := signer.WithNetwork(pb.FarcasterNetwork_FARCASTER_NETWORK_MAINNET).CastAdd(badFID, ts+3, "wrong network")
	oversizedText := signer.CastAdd(badFID, ts+4, strings.Repeat("x", 4096))
	huge := signer.CastAdd(badFID, ts+5, strings.Repeat("y", 1536<<10))

	cases := []struct {
		name   string
		raw    []byte      // injected as is; nil when msg is submitted
		msg    *pb.Message // submitted through the simulator (valid by the node's rules)
		want   outcome
		reason string
	}{
		{name: "invalid hash", raw: mergeEvent(t, shard, badHash), want: deadLettered, reason: "hash_mismatch"},
		{name: "invalid signature", raw: mergeEvent(t, shard, badSig), want: deadLettered, reason: "bad_signature"},
		{name: "wrong network", raw: mergeEvent(t, shard, wrongNet), want: deadLettered, reason: "wrong_network"},
		{name: "malformed protobuf", raw: []byte{0x08, 0x01, 0x10, 0xff, 0xff}, want: gapReported},
		{name: "NUL bytes in text", msg: signer.CastAdd(fid, ts+6, "nul\x00in\x00text"), want: stored},
		{name: "cast text over 320 bytes", raw: mergeEvent(t, shard, oversizedText), want: storedOrDead},
		{name: "event over the NATS payload limit", raw: mergeEvent(t, shard, huge), want: gapReported},
		{name: "unknown message type", raw: mergeEvent(t, shard, unknownType), want: keptOrDead},
		{name: "unknown event type", raw: encodeEvent(t, shard, &pb.HubEvent{Type: pb.HubEventType(99)}), want: notDelivered},
	}
	var unexpectedGaps []ingest.Gap
	for i := range cases {
		c := &cases[i]
		gapsBefore := len(pl.gapList())
		if c.msg != nil {
			if err := pl.sim.Submit(c.msg); err != nil {
				t.Fatalf("%s: the simulator refused it: %v", c.name, err)
			}
		} else {
			c.raw = rebase(t, pl, shard, c.raw)
			if err := pl.sim.InjectRawEvent(shard, c.raw); err != nil {
				t.Fatalf("%s: inject: %v", c.name, err)
			}
		}
		switch c.want {
		case gapReported:
			waitFor(t, c.name+": unpublishable gap", 20*time.Second, func() bool {
				for _, g := range pl.gapList()[gapsBefore:] {
					if g.Kind == ingest.GapUnpublishable {
						t.Logf("%s: gap reported: %v", c.name, g.Err)
						return true
					}
				}
				return false
			})
		case notDelivered:
			// Nothing downstream may notice, not even as a shortfall in
			// the block's counts.
			time.Sleep(time.Second)
			unexpectedGaps = append(unexpectedGaps, pl.gapList()[gapsBefore:]...)
		}
	}
	// Behind all of it, a valid cast must still get through.
	if err := pl.sim.Submit(signer.CastAdd(fid, ts+7, "still flowing")); err != nil {
		t.Fatal(err)
	}
	pl.converge("bad input: 9 kinds + a valid cast", time.Time{}, 45*time.Second, nats.URL)
	for _, g := range unexpectedGaps {
		t.Errorf("unknown event type: ingest reported a gap: %+v", g)
	}

	ctx := context.Background()
	reasons := map[string]string{}
	rows, err := pl.pool.Query(ctx, `SELECT coalesce(encode(message_hash, 'hex'), ''), reason, detail FROM dead_letters`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var h, reason, detail string
		if err := rows.Scan(&h, &reason, &detail); err != nil {
			t.Fatal(err)
		}
		reasons[h] = reason
		t.Logf("dead letter: %s 0x%s %s", reason, h, detail)
	}
	rows.Close()
	for _, c := range cases {
		var hash []byte
		if ev := (&pb.HubEvent{}); c.raw != nil && proto.Unmarshal(c.raw, ev) == nil {
			hash = ev.GetMergeMessageBody().GetMessage().GetHash()
		}
		reason, dead := reasons[hex.EncodeToString(hash)]
		var inMessages, inCasts bool
		if hash != nil {
			if err := pl.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM messages WHERE hash = $1), EXISTS (SELECT 1 FROM casts WHERE hash = $1)`, hash).Scan(&inMessages, &inCasts); err != nil {
				t.Fatal(err)
			}
		}
		switch c.want {
		case deadLettered:
			switch {
			case !dead:
				t.Errorf("%s: not in dead_letters", c.name)
			case reason != c.reason:
				t.Errorf("%s: dead-lettered as %q, want %q", c.name, reason, c.reason)
			case inMessages || inCasts:
				t.Errorf("%s: dead-lettered and stored", c.name)
			default:
				t.Logf("%s: dead-lettered (%s)", c.name, reason)
			}
		case storedOrDead, keptOrDead:
			kept := inCasts
			if c.want == keptOrDead {
				kept = inMessages
			}
			switch {
			case dead && kept:
				t.Errorf("%s: dead-lettered (%s) and stored", c.name, reason)
			case dead:
				t.Logf("%s: dead-lettered (%s)", c.name, reason)
			case kept:
				t.Logf("%s: stored as valid", c.name)
			default:
				t.Errorf("%s: neither stored nor dead-lettered: dropped without a trace", c.name)
			}
		case stored:
			var text string
			if err := pl.pool.QueryRow(ctx, `SELECT text FROM casts WHERE hash = $1`, c.msg.GetHash()).Scan(&text); err != nil {
				t.Errorf("%s: not stored: %v", c.name, err)
			} else if strings.ContainsRune(text, 0) {
				t.Errorf("%s: stored text keeps NUL bytes", c.name)
			} else {
				t.Logf("%s: stored, text %q", c.name, text)
			}
		case gapReported, notDelivered:
			if dead || inMessages || inCasts {
				t.Errorf("%s: reached the sink", c.name)
			}
		}
	}
}

// mergeEvent wraps m in a MERGE_MESSAGE event; rebase gives it its id.
func mergeEvent(t *testing.T, shard uint32, m *pb.Message) []byte {
	return encodeEvent(t, shard, &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
		Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: m}}})
}

func encodeEvent(t *testing.T, shard uint32, ev *pb.HubEvent) []byte {
	t.Helper()
	ev.ShardIndex = shard
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rebase sets the id and block number of an encodable event to those of
// the next event the idle simulator will cut: the first after the block's
// confirmation in block height+1. Bytes that are not an event stay as
// they are.
func rebase(t *testing.T, pl *pipeline, shard uint32, raw []byte) []byte {
	t.Helper()
	ev := &pb.HubEvent{}
	if proto.Unmarshal(raw, ev) != nil || ev.GetShardIndex() != shard {
		return raw
	}
	next := pl.sim.Height(shard) + 1
	ev.Id, ev.BlockNumber = devnet.EventID(next, 1), next
	b, err := proto.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
