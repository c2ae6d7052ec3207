package devnet

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"google.golang.org/protobuf/proto"

	pb "github.com/waypointhq/waypoint/proto"
)

// Store names one store of the ground-truth state.
type Store string

// The stores of State.
const (
	StoreCasts                 Store = "casts"
	StoreReactions             Store = "reactions"
	StoreLinks                 Store = "links"
	StoreVerifications         Store = "verifications"
	StoreUserData              Store = "user_data"
	StoreUsernameProofMessages Store = "username_proof_messages"
	StoreLendStorage           Store = "lend_storage"
	StoreKeys                  Store = "keys"
	StoreLinkCompactState      Store = "link_compact_state"
	StoreUsernameProofs        Store = "username_proofs" // fname proofs
	StoreOnChainEvents         Store = "onchain_events"
)

var kindStores = [numKinds]Store{
	kindCasts: StoreCasts, kindReactions: StoreReactions, kindLinks: StoreLinks,
	kindVerifications: StoreVerifications, kindUserData: StoreUserData,
	kindUsernameProofs: StoreUsernameProofMessages, kindLends: StoreLendStorage, kindKeys: StoreKeys,
}

// State is the node's state after every conflict rule: what a consumer
// that applied the stream correctly must end up with. Lists are ordered by
// (timestamp, hash), proofs by name, on-chain events by arrival.
type State struct {
	// Messages holds the live messages per store and fid: the adds that
	// Get*ByFid returns (for user data, lend storage, username proof
	// messages and link compact state, every stored message).
	Messages map[Store]map[uint64][]*pb.Message
	// Removes holds the stored remove messages (CastRemove, ReactionRemove,
	// LinkRemove, VerificationRemove, KeyRemove) per store and fid;
	// GetAll*MessagesByFid returns Messages and Removes together.
	Removes map[Store]map[uint64][]*pb.Message
	// UsernameProofs holds the live fname proofs per owning fid.
	UsernameProofs map[uint64][]*pb.UserNameProof
	// OnChainEvents holds on-chain events per type and fid.
	OnChainEvents map[pb.OnChainEventType]map[uint64][]*pb.OnChainEvent
}

// State returns a snapshot of the ground truth.
func (s *Sim) State() *State {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := &State{
		Messages:       make(map[Store]map[uint64][]*pb.Message),
		Removes:        make(map[Store]map[uint64][]*pb.Message),
		UsernameProofs: make(map[uint64][]*pb.UserNameProof),
		OnChainEvents:  make(map[pb.OnChainEventType]map[uint64][]*pb.OnChainEvent),
	}
	put := func(m map[Store]map[uint64][]*pb.Message, store Store, fid uint64, raw []byte) {
		msg := new(pb.Message)
		if proto.Unmarshal(raw, msg) != nil {
			return
		}
		if m[store] == nil {
			m[store] = make(map[uint64][]*pb.Message)
		}
		m[store][fid] = append(m[store][fid], msg)
	}
	for fid, f := range s.fids {
		for k := range f.stores {
			for _, e := range f.stores[k].sorted {
				if e.remove {
					put(st.Removes, kindStores[k], fid, e.full())
				} else {
					put(st.Messages, kindStores[k], fid, e.full())
				}
			}
		}
		var compact []*entry
		for _, cs := range f.compact {
			compact = append(compact, cs.e)
		}
		sort.Slice(compact, func(i, j int) bool { return compact[i].less(compact[j]) })
		for _, e := range compact {
			put(st.Messages, StoreLinkCompactState, fid, e.full())
		}
		for t, evs := range f.onchain {
			if st.OnChainEvents[t] == nil {
				st.OnChainEvents[t] = make(map[uint64][]*pb.OnChainEvent)
			}
			for _, ev := range evs {
				st.OnChainEvents[t][fid] = append(st.OnChainEvents[t][fid], proto.Clone(ev).(*pb.OnChainEvent))
			}
		}
	}
	for _, p := range s.names {
		st.UsernameProofs[p.Fid] = append(st.UsernameProofs[p.Fid], proto.Clone(p).(*pb.UserNameProof))
	}
	for _, ps := range st.UsernameProofs {
		sort.Slice(ps, func(i, j int) bool { return string(ps[i].Name) < string(ps[j].Name) })
	}
	return st
}

// Hashes returns the live items of a store per fid as sorted strings:
// message hashes in 0x hex; names for StoreUsernameProofs; for
// StoreOnChainEvents, "<type>:<0x transaction hash>:<log index>".
func (st *State) Hashes(store Store) map[uint64][]string {
	out := make(map[uint64][]string)
	switch store {
	case StoreUsernameProofs:
		for fid, ps := range st.UsernameProofs {
			for _, p := range ps {
				out[fid] = append(out[fid], string(p.Name))
			}
		}
	case StoreOnChainEvents:
		for t, byFid := range st.OnChainEvents {
			for fid, evs := range byFid {
				for _, ev := range evs {
					out[fid] = append(out[fid], fmt.Sprintf("%d:0x%x:%d", t, ev.TransactionHash, ev.LogIndex))
				}
			}
		}
	default:
		for fid, ms := range st.Messages[store] {
			for _, m := range ms {
				out[fid] = append(out[fid], "0x"+hex.EncodeToString(m.Hash))
			}
		}
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

// DumpState writes the ground truth as JSON lines, one object per stored
// item with its store, fid, hash (or name) and key fields, in a stable
// order.
func (s *Sim) DumpState(w io.Writer) error {
	st := s.State()
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	write := func(v map[string]any) error {
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("devnet: write state dump: %w", err)
		}
		return nil
	}
	stores := []Store{StoreCasts, StoreReactions, StoreLinks, StoreVerifications, StoreUserData,
		StoreUsernameProofMessages, StoreLendStorage, StoreKeys, StoreLinkCompactState}
	for _, store := range stores {
		for _, side := range []map[Store]map[uint64][]*pb.Message{st.Messages, st.Removes} {
			for _, fid := range sortedFids(side[store]) {
				for _, m := range side[store][fid] {
					if err := write(messageLine(store, fid, m)); err != nil {
						return err
					}
				}
			}
		}
	}
	for _, fid := range sortedFids(st.UsernameProofs) {
		for _, p := range st.UsernameProofs[fid] {
			if err := write(map[string]any{
				"store": StoreUsernameProofs, "fid": fid, "name": string(p.Name), "timestamp": p.Timestamp,
				"owner": "0x" + hex.EncodeToString(p.Owner), "type": p.Type.String(),
			}); err != nil {
				return err
			}
		}
	}
	types := make([]int, 0, len(st.OnChainEvents))
	for t := range st.OnChainEvents {
		types = append(types, int(t))
	}
	sort.Ints(types)
	for _, t := range types {
		byFid := st.OnChainEvents[pb.OnChainEventType(t)]
		for _, fid := range sortedFids(byFid) {
			for _, ev := range byFid[fid] {
				if err := write(map[string]any{
					"store": StoreOnChainEvents, "fid": fid, "type": ev.Type.String(),
					"block_number": ev.BlockNumber, "log_index": ev.LogIndex,
					"transaction_hash": "0x" + hex.EncodeToString(ev.TransactionHash),
				}); err != nil {
					return err
				}
			}
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("devnet: write state dump: %w", err)
	}
	return nil
}

func sortedFids[V any](m map[uint64]V) []uint64 {
	fids := make([]uint64, 0, len(m))
	for fid := range m {
		fids = append(fids, fid)
	}
	sort.Slice(fids, func(i, j int) bool { return fids[i] < fids[j] })
	return fids
}

func messageLine(store Store, fid uint64, m *pb.Message) map[string]any {
	d, err := messageData(m)
	if err != nil || d == nil {
		d = &pb.MessageData{}
	}
	line := map[string]any{
		"store": store, "fid": fid, "hash": "0x" + hex.EncodeToString(m.Hash),
		"type": d.Type.String(), "timestamp": d.Timestamp,
	}
	switch b := d.Body.(type) {
	case *pb.MessageData_CastAddBody:
		if p := b.CastAddBody.GetParentCastId(); p != nil {
			line["parent_fid"], line["parent_hash"] = p.Fid, "0x"+hex.EncodeToString(p.Hash)
		}
		if u := b.CastAddBody.GetParentUrl(); u != "" {
			line["parent_url"] = u
		}
	case *pb.MessageData_CastRemoveBody:
		line["target_hash"] = "0x" + hex.EncodeToString(b.CastRemoveBody.TargetHash)
	case *pb.MessageData_ReactionBody:
		line["reaction_type"] = b.ReactionBody.Type.String()
		if c := b.ReactionBody.GetTargetCastId(); c != nil {
			line["target_fid"], line["target_hash"] = c.Fid, "0x"+hex.EncodeToString(c.Hash)
		} else {
			line["target_url"] = b.ReactionBody.GetTargetUrl()
		}
	case *pb.MessageData_LinkBody:
		line["link_type"], line["target_fid"] = b.LinkBody.Type, b.LinkBody.GetTargetFid()
	case *pb.MessageData_LinkCompactStateBody:
		line["link_type"], line["target_fids"] = b.LinkCompactStateBody.Type, b.LinkCompactStateBody.TargetFids
	case *pb.MessageData_VerificationAddAddressBody:
		line["address"], line["protocol"] = "0x"+hex.EncodeToString(b.VerificationAddAddressBody.Address), b.VerificationAddAddressBody.Protocol.String()
	case *pb.MessageData_VerificationRemoveBody:
		line["address"], line["protocol"] = "0x"+hex.EncodeToString(b.VerificationRemoveBody.Address), b.VerificationRemoveBody.Protocol.String()
	case *pb.MessageData_UserDataBody:
		line["user_data_type"], line["value"] = b.UserDataBody.Type.String(), b.UserDataBody.Value
	case *pb.MessageData_UsernameProofBody:
		line["name"] = string(b.UsernameProofBody.Name)
	case *pb.MessageData_LendStorageBody:
		line["to_fid"], line["num_units"] = b.LendStorageBody.ToFid, b.LendStorageBody.NumUnits
	case *pb.MessageData_KeyAddBody:
		line["key"] = "0x" + hex.EncodeToString(b.KeyAddBody.Key)
	case *pb.MessageData_KeyRemoveBody:
		line["key"] = "0x" + hex.EncodeToString(b.KeyRemoveBody.Key)
	}
	return line
}
