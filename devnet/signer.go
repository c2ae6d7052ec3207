package devnet

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"

	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// Signer builds signed messages for tests and for the workload: an Ed25519
// key derived from a seed, and the network its messages carry.
type Signer struct {
	key     ed25519.PrivateKey
	pub     ed25519.PublicKey
	network pb.FarcasterNetwork
}

// NewSigner returns the signer derived from seed; the same seed always
// gives the same key. Its messages are for FARCASTER_NETWORK_DEVNET.
func NewSigner(seed uint64) *Signer {
	var b [8 + 14]byte
	copy(b[:], "devnet-signer:")
	binary.BigEndian.PutUint64(b[14:], seed)
	sum := sha256.Sum256(b[:])
	key := ed25519.NewKeyFromSeed(sum[:])
	return &Signer{key: key, pub: key.Public().(ed25519.PublicKey), network: pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET}
}

// WithNetwork returns a signer with the same key whose messages carry n.
func (s *Signer) WithNetwork(n pb.FarcasterNetwork) *Signer {
	return &Signer{key: s.key, pub: s.pub, network: n}
}

// PublicKey returns the 32-byte public key messages are signed with.
func (s *Signer) PublicKey() []byte {
	return append([]byte(nil), s.pub...)
}

// Sign encodes, hashes and signs data as is.
func (s *Signer) Sign(data *pb.MessageData) (*pb.Message, error) {
	return message.Sign(data, s.key)
}

func (s *Signer) data(mt pb.MessageType, fid uint64, ts uint32) *pb.MessageData {
	return &pb.MessageData{Type: mt, Fid: fid, Timestamp: ts, Network: s.network}
}

// must signs d; the typed builders only produce encodable data unless a
// caller passes a string that is not valid UTF-8, for which they return nil.
func (s *Signer) must(d *pb.MessageData) *pb.Message {
	m, err := s.Sign(d)
	if err != nil {
		return nil
	}
	return m
}

// CastAdd builds a CAST_ADD. Options edit the body (mentions, embeds,
// parent, type) before it is signed.
func (s *Signer) CastAdd(fid uint64, ts uint32, text string, opts ...func(*pb.CastAddBody)) *pb.Message {
	b := &pb.CastAddBody{Text: text}
	for _, o := range opts {
		o(b)
	}
	d := s.data(pb.MessageType_MESSAGE_TYPE_CAST_ADD, fid, ts)
	d.Body = &pb.MessageData_CastAddBody{CastAddBody: b}
	return s.must(d)
}

// CastRemove builds a CAST_REMOVE of the cast with hash target.
func (s *Signer) CastRemove(fid uint64, ts uint32, target []byte) *pb.Message {
	d := s.data(pb.MessageType_MESSAGE_TYPE_CAST_REMOVE, fid, ts)
	d.Body = &pb.MessageData_CastRemoveBody{CastRemoveBody: &pb.CastRemoveBody{TargetHash: target}}
	return s.must(d)
}

// Reaction builds a REACTION_ADD (add true) or REACTION_REMOVE of type t on
// the cast target.
func (s *Signer) Reaction(fid uint64, ts uint32, add bool, t pb.ReactionType, target *pb.CastId) *pb.Message {
	mt := pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE
	if add {
		mt = pb.MessageType_MESSAGE_TYPE_REACTION_ADD
	}
	d := s.data(mt, fid, ts)
	d.Body = &pb.MessageData_ReactionBody{ReactionBody: &pb.ReactionBody{Type: t, Target: &pb.ReactionBody_TargetCastId{TargetCastId: target}}}
	return s.must(d)
}

// Link builds a LINK_ADD (add true) or LINK_REMOVE of type linkType ("follow").
func (s *Signer) Link(fid uint64, ts uint32, add bool, linkType string, target uint64) *pb.Message {
	mt := pb.MessageType_MESSAGE_TYPE_LINK_REMOVE
	if add {
		mt = pb.MessageType_MESSAGE_TYPE_LINK_ADD
	}
	d := s.data(mt, fid, ts)
	d.Body = &pb.MessageData_LinkBody{LinkBody: &pb.LinkBody{Type: linkType, Target: &pb.LinkBody_TargetFid{TargetFid: target}}}
	return s.must(d)
}

// LinkCompactState builds a LINK_COMPACT_STATE: the fid's complete set of
// links of linkType.
func (s *Signer) LinkCompactState(fid uint64, ts uint32, linkType string, targets ...uint64) *pb.Message {
	d := s.data(pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE, fid, ts)
	d.Body = &pb.MessageData_LinkCompactStateBody{LinkCompactStateBody: &pb.LinkCompactStateBody{Type: linkType, TargetFids: targets}}
	return s.must(d)
}

// UserData builds a USER_DATA_ADD.
func (s *Signer) UserData(fid uint64, ts uint32, t pb.UserDataType, value string) *pb.Message {
	d := s.data(pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD, fid, ts)
	d.Body = &pb.MessageData_UserDataBody{UserDataBody: &pb.UserDataBody{Type: t, Value: value}}
	return s.must(d)
}

// VerificationAdd builds a VERIFICATION_ADD_ETH_ADDRESS for a 20-byte
// Ethereum or 32-byte Solana address. The claim signature is filler: the
// simulator does not check it.
func (s *Signer) VerificationAdd(fid uint64, ts uint32, p pb.Protocol, address []byte) *pb.Message {
	claim := sha256.Sum256(append([]byte("claim"), address...))
	block := sha256.Sum256(append([]byte("block"), address...))
	sig := append(claim[:], claim[:]...)
	if p == pb.Protocol_PROTOCOL_ETHEREUM {
		sig = append(sig, 27)
	}
	d := s.data(pb.MessageType_MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS, fid, ts)
	d.Body = &pb.MessageData_VerificationAddAddressBody{VerificationAddAddressBody: &pb.VerificationAddAddressBody{
		Address: address, ClaimSignature: sig, BlockHash: block[:], Protocol: p,
	}}
	return s.must(d)
}

// VerificationRemove builds a VERIFICATION_REMOVE.
func (s *Signer) VerificationRemove(fid uint64, ts uint32, p pb.Protocol, address []byte) *pb.Message {
	d := s.data(pb.MessageType_MESSAGE_TYPE_VERIFICATION_REMOVE, fid, ts)
	d.Body = &pb.MessageData_VerificationRemoveBody{VerificationRemoveBody: &pb.VerificationRemoveBody{Address: address, Protocol: p}}
	return s.must(d)
}

// KeyAdd builds a KEY_ADD of a 32-byte Ed25519 key.
func (s *Signer) KeyAdd(fid uint64, ts uint32, key []byte) *pb.Message {
	d := s.data(pb.MessageType_MESSAGE_TYPE_KEY_ADD, fid, ts)
	d.Body = &pb.MessageData_KeyAddBody{KeyAddBody: &pb.KeyAddBody{Key: key, KeyType: 1, Deadline: ts + 3600, MetadataType: 1}}
	return s.must(d)
}

// KeyRemove builds a KEY_REMOVE.
func (s *Signer) KeyRemove(fid uint64, ts uint32, key []byte) *pb.Message {
	d := s.data(pb.MessageType_MESSAGE_TYPE_KEY_REMOVE, fid, ts)
	d.Body = &pb.MessageData_KeyRemoveBody{KeyRemoveBody: &pb.KeyRemoveBody{Key: key, SignatureType: 1, Deadline: ts + 3600}}
	return s.must(d)
}

// LendStorage builds a LEND_STORAGE of units 2025 storage units to toFid;
// zero units ends a lend.
func (s *Signer) LendStorage(fid uint64, ts uint32, toFid, units uint64) *pb.Message {
	d := s.data(pb.MessageType_MESSAGE_TYPE_LEND_STORAGE, fid, ts)
	d.Body = &pb.MessageData_LendStorageBody{LendStorageBody: &pb.LendStorageBody{ToFid: toFid, NumUnits: units, UnitType: pb.StorageUnitType_UNIT_TYPE_2025}}
	return s.must(d)
}

// hashed encodes and hashes d without signing: the workload signs in
// parallel later (signActions), since merging needs only the hash. The
// signer bytes are shared between the workload's messages, which nothing
// modifies.
func (s *Signer) hashed(d *pb.MessageData) *pb.Message {
	b, err := proto.Marshal(d)
	if err != nil {
		return nil
	}
	return &pb.Message{
		Data:            d,
		Hash:            message.Hash(b),
		HashScheme:      pb.HashScheme_HASH_SCHEME_BLAKE3,
		SignatureScheme: pb.SignatureScheme_SIGNATURE_SCHEME_ED25519,
		Signer:          s.pub,
		DataBytes:       b,
	}
}

// FnameProof builds an fname server proof that name belongs to fid (0
// deletes the name) as of timestamp (unix seconds). owner is the custody
// address; the signature is filler, as the simulator does not check it.
func FnameProof(name string, fid uint64, timestamp uint64, owner []byte) *pb.UserNameProof {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], fid)
	binary.BigEndian.PutUint64(b[8:], timestamp)
	sum := sha256.Sum256(append([]byte(name), b[:]...))
	sig := append(append(sum[:], sum[:]...), 28)
	return &pb.UserNameProof{Timestamp: timestamp, Name: []byte(name), Owner: owner, Signature: sig, Fid: fid, Type: pb.UserNameType_USERNAME_TYPE_FNAME}
}

// signActions signs every planned message that still needs a signature,
// on all cores when there are many.
func signActions(plan []action) {
	var todo []*action
	for i := range plan {
		if plan[i].signer != nil && plan[i].msg != nil && plan[i].msg.Signature == nil {
			todo = append(todo, &plan[i])
		}
	}
	parallel(len(todo), func(i int) {
		a := todo[i]
		a.msg.Signature = ed25519.Sign(a.signer.key, a.msg.Hash)
	})
}
