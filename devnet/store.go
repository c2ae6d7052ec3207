package devnet

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"

	pb "github.com/waypointhq/waypoint/proto"
)

// kind is one of a user's message stores.
type kind uint8

const (
	kindCasts kind = iota
	kindReactions
	kindLinks
	kindVerifications
	kindUserData
	kindUsernameProofs
	kindLends
	kindKeys
	numKinds
)

// entry is a stored message: its sort key, its conflict key and its
// encoding. Messages are kept encoded so a large state stays small; reads
// decode them.
type entry struct {
	ts     uint32
	hash   [20]byte
	mtype  pb.MessageType
	remove bool
	shared bool // raw points into a shard's event arena
	key    string
	aux    string // user data value, link type
	num    uint64 // link target fid, verification protocol, lend recipient
	units  uint64 // lend units
	raw    []byte // the encoding, compacted when dup.n > 0
	dup    dupLayout
}

// full returns the message's encoding.
func (e *entry) full() []byte { return e.dup.expand(e.raw) }

// less orders entries by (timestamp, hash), the order lists and pruning use.
func (e *entry) less(o *entry) bool {
	if e.ts != o.ts {
		return e.ts < o.ts
	}
	return bytes.Compare(e.hash[:], o.hash[:]) < 0
}

// beats reports whether e wins a last-write-wins conflict against o: the
// later timestamp wins; on a tie a remove beats an add; then the higher hash
// wins.
func (e *entry) beats(o *entry) bool {
	if e.ts != o.ts {
		return e.ts > o.ts
	}
	if e.remove != o.remove {
		return e.remove
	}
	return bytes.Compare(e.hash[:], o.hash[:]) > 0
}

// msgStore is one store of one user.
type msgStore struct {
	byKey  map[string]*entry
	sorted []*entry // every stored message, (timestamp, hash) ascending
}

func (s *msgStore) insert(e *entry) {
	if s.byKey == nil {
		s.byKey = make(map[string]*entry)
	}
	s.byKey[e.key] = e
	i := sort.Search(len(s.sorted), func(i int) bool { return e.less(s.sorted[i]) })
	s.sorted = append(s.sorted, nil)
	copy(s.sorted[i+1:], s.sorted[i:])
	s.sorted[i] = e
}

func (s *msgStore) delete(e *entry) {
	if s.byKey[e.key] == e {
		delete(s.byKey, e.key)
	}
	i := sort.Search(len(s.sorted), func(i int) bool { return !s.sorted[i].less(e) })
	if i < len(s.sorted) && s.sorted[i] == e {
		s.sorted = append(s.sorted[:i], s.sorted[i+1:]...)
	}
}

// compactState is a user's LINK_COMPACT_STATE for one link type.
type compactState struct {
	e       *entry
	targets map[uint64]bool
}

// fidState is everything the node stores for one fid.
type fidState struct {
	fid        uint64
	stores     [numKinds]msgStore
	compact    map[string]*compactState
	onchain    map[pb.OnChainEventType][]*pb.OnChainEvent
	registered bool
	rented     uint64
	borrowed   uint64
	lent       uint64
}

// units returns the storage units the fid holds. A fid without rented
// storage is treated as holding one unit, so tests can submit messages
// without setting up on-chain events first.
func (f *fidState) units() uint64 {
	u := f.rented + f.borrowed
	if f.lent >= u {
		return 1
	}
	if u -= f.lent; u == 0 {
		return 1
	}
	return u
}

// MergeError says why a message, on-chain event or username proof was not
// merged. Code is the node's error code (bad_request.duplicate,
// bad_request.conflict, bad_request.prunable, bad_request.validation_failure).
type MergeError struct {
	Code   string
	Reason string
	Hash   []byte
}

func (e *MergeError) Error() string {
	if len(e.Hash) > 0 {
		return fmt.Sprintf("merge 0x%x: %s: %s", e.Hash, e.Code, e.Reason)
	}
	return fmt.Sprintf("merge: %s: %s", e.Code, e.Reason)
}

func mergeErr(code, format string, args ...any) *MergeError {
	return &MergeError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

const (
	codeDuplicate  = "bad_request.duplicate"
	codeConflict   = "bad_request.conflict"
	codePrunable   = "bad_request.prunable"
	codeValidation = "bad_request.validation_failure"
)

func u64key(v uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return string(b[:])
}

// classify returns the store, conflict key and side of a message, filling
// the entry's key fields.
func classify(d *pb.MessageData, e *entry) (kind, *MergeError) {
	e.mtype = d.Type
	switch d.Type {
	case pb.MessageType_MESSAGE_TYPE_CAST_ADD:
		b := d.GetCastAddBody()
		if b == nil {
			return 0, mergeErr(codeValidation, "cast add without cast_add_body")
		}
		if err := checkCast(b); err != nil {
			return 0, err
		}
		e.key = string(e.hash[:])
		return kindCasts, nil
	case pb.MessageType_MESSAGE_TYPE_CAST_REMOVE:
		b := d.GetCastRemoveBody()
		if b == nil || len(b.TargetHash) != 20 {
			return 0, mergeErr(codeValidation, "cast remove needs a 20-byte target_hash")
		}
		e.key, e.remove = string(b.TargetHash), true
		return kindCasts, nil
	case pb.MessageType_MESSAGE_TYPE_REACTION_ADD, pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE:
		b := d.GetReactionBody()
		if b == nil {
			return 0, mergeErr(codeValidation, "reaction without reaction_body")
		}
		if b.Type != pb.ReactionType_REACTION_TYPE_LIKE && b.Type != pb.ReactionType_REACTION_TYPE_RECAST {
			return 0, mergeErr(codeValidation, "invalid reaction type %v", b.Type)
		}
		switch t := b.Target.(type) {
		case *pb.ReactionBody_TargetCastId:
			if t.TargetCastId == nil || len(t.TargetCastId.Hash) != 20 {
				return 0, mergeErr(codeValidation, "reaction target cast id needs a 20-byte hash")
			}
			e.key = string([]byte{byte(b.Type), 'c'}) + u64key(t.TargetCastId.Fid) + string(t.TargetCastId.Hash)
		case *pb.ReactionBody_TargetUrl:
			if t.TargetUrl == "" {
				return 0, mergeErr(codeValidation, "reaction target url is empty")
			}
			e.key = string([]byte{byte(b.Type), 'u'}) + t.TargetUrl
		default:
			return 0, mergeErr(codeValidation, "reaction without a target")
		}
		e.remove = d.Type == pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE
		return kindReactions, nil
	case pb.MessageType_MESSAGE_TYPE_LINK_ADD, pb.MessageType_MESSAGE_TYPE_LINK_REMOVE:
		b := d.GetLinkBody()
		if b == nil {
			return 0, mergeErr(codeValidation, "link without link_body")
		}
		t, ok := b.Target.(*pb.LinkBody_TargetFid)
		if !ok || t.TargetFid == 0 {
			return 0, mergeErr(codeValidation, "link without target_fid")
		}
		if b.Type == "" || len(b.Type) > 8 {
			return 0, mergeErr(codeValidation, "link type must be 1 to 8 bytes")
		}
		e.key = b.Type + "\x00" + u64key(t.TargetFid)
		e.aux, e.num = b.Type, t.TargetFid
		e.remove = d.Type == pb.MessageType_MESSAGE_TYPE_LINK_REMOVE
		return kindLinks, nil
	case pb.MessageType_MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS:
		b := d.GetVerificationAddAddressBody()
		if b == nil {
			return 0, mergeErr(codeValidation, "verification without verification_add_address_body")
		}
		if err := checkAddress(b.Address, b.Protocol); err != nil {
			return 0, err
		}
		e.key, e.num = string(b.Address), uint64(b.Protocol)
		return kindVerifications, nil
	case pb.MessageType_MESSAGE_TYPE_VERIFICATION_REMOVE:
		b := d.GetVerificationRemoveBody()
		if b == nil {
			return 0, mergeErr(codeValidation, "verification remove without verification_remove_body")
		}
		if err := checkAddress(b.Address, b.Protocol); err != nil {
			return 0, err
		}
		e.key, e.num, e.remove = string(b.Address), uint64(b.Protocol), true
		return kindVerifications, nil
	case pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD:
		b := d.GetUserDataBody()
		if b == nil || b.Type == pb.UserDataType_USER_DATA_TYPE_NONE {
			return 0, mergeErr(codeValidation, "user data needs a user_data_body with a type")
		}
		e.key, e.aux = u64key(uint64(b.Type)), b.Value
		return kindUserData, nil
	case pb.MessageType_MESSAGE_TYPE_USERNAME_PROOF:
		b := d.GetUsernameProofBody()
		if b == nil || len(b.Name) == 0 {
			return 0, mergeErr(codeValidation, "username proof needs a name")
		}
		if b.Fid != d.Fid {
			return 0, mergeErr(codeValidation, "username proof is for fid %d, message is from fid %d", b.Fid, d.Fid)
		}
		e.key = string(b.Name)
		return kindUsernameProofs, nil
	case pb.MessageType_MESSAGE_TYPE_LEND_STORAGE:
		b := d.GetLendStorageBody()
		if b == nil || b.ToFid == 0 || b.ToFid == d.Fid {
			return 0, mergeErr(codeValidation, "lend storage needs a to_fid other than the sender")
		}
		e.key, e.num, e.units = u64key(b.ToFid), b.ToFid, b.NumUnits
		return kindLends, nil
	case pb.MessageType_MESSAGE_TYPE_KEY_ADD:
		b := d.GetKeyAddBody()
		if b == nil || len(b.Key) != 32 {
			return 0, mergeErr(codeValidation, "key add needs a 32-byte key")
		}
		e.key = string(b.Key)
		return kindKeys, nil
	case pb.MessageType_MESSAGE_TYPE_KEY_REMOVE:
		b := d.GetKeyRemoveBody()
		if b == nil || len(b.Key) != 32 {
			return 0, mergeErr(codeValidation, "key remove needs a 32-byte key")
		}
		e.key, e.remove = string(b.Key), true
		return kindKeys, nil
	}
	return 0, mergeErr(codeValidation, "message type %v is not stored", d.Type)
}

// checkCast applies the node's structural limits on a cast body.
func checkCast(b *pb.CastAddBody) *MergeError {
	limit := map[pb.CastType]int{pb.CastType_CAST: 320, pb.CastType_LONG_CAST: 1024, pb.CastType_TEN_K_CAST: 10000}[b.Type]
	switch {
	case limit == 0:
		return mergeErr(codeValidation, "unknown cast type %v", b.Type)
	case len(b.Text) > limit:
		return mergeErr(codeValidation, "%v text is %d bytes, more than %d", b.Type, len(b.Text), limit)
	case len(b.Mentions) > 10:
		return mergeErr(codeValidation, "%d mentions, more than 10", len(b.Mentions))
	case len(b.Mentions) != len(b.MentionsPositions):
		return mergeErr(codeValidation, "%d mentions with %d positions", len(b.Mentions), len(b.MentionsPositions))
	case len(b.Embeds) > 4:
		return mergeErr(codeValidation, "%d embeds, more than 4", len(b.Embeds))
	}
	for i, p := range b.MentionsPositions {
		if int(p) > len(b.Text) || i > 0 && p < b.MentionsPositions[i-1] {
			return mergeErr(codeValidation, "mention position %d is out of order or past the text", p)
		}
	}
	if c := b.GetParentCastId(); c != nil && (c.Fid == 0 || len(c.Hash) != 20) {
		return mergeErr(codeValidation, "parent cast id needs a fid and a 20-byte hash")
	}
	return nil
}

func checkAddress(addr []byte, p pb.Protocol) *MergeError {
	switch p {
	case pb.Protocol_PROTOCOL_ETHEREUM:
		if len(addr) != 20 {
			return mergeErr(codeValidation, "ethereum address must be 20 bytes, got %d", len(addr))
		}
	case pb.Protocol_PROTOCOL_SOLANA:
		if len(addr) != 32 {
			return mergeErr(codeValidation, "solana address must be 32 bytes, got %d", len(addr))
		}
	default:
		return mergeErr(codeValidation, "unknown protocol %v", p)
	}
	return nil
}

// isCrossShard reports whether merges of the type appear on every shard.
func isCrossShard(t pb.MessageType) bool {
	switch t {
	case pb.MessageType_MESSAGE_TYPE_KEY_ADD, pb.MessageType_MESSAGE_TYPE_KEY_REMOVE, pb.MessageType_MESSAGE_TYPE_LEND_STORAGE:
		return true
	}
	return false
}

// limit returns the number of messages the fid may keep in store k, or 0
// for stores without a limit.
func (s *Sim) limit(f *fidState, k kind) int {
	var per int
	switch k {
	case kindCasts:
		per = s.opts.Limits.Casts
	case kindReactions:
		per = s.opts.Limits.Reactions
	case kindLinks:
		per = s.opts.Limits.Links
	case kindVerifications:
		per = s.opts.Limits.Verifications
	case kindUserData:
		per = s.opts.Limits.UserData
	case kindUsernameProofs:
		per = s.opts.Limits.UsernameProofs
	default:
		return 0
	}
	return per * int(f.units())
}
