package devnet_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/waypointhq/waypoint/devnet"
	pb "github.com/waypointhq/waypoint/proto"
)

func hexOf(m *pb.Message) string { return "0x" + hex.EncodeToString(m.Hash) }

// step is one expected non-block event: its type and the hashes of its
// message and deleted messages.
type step struct {
	typ     pb.HubEventType
	msg     *pb.Message
	deleted []*pb.Message
}

func merged(m *pb.Message, deleted ...*pb.Message) step {
	return step{pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, m, deleted}
}
func failed(m *pb.Message) step {
	return step{typ: pb.HubEventType_HUB_EVENT_TYPE_MERGE_FAILURE, msg: m}
}
func pruned(m *pb.Message) step {
	return step{typ: pb.HubEventType_HUB_EVENT_TYPE_PRUNE_MESSAGE, msg: m}
}
func revoked(m *pb.Message) step {
	return step{typ: pb.HubEventType_HUB_EVENT_TYPE_REVOKE_MESSAGE, msg: m}
}

func eventMessage(ev *pb.HubEvent) (*pb.Message, []*pb.Message) {
	switch b := ev.Body.(type) {
	case *pb.HubEvent_MergeMessageBody:
		return b.MergeMessageBody.Message, b.MergeMessageBody.DeletedMessages
	case *pb.HubEvent_PruneMessageBody:
		return b.PruneMessageBody.Message, nil
	case *pb.HubEvent_RevokeMessageBody:
		return b.RevokeMessageBody.Message, nil
	case *pb.HubEvent_MergeFailure:
		return b.MergeFailure.Message, nil
	}
	return nil, nil
}

// expectSteps checks the shard's message events, in order.
// hexesOf returns the messages' hashes in hex, sorted.
func hexesOf(msgs ...*pb.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = hexOf(m)
	}
	slices.Sort(out)
	return out
}

func expectSteps(t *testing.T, c pb.HubServiceClient, shard uint32, want []step) {
	t.Helper()
	var got []*pb.HubEvent
	for _, ev := range withoutBlocks(replay(t, c, shard, 0)) {
		switch ev.Type {
		case pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, pb.HubEventType_HUB_EVENT_TYPE_PRUNE_MESSAGE,
			pb.HubEventType_HUB_EVENT_TYPE_REVOKE_MESSAGE, pb.HubEventType_HUB_EVENT_TYPE_MERGE_FAILURE:
			got = append(got, ev)
		}
	}
	if len(got) != len(want) {
		for _, ev := range got {
			m, _ := eventMessage(ev)
			t.Logf("got %v %s", ev.Type, hexOf(m))
		}
		t.Fatalf("shard %d: %d message events, want %d", shard, len(got), len(want))
	}
	for i, w := range want {
		m, del := eventMessage(got[i])
		if got[i].Type != w.typ || !bytes.Equal(m.GetHash(), w.msg.Hash) {
			t.Errorf("event %d: %v %s, want %v %s", i, got[i].Type, hexOf(m), w.typ, hexOf(w.msg))
		}
		var gd, wd []string
		for _, d := range del {
			gd = append(gd, hexOf(d))
		}
		for _, d := range w.deleted {
			wd = append(wd, hexOf(d))
		}
		if !slices.Equal(gd, wd) {
			t.Errorf("event %d deleted %v, want %v", i, gd, wd)
		}
	}
}

// expectLive checks the state's live messages of a store for fid.
func expectLive(t *testing.T, sim *devnet.Sim, store devnet.Store, fid uint64, want ...*pb.Message) {
	t.Helper()
	got := sim.State().Hashes(store)[fid]
	var w []string
	for _, m := range want {
		w = append(w, hexOf(m))
	}
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Errorf("%s of fid %d: %v, want %v", store, fid, got, w)
	}
}

func submit(t *testing.T, sim *devnet.Sim, msgs ...*pb.Message) {
	t.Helper()
	if err := sim.Submit(msgs...); err != nil {
		t.Fatalf("submit: %v", err)
	}
}

func submitFails(t *testing.T, sim *devnet.Sim, code string, m *pb.Message) {
	t.Helper()
	if got := mergeCode(sim.Submit(m)); got != code {
		t.Fatalf("submit %s: code %q, want %q", hexOf(m), got, code)
	}
}

// fid 1 is on shard 1 and fid 2 on shard 2 (two shards).
const fidA, fidB = 1, 2

func TestSemantics(t *testing.T) {
	t.Parallel()
	target := &pb.CastId{Fid: fidB, Hash: bytes.Repeat([]byte{7}, 20)}
	tests := []struct {
		name string
		opts devnet.Options
		run  func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer)
	}{
		{name: "cast add then remove", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			add := s.CastAdd(fidA, t0, "hello 🌍")
			rm := s.CastRemove(fidA, t0-10, add.Hash) // remove wins whatever its timestamp
			submit(t, sim, add, rm)
			expectSteps(t, c, 1, []step{merged(add), merged(rm, add)})
			expectLive(t, sim, devnet.StoreCasts, fidA)
			if got := sim.State().Removes[devnet.StoreCasts][fidA]; len(got) != 1 || !bytes.Equal(got[0].Hash, rm.Hash) {
				t.Errorf("cast removes: %v", got)
			}
			_, err := c.GetCast(context.Background(), &pb.CastId{Fid: fidA, Hash: add.Hash})
			wantCode(t, err, codes.NotFound, "GetCast of a removed cast")
			all, err := c.GetAllCastMessagesByFid(context.Background(), &pb.FidTimestampRequest{Fid: fidA})
			if err != nil || len(all.Messages) != 1 || !bytes.Equal(all.Messages[0].Hash, rm.Hash) {
				t.Errorf("GetAllCastMessagesByFid: %v %v", all, err)
			}
		}},
		{name: "cast remove before add", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			add := s.CastAdd(fidA, t0, "late")
			rm := s.CastRemove(fidA, t0+1, add.Hash)
			submit(t, sim, rm)
			submitFails(t, sim, "bad_request.conflict", add)
			expectSteps(t, c, 1, []step{merged(rm), failed(add)})
			expectLive(t, sim, devnet.StoreCasts, fidA)
		}},
		{name: "duplicate is a merge failure", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			add := s.CastAdd(fidA, t0, "twice")
			submit(t, sim, add)
			submitFails(t, sim, "bad_request.duplicate", add)
			expectSteps(t, c, 1, []step{merged(add), failed(add)})
			expectLive(t, sim, devnet.StoreCasts, fidA, add)
		}},
		{name: "reaction tie: remove beats add", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			add := s.Reaction(fidA, t0, true, pb.ReactionType_REACTION_TYPE_LIKE, target)
			rm := s.Reaction(fidA, t0, false, pb.ReactionType_REACTION_TYPE_LIKE, target)
			submit(t, sim, add, rm)
			// Same tie the other way round: the add loses.
			add2 := s.Reaction(fidA, t0, true, pb.ReactionType_REACTION_TYPE_RECAST, target)
			rm2 := s.Reaction(fidA, t0, false, pb.ReactionType_REACTION_TYPE_RECAST, target)
			submit(t, sim, rm2)
			submitFails(t, sim, "bad_request.conflict", add2)
			expectSteps(t, c, 1, []step{merged(add), merged(rm, add), merged(rm2), failed(add2)})
			expectLive(t, sim, devnet.StoreReactions, fidA)
		}},
		{name: "reaction later add wins", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			rm := s.Reaction(fidA, t0, false, pb.ReactionType_REACTION_TYPE_LIKE, target)
			add := s.Reaction(fidA, t0+1, true, pb.ReactionType_REACTION_TYPE_LIKE, target)
			old := s.Reaction(fidA, t0-1, false, pb.ReactionType_REACTION_TYPE_LIKE, target)
			submit(t, sim, rm, add)
			submitFails(t, sim, "bad_request.conflict", old)
			expectSteps(t, c, 1, []step{merged(rm), merged(add, rm), failed(old)})
			expectLive(t, sim, devnet.StoreReactions, fidA, add)
			got, err := c.GetReactionsByFid(context.Background(), &pb.ReactionsByFidRequest{Fid: fidA})
			if err != nil || len(got.Messages) != 1 || !bytes.Equal(got.Messages[0].Hash, add.Hash) {
				t.Errorf("GetReactionsByFid: %v %v", got, err)
			}
		}},
		{name: "user data tie: higher hash wins", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			a := s.UserData(fidA, t0, pb.UserDataType_USER_DATA_TYPE_BIO, "first")
			b := s.UserData(fidA, t0, pb.UserDataType_USER_DATA_TYPE_BIO, "second")
			hi, lo := a, b
			if bytes.Compare(a.Hash, b.Hash) < 0 {
				hi, lo = b, a
			}
			submit(t, sim, lo, hi)
			// Submitted again, the lower hash loses the tie.
			submitFails(t, sim, "bad_request.conflict", lo)
			expectSteps(t, c, 1, []step{merged(lo), merged(hi, lo), failed(lo)})
			expectLive(t, sim, devnet.StoreUserData, fidA, hi)
		}},
		{name: "link last write wins", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			add := s.Link(fidA, t0, true, "follow", fidB)
			oldRm := s.Link(fidA, t0-1, false, "follow", fidB)
			rm := s.Link(fidA, t0+5, false, "follow", fidB)
			submit(t, sim, add)
			submitFails(t, sim, "bad_request.conflict", oldRm)
			submit(t, sim, rm)
			expectSteps(t, c, 1, []step{merged(add), failed(oldRm), merged(rm, add)})
			expectLive(t, sim, devnet.StoreLinks, fidA)
		}},
		{name: "prune at limit", opts: devnet.Options{Limits: devnet.Limits{Casts: 2}}, run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			c1, c2, c3 := s.CastAdd(fidA, t0+1, "one"), s.CastAdd(fidA, t0+2, "two"), s.CastAdd(fidA, t0+3, "three")
			tooOld := s.CastAdd(fidA, t0, "zero")
			submit(t, sim, c2, c1, c3)
			submitFails(t, sim, "bad_request.prunable", tooOld)
			expectSteps(t, c, 1, []step{merged(c2), merged(c1), merged(c3), pruned(c1), failed(tooOld)})
			expectLive(t, sim, devnet.StoreCasts, fidA, c2, c3)
		}},
		{name: "prune counts storage units", opts: devnet.Options{Limits: devnet.Limits{Reactions: 1}}, run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			if err := sim.Register(fidA, s, 2); err != nil {
				t.Fatal(err)
			}
			var rs []*pb.Message
			for i := range 3 {
				rs = append(rs, s.Reaction(fidA, t0+uint32(i), true, pb.ReactionType_REACTION_TYPE_LIKE, &pb.CastId{Fid: fidB, Hash: bytes.Repeat([]byte{byte(i)}, 20)}))
			}
			submit(t, sim, rs...)
			expectSteps(t, c, 1, []step{merged(rs[0]), merged(rs[1]), merged(rs[2]), pruned(rs[0])})
			expectLive(t, sim, devnet.StoreReactions, fidA, rs[1], rs[2])
		}},
		{name: "revoke on fname transfer", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			if err := sim.SubmitUsernameProofs(devnet.FnameProof("alice", fidA, 1_700_000_000, nil)); err != nil {
				t.Fatal(err)
			}
			bad := s.UserData(fidB, t0, pb.UserDataType_USER_DATA_TYPE_USERNAME, "alice")
			submitFails(t, sim, "bad_request.validation_failure", bad)
			name := s.UserData(fidA, t0, pb.UserDataType_USER_DATA_TYPE_USERNAME, "alice")
			submit(t, sim, name)
			if err := sim.SubmitUsernameProofs(devnet.FnameProof("alice", fidB, 1_700_000_100, nil)); err != nil {
				t.Fatal(err)
			}
			if err := sim.SubmitUsernameProofs(devnet.FnameProof("alice", fidA, 1_700_000_050, nil)); mergeCode(err) != "bad_request.conflict" {
				t.Errorf("older proof: %v", err)
			}
			expectSteps(t, c, 1, []step{merged(name), revoked(name)})
			expectSteps(t, c, 2, []step{failed(bad)})
			expectLive(t, sim, devnet.StoreUserData, fidA)
			st := sim.State()
			if got := st.Hashes(devnet.StoreUsernameProofs); !slices.Equal(got[fidB], []string{"alice"}) || len(got[fidA]) != 0 {
				t.Errorf("fname proofs: %v", got)
			}
			// The proof events are on both shards, the transfer carrying the old proof.
			for shard := uint32(1); shard <= 2; shard++ {
				var proofs []*pb.MergeUserNameProofBody
				for _, ev := range replay(t, c, shard, 0) {
					if b := ev.GetMergeUsernameProofBody(); b != nil {
						proofs = append(proofs, b)
					}
				}
				if len(proofs) != 2 || proofs[1].UsernameProof.Fid != fidB || proofs[1].DeletedUsernameProof.GetFid() != fidA {
					t.Errorf("shard %d proof events: %v", shard, proofs)
				}
			}
			got, err := c.GetUserNameProofsByFid(context.Background(), &pb.FidRequest{Fid: fidB})
			if err != nil || len(got.Proofs) != 1 || string(got.Proofs[0].Name) != "alice" {
				t.Errorf("GetUserNameProofsByFid: %v %v", got, err)
			}
		}},
		{name: "revoke primary address on verification remove", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			addr, _ := hex.DecodeString("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
			v := s.VerificationAdd(fidA, t0, pb.Protocol_PROTOCOL_ETHEREUM, addr)
			// EIP-55 form of the address, the test vector of the EIP.
			primary := s.UserData(fidA, t0+1, pb.UserDataType_USER_DATA_PRIMARY_ADDRESS_ETHEREUM, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
			unverified := s.UserData(fidA, t0+1, pb.UserDataType_USER_DATA_PRIMARY_ADDRESS_ETHEREUM, "0x0000000000000000000000000000000000000001")
			rm := s.VerificationRemove(fidA, t0+2, pb.Protocol_PROTOCOL_ETHEREUM, addr)
			submit(t, sim, v, primary)
			submitFails(t, sim, "bad_request.validation_failure", unverified)
			submit(t, sim, rm)
			expectSteps(t, c, 1, []step{merged(v), merged(primary), failed(unverified), merged(rm, v), revoked(primary)})
			expectLive(t, sim, devnet.StoreUserData, fidA)
			expectLive(t, sim, devnet.StoreVerifications, fidA)
		}},
		{name: "link compact state", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			l3, l4, l5 := s.Link(fidA, t0, true, "follow", 3), s.Link(fidA, t0, true, "follow", 4), s.Link(fidA, t0, true, "follow", 5)
			rm6 := s.Link(fidA, t0, false, "follow", 6)
			block := s.Link(fidA, t0, true, "block", 9)
			later := s.Link(fidA, t0+20, true, "follow", 7)
			// As old as the state and merged before it: swept, as Snapchain
			// sweeps every link not newer than the state.
			tie := s.Link(fidA, t0+10, true, "follow", 10)
			cs := s.LinkCompactState(fidA, t0+10, "follow", 3, 5)
			stale := s.Link(fidA, t0+5, true, "follow", 8)
			oldRemove := s.Link(fidA, t0+5, false, "follow", 5)
			inList := s.Link(fidA, t0+5, true, "follow", 3)
			// As old as the state but merged after it: kept, since only an
			// older add or remove is rejected.
			tieAfter := s.Link(fidA, t0+10, true, "follow", 11)
			tieRemove := s.Link(fidA, t0+10, false, "follow", 3)
			cs2 := s.LinkCompactState(fidA, t0+30, "follow", 5, 7, 11)
			submit(t, sim, l3, l4, l5, rm6, block, later, tie, cs)
			submitFails(t, sim, "bad_request.conflict", stale)
			submitFails(t, sim, "bad_request.conflict", s.LinkCompactState(fidA, t0+9, "follow"))
			submitFails(t, sim, "bad_request.prunable", oldRemove)
			submit(t, sim, inList, tieAfter, tieRemove, cs2)
			expectLive(t, sim, devnet.StoreLinks, fidA, l5, block, later, tieAfter)
			expectLive(t, sim, devnet.StoreLinkCompactState, fidA, cs2)
			// The merge event of a compact state reports what it swept, the
			// state it replaced included.
			want := map[string][]string{hexOf(cs): hexesOf(l4, rm6, tie), hexOf(cs2): hexesOf(cs, tieRemove)}
			for _, ev := range replay(t, c, 1, 0) {
				m := ev.GetMergeMessageBody()
				if m == nil || want[hexOf(m.Message)] == nil {
					continue
				}
				if got := hexesOf(m.DeletedMessages...); !slices.Equal(got, want[hexOf(m.Message)]) {
					t.Errorf("compact state %s reports deleted %v, want %v", hexOf(m.Message), got, want[hexOf(m.Message)])
				}
				delete(want, hexOf(m.Message))
			}
			if len(want) > 0 {
				t.Errorf("no merge event for compact states %v", want)
			}
			got, err := c.GetLinkCompactStateMessageByFid(context.Background(), &pb.FidRequest{Fid: fidA})
			if err != nil || len(got.Messages) != 1 || !bytes.Equal(got.Messages[0].Hash, cs2.Hash) {
				t.Errorf("GetLinkCompactStateMessageByFid: %v %v", got, err)
			}
		}},
		{name: "key add and lend storage on every shard", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			key := devnet.NewSigner(99).PublicKey()
			ka := s.KeyAdd(fidA, t0, key)
			lend := s.LendStorage(fidA, t0, fidB, 1)
			submit(t, sim, ka, lend)
			ids := map[string][]uint64{}
			for shard := uint32(1); shard <= 2; shard++ {
				for _, ev := range replay(t, c, shard, 0) {
					if m := ev.GetMergeMessageBody(); m != nil {
						ids[hexOf(m.Message)] = append(ids[hexOf(m.Message)], ev.Id)
						if ev.ShardIndex != shard {
							t.Errorf("event on shard %d says shard %d", shard, ev.ShardIndex)
						}
					}
				}
			}
			for _, m := range []*pb.Message{ka, lend} {
				if len(ids[hexOf(m)]) != 2 {
					t.Errorf("%v merged on %d shards, want 2", m.Data.Type, len(ids[hexOf(m)]))
				}
			}
			expectLive(t, sim, devnet.StoreKeys, fidA, ka)
			expectLive(t, sim, devnet.StoreLendStorage, fidA, lend)
			end := s.LendStorage(fidA, t0+1, fidB, 0)
			submit(t, sim, end)
			expectSteps(t, c, 2, []step{merged(ka), merged(lend), merged(end, lend), pruned(end)})
			expectLive(t, sim, devnet.StoreLendStorage, fidA)
		}},
		{name: "shard routing", opts: devnet.Options{Shards: 2}, run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			for fid, want := range map[uint64]uint32{1: 1, 2: 2, 3: 1, 1234: 1} {
				if got := sim.ShardFor(fid); got != want {
					t.Errorf("ShardFor(%d) = %d, want %d", fid, got, want)
				}
			}
			m3, m2 := s.CastAdd(3, t0, "three"), s.CastAdd(2, t0, "two")
			submit(t, sim, m3, m2)
			expectSteps(t, c, 1, []step{merged(m3)})
			expectSteps(t, c, 2, []step{merged(m2)})
		}},
		{name: "invalid messages are refused without an event", run: func(t *testing.T, sim *devnet.Sim, c pb.HubServiceClient, s *devnet.Signer) {
			m := s.CastAdd(fidA, t0, "tampered")
			m.Hash[0] ^= 1
			if err := sim.Submit(m); err == nil {
				t.Error("submit with a bad hash succeeded")
			}
			other := s.WithNetwork(pb.FarcasterNetwork_FARCASTER_NETWORK_MAINNET).CastAdd(fidA, t0, "wrong network")
			if err := sim.Submit(other); err == nil {
				t.Error("submit for another network succeeded")
			}
			expectSteps(t, c, 1, nil)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, c := dial(t, tc.opts)
			tc.run(t, sim, c, devnet.NewSigner(1))
		})
	}
}
