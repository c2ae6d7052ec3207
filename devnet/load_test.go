package devnet_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/devnet"
	pb "github.com/waypointhq/waypoint/proto"
)

// loadHistory is a history of fid 1 exercising every merge outcome: adds
// that prune the oldest casts once over the limit, a prunable cast,
// removes, conflicts, duplicates, a compact state, a refused network and
// a message the node cannot store. It has enough messages to be checked
// on every core.
func loadHistory(s *devnet.Signer) []*pb.Message {
	var h []*pb.Message
	casts := make([]*pb.Message, 120)
	for i := range casts {
		casts[i] = s.CastAdd(1, t0+uint32(10*i), fmt.Sprintf("cast %d", i))
	}
	h = append(h, casts...)
	h = append(h,
		s.CastAdd(1, t0-5, "older than everything kept: prunable"),
		s.CastRemove(1, t0+2000, casts[110].Hash),
		casts[110], // conflicts with its remove
		casts[119], // duplicate
		s.Reaction(1, t0+2001, true, pb.ReactionType_REACTION_TYPE_LIKE, &pb.CastId{Fid: 2, Hash: casts[3].Hash}),
		s.Reaction(1, t0+2002, false, pb.ReactionType_REACTION_TYPE_LIKE, &pb.CastId{Fid: 2, Hash: casts[3].Hash}),
		s.Reaction(1, t0+1999, true, pb.ReactionType_REACTION_TYPE_LIKE, &pb.CastId{Fid: 2, Hash: casts[3].Hash}),
		s.Link(1, t0+2003, true, "follow", 7),
		s.Link(1, t0+2004, true, "follow", 8),
		s.LinkCompactState(1, t0+2005, "follow", 8),
		s.UserData(1, t0+2006, pb.UserDataType_USER_DATA_TYPE_BIO, "bio"),
		s.WithNetwork(pb.FarcasterNetwork_FARCASTER_NETWORK_MAINNET).CastAdd(1, t0+2007, "wrong network"),
		s.CastAdd(1, t0+2008, string(bytes.Repeat([]byte("x"), 400))), // too long for a cast
	)
	return h
}

// outcome is what a simulator made of a history: its events (block
// positions blanked when blocks may differ), its state dump, and per
// refused message whether it was a merge failure (with its code) or a
// refusal without an event.
type outcome struct {
	events []*pb.HubEvent
	state  string
	errs   []string
}

func loadOutcome(t *testing.T, submit func(*devnet.Sim, []*pb.Message) []error, blocks bool) outcome {
	t.Helper()
	s := devnet.NewSigner(1)
	sim, c := dial(t, devnet.Options{Shards: 1, Limits: devnet.Limits{Casts: 100}})
	if err := sim.Register(1, s, 1); err != nil {
		t.Fatal(err)
	}
	var o outcome
	for _, err := range submit(sim, loadHistory(s)) {
		var me *devnet.MergeError
		if errors.As(err, &me) {
			o.errs = append(o.errs, me.Code)
		} else {
			o.errs = append(o.errs, "refused")
		}
	}
	o.events = replay(t, c, 1, 0)
	if !blocks {
		o.events = withoutBlocks(o.events)
		for _, ev := range o.events {
			ev.Id, ev.BlockNumber, ev.Timestamp = 0, 0, 0
		}
	}
	var buf bytes.Buffer
	if err := sim.DumpState(&buf); err != nil {
		t.Fatal(err)
	}
	o.state = buf.String()
	return o
}

// joined splits an error made by errors.Join.
func joined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err != nil {
		return []error{err}
	}
	return nil
}

func dataOf(msgs []*pb.Message) []*pb.MessageData {
	data := make([]*pb.MessageData, len(msgs))
	for i, m := range msgs {
		data[i] = m.Data
	}
	return data
}

// TestLoadMatchesSubmit checks that Load, which skips verifying the
// signatures it makes, leaves the same state, events and errors as
// submitting the same signed messages: in one call (then even the blocks
// match) and one message at a time (then the events match but for their
// block positions).
func TestLoadMatchesSubmit(t *testing.T) {
	load := func(sim *devnet.Sim, msgs []*pb.Message) []error {
		return joined(sim.Load(devnet.NewSigner(1), dataOf(msgs)...))
	}
	loaded := loadOutcome(t, load, true)
	if len(loaded.events) < 120 || len(loaded.errs) != 6 {
		t.Fatalf("history gave %d events and errors %v; the scenario no longer covers what it should", len(loaded.events), loaded.errs)
	}
	for _, tc := range []struct {
		name   string
		submit func(*devnet.Sim, []*pb.Message) []error
		blocks bool
	}{
		{"one call", func(sim *devnet.Sim, msgs []*pb.Message) []error { return joined(sim.Submit(msgs...)) }, true},
		{"one message at a time", func(sim *devnet.Sim, msgs []*pb.Message) []error {
			var errs []error
			for _, m := range msgs {
				errs = append(errs, joined(sim.Submit(m))...)
			}
			return errs
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := loadOutcome(t, tc.submit, tc.blocks)
			got := loaded
			if !tc.blocks {
				got = loadOutcome(t, load, false)
			}
			if fmt.Sprint(got.errs) != fmt.Sprint(want.errs) {
				t.Errorf("errors: loaded %v, submitted %v", got.errs, want.errs)
			}
			if got.state != want.state {
				t.Errorf("state differs:\nloaded:\n%s\nsubmitted:\n%s", got.state, want.state)
			}
			if len(got.events) != len(want.events) {
				t.Fatalf("loaded %d events, submitted %d", len(got.events), len(want.events))
			}
			for i := range got.events {
				if !proto.Equal(got.events[i], want.events[i]) {
					t.Fatalf("event %d differs:\nloaded:    %v\nsubmitted: %v", i, got.events[i], want.events[i])
				}
			}
		})
	}
}
