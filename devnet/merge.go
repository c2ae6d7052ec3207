package devnet

import (
	"bytes"
	"encoding/hex"
	"strings"

	"google.golang.org/protobuf/proto"

	pb "github.com/waypointhq/waypoint/proto"
)

// The merge functions apply Snapchain's conflict rules to the state and queue
// the resulting events on the shards' pending blocks. They run with s.mu
// held for writing.

func (s *Sim) fidLocked(fid uint64) *fidState {
	f := s.fids[fid]
	if f == nil {
		f = &fidState{fid: fid}
		s.fids[fid] = f
	}
	return f
}

// emit queues ev on the fid's shard, or on every data shard.
func (s *Sim) emit(fid uint64, everywhere bool, ev pendingEvent) {
	if everywhere {
		for _, sh := range s.shards[1:] {
			sh.pending = append(sh.pending, ev)
		}
		return
	}
	sh := s.shards[s.shardFor(fid)]
	sh.pending = append(sh.pending, ev)
}

func (s *Sim) fail(fid uint64, everywhere bool, raw []byte, err *MergeError) *MergeError {
	s.emit(fid, everywhere, failureEvent(raw, err.Code, err.Reason))
	return err
}

// mergeLocked merges one message whose hash and signature were checked.
func (s *Sim) mergeLocked(raw []byte, hash [20]byte, d *pb.MessageData) *MergeError {
	e := &entry{ts: d.Timestamp, hash: hash, raw: raw}
	cross := isCrossShard(d.Type)
	if d.Fid == 0 {
		return s.fail(d.Fid, cross, raw, withHash(mergeErr(codeValidation, "fid is 0"), hash))
	}
	if d.Type == pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE {
		return withHash(s.mergeCompactLocked(e, d), hash)
	}
	k, err := classify(d, e)
	if err != nil {
		return s.fail(d.Fid, cross, raw, withHash(err, hash))
	}
	f := s.fidLocked(d.Fid)
	st := &f.stores[k]
	existing := st.byKey[e.key]
	if existing != nil && existing.hash == e.hash {
		return s.fail(d.Fid, cross, raw, withHash(mergeErr(codeDuplicate, "message has already been merged"), hash))
	}
	if k == kindUserData {
		if err := s.checkUserData(f, d.GetUserDataBody()); err != nil {
			return s.fail(d.Fid, cross, raw, withHash(err, hash))
		}
	}
	if lim := s.limit(f, k); lim > 0 && len(st.sorted) >= lim && e.less(st.sorted[0]) {
		return s.fail(d.Fid, cross, raw, withHash(mergeErr(codePrunable, "message would be pruned"), hash))
	}
	// A compact state of the link's type rejects what it would have swept
	// had the link come first, except at its own timestamp: the sweep takes
	// links as old as the state, the rejection only older ones.
	if cs := f.compact[e.aux]; k == kindLinks && cs != nil && e.ts < cs.e.ts {
		if e.remove {
			return s.fail(d.Fid, cross, raw, withHash(mergeErr(codePrunable, "a link remove older than the compact state would be pruned at once"), hash))
		}
		if !cs.targets[e.num] {
			return s.fail(d.Fid, cross, raw, withHash(mergeErr(codeConflict, "target fid %d not in the compact state target fids", e.num), hash))
		}
	}
	if existing != nil {
		switch {
		case k == kindCasts && existing.remove && !e.remove:
			return s.fail(d.Fid, cross, raw, withHash(mergeErr(codeConflict, "message conflicts with a CastRemove"), hash))
		case k == kindCasts && !existing.remove && e.remove:
			// Remove wins over the add whatever the timestamps.
		case !e.beats(existing):
			return s.fail(d.Fid, cross, raw, withHash(mergeErr(codeConflict, "message conflicts with a more recent %v", existing.mtype), hash))
		}
		s.storeDelete(f, k, existing)
	}
	s.storeInsert(f, k, e)
	var deleted [][]byte
	if existing != nil {
		deleted = [][]byte{existing.full()}
	}
	s.emit(d.Fid, cross, ownedMergeEvent(e, deleted...))

	if existing != nil && k == kindVerifications && !existing.remove {
		s.revokePrimaryLocked(f, existing)
	}
	if k == kindLends && e.units == 0 {
		// A lend of zero units ends the lend; the node prunes it at once so
		// it does not hold storage.
		s.storeDelete(f, k, e)
		s.emit(d.Fid, true, pruneEvent(e.full()))
	}
	s.pruneLocked(f, k, cross)
	return nil
}

func withHash(err *MergeError, h [20]byte) *MergeError {
	if err != nil && err.Hash == nil {
		err.Hash = append([]byte(nil), h[:]...)
	}
	return err
}

func (s *Sim) storeInsert(f *fidState, k kind, e *entry) {
	f.stores[k].insert(e)
	s.numMessages++
	if k == kindLends {
		f.lent += e.units
		s.fidLocked(e.num).borrowed += e.units
	}
}

func (s *Sim) storeDelete(f *fidState, k kind, e *entry) {
	f.stores[k].delete(e)
	s.numMessages--
	if k == kindLends {
		f.lent -= e.units
		s.fidLocked(e.num).borrowed -= e.units
	}
}

// pruneLocked drops the oldest messages of a store over its limit.
func (s *Sim) pruneLocked(f *fidState, k kind, cross bool) {
	lim := s.limit(f, k)
	if lim == 0 {
		return
	}
	st := &f.stores[k]
	for len(st.sorted) > lim {
		old := st.sorted[0]
		s.storeDelete(f, k, old)
		s.emit(f.fid, cross, pruneEvent(old.full()))
	}
}

func (s *Sim) revokeLocked(f *fidState, k kind, e *entry) {
	s.storeDelete(f, k, e)
	s.emit(f.fid, false, revokeEvent(e.full()))
}

// revokePrimaryLocked revokes the user's primary address when it names a
// verification that a merge just deleted.
func (s *Sim) revokePrimaryLocked(f *fidState, verification *entry) {
	t := pb.UserDataType_USER_DATA_PRIMARY_ADDRESS_ETHEREUM
	if pb.Protocol(verification.num) == pb.Protocol_PROTOCOL_SOLANA {
		t = pb.UserDataType_USER_DATA_PRIMARY_ADDRESS_SOLANA
	}
	ud := f.stores[kindUserData].byKey[u64key(uint64(t))]
	if ud != nil && ud.aux != "" && sameAddress(ud.aux, []byte(verification.key), pb.Protocol(verification.num)) {
		s.revokeLocked(f, kindUserData, ud)
	}
}

// sameAddress compares a primary-address user data value with a verified
// address: checksummed hex for Ethereum (compared without case), base58
// for Solana.
func sameAddress(value string, addr []byte, p pb.Protocol) bool {
	if p == pb.Protocol_PROTOCOL_SOLANA {
		return value == base58(addr)
	}
	return strings.EqualFold(value, "0x"+hex.EncodeToString(addr))
}

// checkUserData applies the node's ownership checks: a username must be
// an fname or ENS name the fid holds, a primary address one it verified.
func (s *Sim) checkUserData(f *fidState, b *pb.UserDataBody) *MergeError {
	if b.Value == "" {
		return nil
	}
	switch b.Type {
	case pb.UserDataType_USER_DATA_TYPE_USERNAME:
		if strings.Contains(b.Value, ".") {
			if f.stores[kindUsernameProofs].byKey[b.Value] == nil {
				return mergeErr(codeValidation, "no username proof for %q from fid %d", b.Value, f.fid)
			}
			return nil
		}
		if p := s.names[b.Value]; p == nil || p.Fid != f.fid {
			return mergeErr(codeValidation, "fname %q is not registered to fid %d", b.Value, f.fid)
		}
	case pb.UserDataType_USER_DATA_PRIMARY_ADDRESS_ETHEREUM, pb.UserDataType_USER_DATA_PRIMARY_ADDRESS_SOLANA:
		p := pb.Protocol_PROTOCOL_ETHEREUM
		if b.Type == pb.UserDataType_USER_DATA_PRIMARY_ADDRESS_SOLANA {
			p = pb.Protocol_PROTOCOL_SOLANA
		}
		for _, v := range f.stores[kindVerifications].byKey {
			if !v.remove && pb.Protocol(v.num) == p && sameAddress(b.Value, []byte(v.key), p) {
				return nil
			}
		}
		return mergeErr(codeValidation, "primary address %q is not verified by fid %d", b.Value, f.fid)
	}
	return nil
}

func (s *Sim) mergeCompactLocked(e *entry, d *pb.MessageData) *MergeError {
	b := d.GetLinkCompactStateBody()
	if b == nil || b.Type == "" || len(b.Type) > 8 {
		return s.fail(d.Fid, false, e.raw, mergeErr(codeValidation, "link compact state needs a link type of 1 to 8 bytes"))
	}
	e.mtype, e.key, e.aux = d.Type, b.Type, b.Type
	f := s.fidLocked(d.Fid)
	if f.compact == nil {
		f.compact = make(map[string]*compactState)
	}
	if cs := f.compact[b.Type]; cs != nil {
		if cs.e.hash == e.hash {
			return s.fail(d.Fid, false, e.raw, mergeErr(codeDuplicate, "message has already been merged"))
		}
		if cs.e.ts >= e.ts {
			return s.fail(d.Fid, false, e.raw, mergeErr(codeConflict, "a newer compact state message is already merged"))
		}
	}
	targets := make(map[uint64]bool, len(b.TargetFids))
	for _, t := range b.TargetFids {
		targets[t] = true
	}
	// The state replaces the one before it and sweeps the links of its type
	// not newer than itself (a tie included) that are removes or whose
	// target it does not list. The merge event reports all of them deleted.
	var swept []*entry
	if old := f.compact[b.Type]; old != nil {
		swept = append(swept, old.e)
	} else {
		s.numMessages++
	}
	var links []*entry
	for _, l := range f.stores[kindLinks].sorted {
		if l.ts > e.ts {
			break
		}
		if l.aux == b.Type && (l.remove || !targets[l.num]) {
			links = append(links, l)
		}
	}
	for _, l := range links {
		s.storeDelete(f, kindLinks, l)
	}
	swept = append(swept, links...)
	f.compact[b.Type] = &compactState{e: e, targets: targets}
	deleted := make([][]byte, len(swept))
	for i, l := range swept {
		deleted[i] = l.full()
	}
	s.emit(d.Fid, false, ownedMergeEvent(e, deleted...))
	return nil
}

// remergeLocked emits a merge event again for a message that is still
// stored, as a node replaying its log does: same message, new event id.
func (s *Sim) remergeLocked(fid uint64, hash [20]byte) bool {
	f := s.fids[fid]
	if f == nil {
		return false
	}
	for k := range f.stores {
		for _, e := range f.stores[k].sorted {
			if e.hash == hash {
				s.emit(fid, isCrossShard(e.mtype), mergeEvent(e.full()))
				return true
			}
		}
	}
	return false
}

// mergeOnChainLocked stores an on-chain event on its fid's shard.
func (s *Sim) mergeOnChainLocked(ev *pb.OnChainEvent) *MergeError {
	if ev.Fid == 0 || ev.Type == pb.OnChainEventType_EVENT_TYPE_NONE {
		return mergeErr(codeValidation, "on-chain event needs a fid and a type")
	}
	f := s.fidLocked(ev.Fid)
	for _, o := range f.onchain[ev.Type] {
		if o.BlockNumber == ev.BlockNumber && o.LogIndex == ev.LogIndex && bytes.Equal(o.TransactionHash, ev.TransactionHash) {
			return mergeErr(codeDuplicate, "on-chain event already merged")
		}
	}
	raw, err := deterministic.Marshal(ev)
	if err != nil {
		return mergeErr(codeValidation, "encode on-chain event: %v", err)
	}
	ev = proto.Clone(ev).(*pb.OnChainEvent)
	if f.onchain == nil {
		f.onchain = make(map[pb.OnChainEventType][]*pb.OnChainEvent)
	}
	f.onchain[ev.Type] = append(f.onchain[ev.Type], ev)
	switch ev.Type {
	case pb.OnChainEventType_EVENT_TYPE_ID_REGISTER:
		if !f.registered {
			f.registered = true
			s.numRegistered++
		}
	case pb.OnChainEventType_EVENT_TYPE_STORAGE_RENT:
		f.rented += uint64(ev.GetStorageRentEventBody().GetUnits())
	}
	s.emit(ev.Fid, false, onChainEvent(raw))
	return nil
}

// mergeProofLocked applies an fname proof: the higher timestamp (then
// signature) wins, fid 0 deletes the name, and moving a name away from a
// fid revokes that fid's USERNAME.
func (s *Sim) mergeProofLocked(p *pb.UserNameProof) *MergeError {
	if len(p.Name) == 0 {
		return mergeErr(codeValidation, "username proof without a name")
	}
	name := string(p.Name)
	existing := s.names[name]
	if existing != nil {
		c := compareProofs(existing, p)
		if c == 0 {
			return mergeErr(codeDuplicate, "username proof already exists")
		}
		if c > 0 {
			return mergeErr(codeConflict, "event conflicts with a more recent UserNameProof")
		}
	} else if p.Fid == 0 {
		return mergeErr(codeConflict, "proof does not exist")
	}
	raw, err := deterministic.Marshal(p)
	if err != nil {
		return mergeErr(codeValidation, "encode username proof: %v", err)
	}
	var oldRaw []byte
	if existing != nil {
		if oldRaw, err = deterministic.Marshal(existing); err != nil {
			return mergeErr(codeValidation, "encode username proof: %v", err)
		}
	}
	p = proto.Clone(p).(*pb.UserNameProof)
	if p.Fid == 0 {
		delete(s.names, name)
	} else {
		s.names[name] = p
	}
	s.emit(0, true, proofEvent(raw, oldRaw))
	if existing != nil && existing.Fid != 0 && existing.Fid != p.Fid {
		if f := s.fids[existing.Fid]; f != nil {
			if ud := f.stores[kindUserData].byKey[u64key(uint64(pb.UserDataType_USER_DATA_TYPE_USERNAME))]; ud != nil {
				s.revokeLocked(f, kindUserData, ud)
			}
		}
	}
	return nil
}

func compareProofs(a, b *pb.UserNameProof) int {
	switch {
	case a.Timestamp < b.Timestamp:
		return -1
	case a.Timestamp > b.Timestamp:
		return 1
	}
	return bytes.Compare(a.Signature, b.Signature)
}
