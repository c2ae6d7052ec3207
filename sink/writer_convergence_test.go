package sink

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	pb "github.com/waypointhq/waypoint/proto"
)

// The reference model: the node's state as a function of the set of
// messages, marks (prune, revoke, merge-reported deletion) and proofs seen,
// written from the conflict rules independently of the SQL. A mark is final
// for its message; the live version of a conflict key is the winner among
// the versions not marked (none when that winner is a remove), so a version
// that lost to one later pruned or revoked is live again.

type refVersion struct {
	msg    *pb.Message
	ts     uint32
	remove bool
}

// beats orders versions of one key: timestamp, then remove over add, then hash.
func (a refVersion) beats(b refVersion) bool {
	if a.ts != b.ts {
		return a.ts > b.ts
	}
	if a.remove != b.remove {
		return a.remove
	}
	return bytes.Compare(a.msg.Hash, b.msg.Hash) > 0
}

// refProof is one fname proof; fid 0 deletes the name.
type refProof struct {
	p *pb.UserNameProof
}

func (a refProof) deletion() bool { return a.p.Fid == 0 }

// id identifies a proof: a merge reports a deleted proof by its content.
func (a refProof) id() string {
	return fmt.Sprintf("%s|%d|%x", a.p.Name, a.p.Timestamp, a.p.Signature)
}

// beats orders the proofs of one name: timestamp, then a deletion, then
// signature and fid.
func (a refProof) beats(b refProof) bool {
	if a.p.Timestamp != b.p.Timestamp {
		return a.p.Timestamp > b.p.Timestamp
	}
	if a.deletion() != b.deletion() {
		return a.deletion()
	}
	if c := bytes.Compare(a.p.Signature, b.p.Signature); c != 0 {
		return c > 0
	}
	return a.p.Fid > b.p.Fid
}

type refModel struct {
	msgs         map[string]*pb.Message
	marked       map[string]bool
	proofs       map[string]refProof
	markedProofs map[string]bool
	custody      map[uint64][]*pb.OnChainEvent
}

func newRefModel() *refModel {
	return &refModel{msgs: map[string]*pb.Message{}, marked: map[string]bool{}, proofs: map[string]refProof{},
		markedProofs: map[string]bool{}, custody: map[uint64][]*pb.OnChainEvent{}}
}

// observe folds one event into the model's input sets.
func (r *refModel) observe(ev *pb.HubEvent) {
	switch b := ev.Body.(type) {
	case *pb.HubEvent_MergeMessageBody:
		r.msgs[string(b.MergeMessageBody.Message.Hash)] = b.MergeMessageBody.Message
		for _, d := range b.MergeMessageBody.DeletedMessages {
			r.msgs[string(d.Hash)] = d
			r.marked[string(d.Hash)] = true
		}
	case *pb.HubEvent_PruneMessageBody:
		m := b.PruneMessageBody.Message
		r.msgs[string(m.Hash)], r.marked[string(m.Hash)] = m, true
	case *pb.HubEvent_RevokeMessageBody:
		m := b.RevokeMessageBody.Message
		r.msgs[string(m.Hash)], r.marked[string(m.Hash)] = m, true
	case *pb.HubEvent_MergeUsernameProofBody:
		if p := b.MergeUsernameProofBody.UsernameProof; p != nil {
			r.proofs[refProof{p}.id()] = refProof{p}
		}
		if p := b.MergeUsernameProofBody.DeletedUsernameProof; p != nil {
			r.proofs[refProof{p}.id()] = refProof{p}
			r.markedProofs[refProof{p}.id()] = true
		}
	case *pb.HubEvent_MergeOnChainEventBody:
		e := b.MergeOnChainEventBody.OnChainEvent
		r.custody[e.Fid] = append(r.custody[e.Fid], e)
	}
}

type refState struct {
	tables map[string]map[string]bool // table → live hashes
	names  map[string]uint64          // live username → fid
	fids   map[uint64]string          // fid → custody address
}

func (r *refModel) state() refState {
	st := refState{tables: map[string]map[string]bool{}, names: map[string]uint64{}, fids: map[uint64]string{}}
	for _, t := range []string{"casts", "reactions", "links", "verifications", "user_data", "lend_storage"} {
		st.tables[t] = map[string]bool{}
	}
	removed := map[string]bool{} // fid|target of cast removes
	winners := map[string]refVersion{}
	var compacts []*pb.Message
	for _, m := range r.msgs {
		d := m.Data
		switch d.Type {
		case pb.MessageType_MESSAGE_TYPE_CAST_REMOVE:
			removed[fmt.Sprint(d.Fid, string(d.GetCastRemoveBody().TargetHash))] = true
		case pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE:
			compacts = append(compacts, m)
		}
	}
	// compacted reports a link add that the newest compact state of its
	// (fid, type), by (timestamp, hash), is newer than and does not list:
	// the node deletes it and rejects it later. A link the newest state
	// lists may have come after it, whatever older states said; links a
	// state swept at its own timestamp are marked by its merge event.
	compacted := func(d *pb.MessageData) bool {
		if d.Type != pb.MessageType_MESSAGE_TYPE_LINK_ADD {
			return false
		}
		lb := d.GetLinkBody()
		var newest *pb.Message
		for _, c := range compacts {
			cd := c.Data
			if cd.Fid != d.Fid || cd.GetLinkCompactStateBody().Type != lb.Type {
				continue
			}
			if newest == nil || cd.Timestamp > newest.Data.Timestamp ||
				cd.Timestamp == newest.Data.Timestamp && bytes.Compare(c.Hash, newest.Hash) > 0 {
				newest = c
			}
		}
		if newest == nil || newest.Data.Timestamp <= d.Timestamp {
			return false
		}
		return !slices.Contains(newest.Data.GetLinkCompactStateBody().TargetFids, lb.GetTargetFid())
	}
	for _, m := range r.msgs {
		d := m.Data
		if r.marked[string(m.Hash)] || compacted(d) {
			continue // out of the running for its key
		}
		var key string
		v := refVersion{msg: m, ts: d.Timestamp}
		switch d.Type {
		case pb.MessageType_MESSAGE_TYPE_REACTION_ADD, pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE:
			b := d.GetReactionBody()
			key = fmt.Sprint("reactions|", d.Fid, b.Type, string(b.GetTargetCastId().GetHash()), b.GetTargetUrl())
			v.remove = d.Type == pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE
		case pb.MessageType_MESSAGE_TYPE_LINK_ADD, pb.MessageType_MESSAGE_TYPE_LINK_REMOVE:
			b := d.GetLinkBody()
			key = fmt.Sprint("links|", d.Fid, b.Type, b.GetTargetFid())
			v.remove = d.Type == pb.MessageType_MESSAGE_TYPE_LINK_REMOVE
		case pb.MessageType_MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS:
			key = fmt.Sprint("verifications|", d.Fid, string(d.GetVerificationAddAddressBody().Address))
		case pb.MessageType_MESSAGE_TYPE_VERIFICATION_REMOVE:
			key = fmt.Sprint("verifications|", d.Fid, string(d.GetVerificationRemoveBody().Address))
			v.remove = true
		case pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD:
			key = fmt.Sprint("user_data|", d.Fid, d.GetUserDataBody().Type)
		default:
			continue
		}
		if w, ok := winners[key]; !ok || v.beats(w) {
			winners[key] = v
		}
	}
	for _, m := range r.msgs {
		d := m.Data
		h := string(m.Hash)
		switch d.Type {
		case pb.MessageType_MESSAGE_TYPE_CAST_ADD:
			if !r.marked[h] && !removed[fmt.Sprint(d.Fid, h)] {
				st.tables["casts"][h] = true
			}
		case pb.MessageType_MESSAGE_TYPE_LEND_STORAGE:
			if !r.marked[h] {
				st.tables["lend_storage"][h] = true
			}
		}
	}
	for key, v := range winners {
		if v.remove {
			continue
		}
		table := key[:bytes.IndexByte([]byte(key), '|')]
		st.tables[table][string(v.msg.Hash)] = true
	}
	best := map[string]refProof{}
	for id, p := range r.proofs {
		if r.markedProofs[id] {
			continue
		}
		n := string(p.p.Name)
		if w, ok := best[n]; !ok || p.beats(w) {
			best[n] = p
		}
	}
	for n, p := range best {
		if !p.deletion() {
			st.names[n] = p.p.Fid
		}
	}
	for fid, evs := range r.custody {
		var last *pb.OnChainEvent
		for _, e := range evs {
			if last == nil || e.BlockNumber > last.BlockNumber || (e.BlockNumber == last.BlockNumber && e.LogIndex > last.LogIndex) {
				last = e
			}
		}
		st.fids[fid] = fmt.Sprintf("%x", last.GetIdRegisterEventBody().To)
	}
	return st
}

// genCase writes a small random history for fids base..base+2 as the node
// would emit it: merges with the messages they supersede, prunes, revokes,
// re-merges into keys whose holder was pruned or revoked (which the node
// accepts whatever their timestamp and hash), ties on timestamp, and backfill
// snapshots of the node's live set taken along the way.
func genCase(t testing.TB, rng *rand.Rand, base uint64, txBase uint64) []*pb.HubEvent {
	var evs []*pb.HubEvent
	var history []*pb.Message
	// The node's store: the holder of each conflict key, and what makes a
	// new version of a key.
	winner := map[string]refVersion{}
	keyOf := map[string]string{}
	makers := map[string]func(ts uint32) *pb.Message{}
	var vacated []string // keys whose holder was pruned or revoked
	pick := func(n int) int { return rng.IntN(n) }
	fid := func() uint64 { return base + uint64(pick(2)) }
	ts := func() uint32 { return uint32(1 + pick(5)) }
	targets := [][]byte{bytes.Repeat([]byte{byte(base)}, 20), bytes.Repeat([]byte{byte(base >> 8), 1}, 10)}
	addrs := [][]byte{bytes.Repeat([]byte{0xa1, byte(base)}, 10), bytes.Repeat([]byte{0xb2, byte(base)}, 10)}
	var castAdds []*pb.Message
	castLive := map[string]bool{}
	var lends []*pb.Message
	emitLWW := func(key string, m *pb.Message, remove bool, mk func(uint32) *pb.Message) {
		v := refVersion{msg: m, ts: m.Data.Timestamp, remove: remove}
		if _, ok := makers[key]; !ok {
			makers[key] = mk
		}
		var deleted []*pb.Message
		if w, ok := winner[key]; ok {
			if !v.beats(w) {
				if pick(3) > 0 { // the node rejects it; sometimes emit it anyway as a stale duplicate path
					return
				}
			} else {
				deleted = append(deleted, w.msg)
				winner[key] = v
			}
		} else {
			winner[key] = v
		}
		keyOf[string(m.Hash)] = key
		evs = append(evs, merge(m, deleted...))
		history = append(history, m)
	}
	// snapshot emits the node's live set as a backfill would, as id-0
	// merges without deleted_messages.
	snapshot := func() {
		var live []*pb.Message
		for _, w := range winner {
			if !w.remove {
				live = append(live, w.msg)
			}
		}
		for _, c := range castAdds {
			if castLive[string(c.Hash)] {
				live = append(live, c)
			}
		}
		live = append(live, lends...)
		for _, m := range live {
			evs = append(evs, &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
				Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: m}}})
		}
	}
	n := 6 + pick(12)
	for range n {
		f := fid()
		switch pick(11) {
		case 0, 1:
			var parent *pb.CastId
			if len(castAdds) > 0 && pick(2) == 0 {
				parent = castID(castAdds[pick(len(castAdds))])
			}
			m := castAdd(t, f, ts(), fmt.Sprintf("cast %d %d", base, pick(1000)), parent)
			castAdds = append(castAdds, m)
			castLive[string(m.Hash)] = true
			evs = append(evs, merge(m))
			history = append(history, m)
		case 2:
			if len(castAdds) == 0 {
				continue
			}
			a := castAdds[pick(len(castAdds))]
			m := castRemove(t, a.Data.Fid, ts(), a.Hash)
			delete(castLive, string(a.Hash))
			evs = append(evs, merge(m, a))
			history = append(history, m)
		case 3:
			tg := &pb.CastId{Fid: 1, Hash: targets[pick(2)]}
			typ := pb.ReactionType(1 + pick(2))
			rm := pick(3) == 0
			mk := func(ts uint32) *pb.Message { return reaction(t, false, f, ts, typ, tg, "") }
			emitLWW(fmt.Sprint("r", f, typ, string(tg.Hash)), reaction(t, rm, f, ts(), typ, tg, ""), rm, mk)
		case 4:
			rm := pick(3) == 0
			tf := uint64(pick(3))
			mk := func(ts uint32) *pb.Message { return link(t, false, f, ts, "follow", tf) }
			emitLWW(fmt.Sprint("l", f, tf), link(t, rm, f, ts(), "follow", tf), rm, mk)
		case 5:
			rm := pick(3) == 0
			a := addrs[pick(2)]
			mk := func(ts uint32) *pb.Message { return verification(t, false, f, ts, a) }
			emitLWW(fmt.Sprint("v", f, string(a)), verification(t, rm, f, ts(), a), rm, mk)
		case 6:
			typ := pb.UserDataType(1 + pick(2))
			if pick(2) == 0 {
				typ = pb.UserDataType_USER_DATA_TYPE_USERNAME
			}
			mk := func(ts uint32) *pb.Message { return userData(t, f, ts, typ, fmt.Sprint("v", rng.IntN(1000))) }
			emitLWW(fmt.Sprint("u", f, typ), mk(ts()), false, mk)
		case 7:
			switch pick(3) {
			case 0:
				evs = append(evs, merge(linkCompact(t, f, ts(), "follow", []uint64{uint64(pick(3))})))
			case 1:
				m := lendStorage(t, f, ts(), f+1, uint64(1+pick(3)))
				lends = append(lends, m)
				evs = append(evs, merge(m))
				history = append(history, m)
			default:
				name := fmt.Sprintf("n%d-%d", base, pick(2))
				owner := uint64(0)
				if pick(3) > 0 {
					owner = f
				}
				var deleted *pb.UserNameProof
				if pick(2) == 0 {
					deleted = fname(name, f, uint64(pick(5)))
				}
				evs = append(evs, proofEvent(fname(name, owner, uint64(1+pick(6))), deleted))
			}
		case 8, 9:
			// Prune or revoke, mostly of a key's current holder, which
			// leaves the key open to any version.
			var m *pb.Message
			if len(winner) > 0 && pick(3) > 0 {
				keys := make([]string, 0, len(winner))
				for k := range winner {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				k := keys[pick(len(keys))]
				m = winner[k].msg
			} else if len(history) > 0 {
				m = history[pick(len(history))]
			} else {
				continue
			}
			if k, ok := keyOf[string(m.Hash)]; ok && winner[k].msg == m {
				delete(winner, k)
				vacated = append(vacated, k)
			}
			delete(castLive, string(m.Hash))
			if pick(2) == 0 {
				evs = append(evs, prune(m))
			} else {
				evs = append(evs, revoke(m))
			}
		case 10:
			// A new version of a vacated key, often at the old holder's
			// timestamp (a tie settled by hash) or older.
			if len(vacated) == 0 {
				snapshot()
				continue
			}
			k := vacated[pick(len(vacated))]
			emitLWW(k, makers[k](uint32(1+pick(3))), false, nil)
		}
		if pick(8) == 0 {
			snapshot()
		}
	}
	for i := range pick(3) {
		evs = append(evs, onchain(base, uint32(1+pick(4)), uint32(i), txBase+uint64(i),
			&pb.IdRegisterEventBody{To: []byte{byte(base), byte(i), 0xcc}, EventType: pb.IdRegisterEventType(1 + pick(2))}))
	}
	return evs
}

// backfillOf wraps the model's live messages as a backfill would deliver
// them: synthetic id-0 merge events without deleted_messages.
func backfillOf(r *refModel, st refState) []*pb.HubEvent {
	var out []*pb.HubEvent
	for _, table := range st.tables {
		for h := range table {
			out = append(out, &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE,
				Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: r.msgs[h]}}})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return bytes.Compare(out[i].GetMergeMessageBody().Message.Hash, out[j].GetMergeMessageBody().Message.Hash) < 0
	})
	return out
}

func TestWriterConvergence(t *testing.T) {
	pool := migratedPool(t)
	w := newTestWriter(t, pool)
	ctx := context.Background()
	const rounds, casesPerRound = 6, 350
	model := newRefModel()
	var nextFid uint64 = 1000
	for round := range rounds {
		rng := rand.New(rand.NewPCG(uint64(round)+1, 0x5eed))
		var stream []*pb.HubEvent
		caseModel := newRefModel()
		for c := range casesPerRound {
			evs := genCase(t, rng, nextFid, uint64(round*100000+c*10))
			nextFid += 4
			for _, ev := range evs {
				model.observe(ev)
				caseModel.observe(ev)
			}
			stream = append(stream, evs...)
		}
		// Duplicates, then a backfill snapshot of the round's final live state.
		for i := range len(stream) / 5 {
			stream = append(stream, stream[rng.IntN(i+1)])
		}
		stream = append(stream, backfillOf(caseModel, caseModel.state())...)
		rng.Shuffle(len(stream), func(i, j int) { stream[i], stream[j] = stream[j], stream[i] })
		for len(stream) > 0 {
			n := min(len(stream), 1+rng.IntN(400))
			if _, err := w.Write(ctx, stream[:n]); err != nil {
				t.Fatalf("round %d: write: %v", round, err)
			}
			stream = stream[n:]
		}
	}
	want := model.state()
	for table, hashes := range want.tables {
		got := liveHashes(t, pool, table)
		missing, extra := 0, 0
		for h := range hashes {
			if !got[h] {
				missing++
				if missing <= 3 {
					m := model.msgs[h]
					t.Errorf("%s: live in the model, not in the database: %v fid %d ts %d marked=%v", table, m.Data.Type, m.Data.Fid, m.Data.Timestamp, model.marked[h])
				}
			}
		}
		for h := range got {
			if !hashes[h] {
				extra++
				if extra <= 3 {
					m := model.msgs[h]
					if m == nil {
						t.Errorf("%s: live row %x unknown to the model", table, h)
						continue
					}
					t.Errorf("%s: live in the database, not in the model: %v fid %d ts %d marked=%v", table, m.Data.Type, m.Data.Fid, m.Data.Timestamp, model.marked[h])
				}
			}
		}
		if missing+extra > 0 || len(hashes) == 0 {
			t.Errorf("%s: %d live in model, %d in database, %d missing, %d extra", table, len(hashes), len(got), missing, extra)
		}
	}
	rows, err := pool.Query(ctx, `SELECT username, fid FROM username_proofs WHERE deleted_at IS NULL`)
	if err != nil {
		t.Fatal(err)
	}
	gotNames := map[string]uint64{}
	for rows.Next() {
		var n string
		var f int64
		if err := rows.Scan(&n, &f); err != nil {
			t.Fatal(err)
		}
		gotNames[n] = uint64(f)
	}
	if fmt.Sprint(sortedMap(gotNames)) != fmt.Sprint(sortedMap(want.names)) || len(want.names) == 0 {
		t.Errorf("live usernames: %d in database, %d in model", len(gotNames), len(want.names))
	}
	rows, err = pool.Query(ctx, `SELECT fid, custody_address FROM fids`)
	if err != nil {
		t.Fatal(err)
	}
	gotFids := map[uint64]string{}
	for rows.Next() {
		var f int64
		var c []byte
		if err := rows.Scan(&f, &c); err != nil {
			t.Fatal(err)
		}
		gotFids[uint64(f)] = fmt.Sprintf("%x", c)
	}
	if fmt.Sprint(sortedMap(gotFids)) != fmt.Sprint(sortedMap(want.fids)) || len(want.fids) == 0 {
		t.Errorf("fids custody: %d in database, %d in model", len(gotFids), len(want.fids))
	}
	t.Logf("%d cases; live rows in model: casts %d reactions %d links %d verifications %d user_data %d lend %d names %d fids %d",
		rounds*casesPerRound, len(want.tables["casts"]), len(want.tables["reactions"]), len(want.tables["links"]),
		len(want.tables["verifications"]), len(want.tables["user_data"]), len(want.tables["lend_storage"]), len(want.names), len(want.fids))
}

func sortedMap[K string | uint64, V any](m map[K]V) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, fmt.Sprint(k, "=", v))
	}
	sort.Strings(out)
	return out
}
