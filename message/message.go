// Package message checks and produces Farcaster message envelopes: the
// BLAKE3-160 hash over data_bytes, the Ed25519 signature over that hash, and
// the network a message belongs to. Ingest, the sink and the simulator share
// it so that all three agree on what a valid message is.
//
// # Which bytes are hashed
//
// A message's hash covers one particular serialization of its MessageData:
// the bytes its author encoded and signed. Protobuf does not define a unique
// encoding, and encoders disagree in practice. The one that matters here is
// oneof placement: Snapchain's encoder (Rust prost) writes a oneof at the
// position of its lowest field number, while Go's protobuf runtime writes every
// oneof after all other fields. CastAddBody declares text = 4, mentions_positions
// = 5, embeds = 6 and type = 8 after the parent oneof {parent_cast_id = 3,
// parent_url = 7}, so for every reply the two encoders produce different
// bytes, and a Go re-encoding hashes to something else. Other clients add
// their own differences (ts-proto writes empty packed repeated fields, for
// example), which no decoder can reproduce because decoding forgets them.
//
// So a message that carries data_bytes is always verified over those bytes,
// exactly as received, and the data it describes is what those bytes decode
// to. Re-encoding is only the fallback for messages that arrive without
// data_bytes, which the network hashed over its own (prost) encoding of data;
// for those this package re-encodes in prost's field order (see DataBytes),
// which reproduces the signed bytes as long as every field of the message is
// known to this build. Sign emits the same canonical encoding, so envelopes it
// builds stay valid with or without data_bytes.
package message

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/zeebo/blake3"
	"google.golang.org/protobuf/proto"

	pb "github.com/waypointhq/waypoint/proto"
)

// HashSize is the length of a Farcaster message hash: BLAKE3 truncated to 160 bits.
const HashSize = 20

// FarcasterEpoch is the instant Farcaster timestamps count seconds from.
var FarcasterEpoch = time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)

// Time converts a Farcaster timestamp to wall-clock time.
func Time(ts uint32) time.Time { return FarcasterEpoch.Add(time.Duration(ts) * time.Second) }

// Timestamp converts wall-clock time to a Farcaster timestamp.
func Timestamp(t time.Time) uint32 { return uint32(t.Sub(FarcasterEpoch) / time.Second) }

// Hash returns BLAKE3-160 of b.
func Hash(b []byte) []byte {
	sum := blake3.Sum256(b)
	return append([]byte(nil), sum[:HashSize]...)
}

// Mode says how much of a message Validate checks.
type Mode int

const (
	// CheckNone accepts every decodable message.
	CheckNone Mode = iota
	// CheckHash verifies the hash scheme and the hash over data_bytes, and
	// that data, when also present, is what data_bytes decode to.
	CheckHash
	// CheckFull also verifies the Ed25519 signature and the network.
	CheckFull
)

// ParseMode maps the configuration words off, hash and full to a Mode.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "off", "none", "":
		return CheckNone, nil
	case "hash":
		return CheckHash, nil
	case "full":
		return CheckFull, nil
	}
	return CheckNone, fmt.Errorf("parse validation mode %q: want off, hash or full", s)
}

// String returns the configuration word of m.
func (m Mode) String() string {
	switch m {
	case CheckHash:
		return "hash"
	case CheckFull:
		return "full"
	}
	return "off"
}

// Reason classifies why a message was rejected; it is what a dead-letter
// record stores.
type Reason string

const (
	ReasonNoData          Reason = "missing_data"
	ReasonEncode          Reason = "encode_failed"
	ReasonHashScheme      Reason = "bad_hash_scheme"
	ReasonHashMismatch    Reason = "hash_mismatch"
	ReasonSignatureScheme Reason = "bad_signature_scheme"
	ReasonSignerLength    Reason = "bad_signer_length"
	ReasonSignature       Reason = "bad_signature"
	ReasonNetwork         Reason = "wrong_network"
	ReasonDecode          Reason = "decode_failed"
	// ReasonDataMismatch means data and data_bytes are both set but describe
	// different messages: the hash vouches only for data_bytes, so storing
	// data would store something nobody signed.
	ReasonDataMismatch Reason = "data_mismatch"
)

// Error is a validation failure with a machine-readable reason.
type Error struct {
	Reason Reason
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "invalid message: " + string(e.Reason)
	}
	return "invalid message: " + string(e.Reason) + ": " + e.Detail
}

// ReasonOf returns the reason of a validation error, or "" if err is not one.
func ReasonOf(err error) Reason {
	var ve *Error
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return ""
}

func reject(r Reason, format string, args ...any) error {
	return &Error{Reason: r, Detail: fmt.Sprintf(format, args...)}
}

// Decode parses the wire encoding of a Message. A failure is an *Error with
// ReasonDecode, so undecodable input dead-letters like any other rejection.
func Decode(b []byte) (*pb.Message, error) {
	m := new(pb.Message)
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, reject(ReasonDecode, "message: %v", err)
	}
	return m, nil
}

// DataBytes returns the bytes the hash covers: data_bytes as received, or,
// for a message without them, the canonical (prost field order) encoding of
// data. The fallback reproduces the signer's bytes only when the signer used
// that encoding and every field is known to this build, which is why
// data_bytes, when present, always wins; see the package documentation.
func DataBytes(m *pb.Message) ([]byte, error) {
	if m == nil {
		return nil, reject(ReasonNoData, "nil message")
	}
	if m.DataBytes != nil {
		if len(m.DataBytes) == 0 {
			// Snapchain rejects an empty data_bytes rather than falling back
			// to data; doing the same keeps us from accepting what the
			// network would not.
			return nil, reject(ReasonNoData, "data_bytes is present but empty")
		}
		return m.DataBytes, nil
	}
	if m.Data == nil {
		return nil, reject(ReasonNoData, "neither data nor data_bytes is set")
	}
	return canonical(m.Data), nil
}

// Data returns the MessageData a message describes: data if set, otherwise
// data_bytes decoded. After Validate has accepted m in CheckHash or CheckFull
// mode, both agree and are covered by the hash.
func Data(m *pb.Message) (*pb.MessageData, error) {
	if m == nil {
		return nil, reject(ReasonNoData, "nil message")
	}
	if m.Data != nil {
		return m.Data, nil
	}
	if len(m.DataBytes) == 0 {
		return nil, reject(ReasonNoData, "neither data nor data_bytes is set")
	}
	d := new(pb.MessageData)
	if err := proto.Unmarshal(m.DataBytes, d); err != nil {
		return nil, reject(ReasonDecode, "data_bytes: %v", err)
	}
	return d, nil
}

// Validate checks m according to mode. network is the network messages must
// belong to under CheckFull; FARCASTER_NETWORK_NONE accepts any.
//
// Checks run in a fixed order (hash scheme, hash, data consistency, signature
// scheme, signer, signature, network), so a message with several faults is
// always rejected with the same reason.
func Validate(m *pb.Message, mode Mode, network pb.FarcasterNetwork) error {
	if mode == CheckNone {
		return nil
	}
	data, err := DataBytes(m)
	if err != nil {
		return err
	}
	if m.HashScheme != pb.HashScheme_HASH_SCHEME_BLAKE3 {
		return reject(ReasonHashScheme, "%v", m.HashScheme)
	}
	if !bytes.Equal(Hash(data), m.Hash) {
		return reject(ReasonHashMismatch, "hash 0x%x does not match data", m.Hash)
	}
	d, err := signedData(m, data)
	if err != nil {
		return err
	}
	if mode < CheckFull {
		return nil
	}
	if m.SignatureScheme != pb.SignatureScheme_SIGNATURE_SCHEME_ED25519 {
		return reject(ReasonSignatureScheme, "%v", m.SignatureScheme)
	}
	if len(m.Signer) != ed25519.PublicKeySize {
		return reject(ReasonSignerLength, "signer has %d bytes, want %d", len(m.Signer), ed25519.PublicKeySize)
	}
	if !ed25519.Verify(ed25519.PublicKey(m.Signer), m.Hash, m.Signature) {
		return reject(ReasonSignature, "ed25519 signature does not verify for signer 0x%x", m.Signer)
	}
	if network != pb.FarcasterNetwork_FARCASTER_NETWORK_NONE && d.Network != network {
		return reject(ReasonNetwork, "message is for %v, want %v", d.Network, network)
	}
	return nil
}

// signedData returns the MessageData that data (the hashed bytes) encodes,
// checking that m.Data, if set, is that same message.
func signedData(m *pb.Message, data []byte) (*pb.MessageData, error) {
	if m.DataBytes == nil {
		// data was produced from m.Data, so they agree by construction.
		return m.Data, nil
	}
	if m.Data != nil {
		// Cheap proofs first: if either encoder reproduces data_bytes from
		// m.Data, decoding data_bytes would give m.Data back.
		if b, err := proto.Marshal(m.Data); err == nil && bytes.Equal(b, data) {
			return m.Data, nil
		}
		if bytes.Equal(canonical(m.Data), data) {
			return m.Data, nil
		}
	}
	d := new(pb.MessageData)
	if err := proto.Unmarshal(data, d); err != nil {
		return nil, reject(ReasonDecode, "data_bytes: %v", err)
	}
	if m.Data != nil && !sameData(d, m.Data) {
		return nil, reject(ReasonDataMismatch, "data differs from what data_bytes encode")
	}
	return d, nil
}

// sameData compares two MessageData by their known fields. Unknown fields
// are ignored because a relaying node drops the ones it does not know from
// data while data_bytes keep them; that loses nothing a consumer could read.
func sameData(a, b *pb.MessageData) bool {
	return proto.Equal(withoutUnknown(a), withoutUnknown(b))
}

func withoutUnknown(d *pb.MessageData) *pb.MessageData {
	b, err := proto.Marshal(d)
	if err != nil {
		return d
	}
	out := new(pb.MessageData)
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, out); err != nil {
		return d
	}
	return out
}

// Sign encodes data canonically, hashes it and signs the hash with key,
// returning a complete envelope with data_bytes set.
func Sign(data *pb.MessageData, key ed25519.PrivateKey) (*pb.Message, error) {
	if data == nil {
		return nil, errors.New("encode message data: data is nil")
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("sign message: private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	return SignBytes(data, canonical(data), key), nil
}

// SignBytes builds the envelope for already-encoded data bytes. key must be
// a full ed25519 private key; ed25519.NewKeyFromSeed makes one from a seed.
func SignBytes(data *pb.MessageData, dataBytes []byte, key ed25519.PrivateKey) *pb.Message {
	h := Hash(dataBytes)
	return &pb.Message{
		Data:            data,
		Hash:            h,
		HashScheme:      pb.HashScheme_HASH_SCHEME_BLAKE3,
		Signature:       ed25519.Sign(key, h),
		SignatureScheme: pb.SignatureScheme_SIGNATURE_SCHEME_ED25519,
		Signer:          key.Public().(ed25519.PublicKey),
		DataBytes:       dataBytes,
	}
}
