// Package message checks and produces Farcaster message envelopes: the
// BLAKE3-160 hash over data_bytes, the Ed25519 signature over that hash, and
// the network a message belongs to. Ingest, the sink and the simulator share
// it so that all three agree on what a valid message is.
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
	// CheckHash verifies the hash scheme and the hash over data_bytes.
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

// DataBytes returns the bytes the hash covers: data_bytes as received, or,
// for a message without them, the deterministic encoding of data. The
// fallback can differ from the signer's bytes when encoders order oneof
// fields differently, which is why data_bytes must be preferred.
func DataBytes(m *pb.Message) ([]byte, error) {
	if m.DataBytes != nil {
		return m.DataBytes, nil
	}
	if m.Data == nil {
		return nil, reject(ReasonNoData, "neither data nor data_bytes is set")
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.Data)
	if err != nil {
		return nil, reject(ReasonEncode, "%v", err)
	}
	return b, nil
}

// Validate checks m according to mode. network is the network messages must
// belong to under CheckFull; FARCASTER_NETWORK_NONE accepts any.
func Validate(m *pb.Message, mode Mode, network pb.FarcasterNetwork) error {
	if mode == CheckNone {
		return nil
	}
	if m == nil {
		return reject(ReasonNoData, "nil message")
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
	if network != pb.FarcasterNetwork_FARCASTER_NETWORK_NONE {
		d := m.Data
		if d == nil {
			d = new(pb.MessageData)
			if err := proto.Unmarshal(data, d); err != nil {
				return reject(ReasonDecode, "data_bytes: %v", err)
			}
		}
		if d.Network != network {
			return reject(ReasonNetwork, "message is for %v, want %v", d.Network, network)
		}
	}
	return nil
}

// Sign encodes data, hashes it and signs the hash with key, returning a
// complete envelope with data_bytes set.
func Sign(data *pb.MessageData, key ed25519.PrivateKey) (*pb.Message, error) {
	b, err := proto.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode message data: %w", err)
	}
	return SignBytes(data, b, key), nil
}

// SignBytes builds the envelope for already-encoded data bytes.
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
