package message_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// TestOneofOrdering pins the encoder difference the package documentation
// describes. The expected hex was assembled field by field in prost's order
// (a oneof sits at its lowest field number) and in Go's (oneofs last).
func TestOneofOrdering(t *testing.T) {
	header := func(d *pb.MessageData) *pb.MessageData {
		d.Type = pb.MessageType_MESSAGE_TYPE_CAST_ADD
		d.Fid = vectorFID
		d.Timestamp = vectorTimestamp
		d.Network = vectorNetwork
		return d
	}
	cases := []struct {
		name string
		data *pb.MessageData
		// prost is what Snapchain hashes; goOrder is proto.Marshal's output.
		prost, goOrder string
	}{
		{
			name: "reply to a cast",
			data: header(&pb.MessageData{Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{
				Mentions:          []uint64{456},
				Parent:            &pb.CastAddBody_ParentCastId{ParentCastId: &pb.CastId{Fid: 321, Hash: repeat(0x02, 20)}},
				Text:              "gm @456",
				MentionsPositions: []uint32{3},
				Embeds:            []*pb.Embed{{Embed: &pb.Embed_Url{Url: "https://example.com"}}},
				Type:              pb.CastType_LONG_CAST,
			}}}),
			// ... 2a44 | 1202c803 (mentions) | 1a19… (parent_cast_id) | 2207… (text) | 2a0103 | 3215… | 4001
			prost: "080110d2091880b58e2d20012a441202c8031a1908c102121402020202020202020202020202020202020202022207676d20403435362a010332150a1368747470733a2f2f6578616d706c652e636f6d4001",
			// ... 2a44 | 1202c803 | 2207… | 2a0103 | 3215… | 4001 | 1a19… (parent last)
			goOrder: "080110d2091880b58e2d20012a441202c8032207676d20403435362a010332150a1368747470733a2f2f6578616d706c652e636f6d40011a1908c10212140202020202020202020202020202020202020202",
		},
		{
			name: "cast in a channel",
			data: header(&pb.MessageData{Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{
				Parent: &pb.CastAddBody_ParentUrl{ParentUrl: "https://farcaster.xyz/~/channel/dev"},
				Text:   "gm @456",
			}}}),
			// parent_url (7) comes before text (4): the oneof sits at 3.
			prost:   "080110d2091880b58e2d20012a2e3a2368747470733a2f2f6661726361737465722e78797a2f7e2f6368616e6e656c2f6465762207676d2040343536",
			goOrder: "080110d2091880b58e2d20012a2e2207676d20403435363a2368747470733a2f2f6661726361737465722e78797a2f7e2f6368616e6e656c2f646576",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			goBytes, err := proto.Marshal(c.data)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(goBytes); got != c.goOrder {
				t.Fatalf("proto.Marshal\n got %s\nwant %s", got, c.goOrder)
			}
			canon, err := message.DataBytes(&pb.Message{Data: c.data})
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(canon); got != c.prost {
				t.Fatalf("canonical encoding\n got %s\nwant %s", got, c.prost)
			}

			key := vectorKey(t)
			signed, err := message.Sign(c.data, key)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(signed.DataBytes, canon) {
				t.Fatalf("Sign encoded %x, want the canonical %x", signed.DataBytes, canon)
			}
			stripped := proto.CloneOf(signed)
			stripped.DataBytes = nil
			if err := message.Validate(stripped, message.CheckFull, vectorNetwork); err != nil {
				t.Fatalf("canonically signed message without data_bytes: %v", err)
			}

			// A signer that hashed Go's encoding is valid only while its
			// data_bytes travel with it: re-encoding cannot recover them.
			goSigned := message.SignBytes(c.data, goBytes, key)
			if err := message.Validate(goSigned, message.CheckFull, vectorNetwork); err != nil {
				t.Fatalf("go-encoded message with its data_bytes: %v", err)
			}
			goSigned.DataBytes = nil
			wantReason(t, message.Validate(goSigned, message.CheckFull, vectorNetwork), message.ReasonHashMismatch)
		})
	}
}

// TestCanonicalExtras covers encoding rules beyond oneof placement that the
// fallback must share with prost.
func TestCanonicalExtras(t *testing.T) {
	zero := uint32(0)
	cases := []struct {
		name string
		data *pb.MessageData
		want string
	}{
		{
			// A set proto3 optional and a set oneof member are written
			// even when zero; unset scalars are not.
			name: "zero optional and zero oneof member",
			data: &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_LINK_ADD, Body: &pb.MessageData_LinkBody{LinkBody: &pb.LinkBody{
				DisplayTimestamp: &zero,
				Target:           &pb.LinkBody_TargetFid{TargetFid: 0},
			}}},
			want: "0805" + "7204" + "1000" + "1800",
		},
		{
			// Negative int32 values are sign-extended to ten varint bytes.
			name: "negative packed int32",
			data: &pb.MessageData{Body: &pb.MessageData_KeyAddBody{KeyAddBody: &pb.KeyAddBody{Scopes: []int32{-1, 1}}}},
			want: "9a010d" + "4a0b" + "ffffffffffffffffff01" + "01",
		},
		{
			name: "empty body message",
			data: &pb.MessageData{Body: &pb.MessageData_CastRemoveBody{CastRemoveBody: &pb.CastRemoveBody{}}},
			want: "3200",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := message.DataBytes(&pb.Message{Data: c.data})
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got) != c.want {
				t.Fatalf("got %x, want %s", got, c.want)
			}
		})
	}

	// Fields unknown to this build are kept, after the known ones.
	d := &pb.MessageData{Fid: 7}
	d.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 30, protowire.VarintType), 5))
	got, err := message.DataBytes(&pb.Message{Data: d})
	if err != nil {
		t.Fatal(err)
	}
	if want := "1007" + "f00105"; hex.EncodeToString(got) != want {
		t.Fatalf("unknown field: got %x, want %s", got, want)
	}
}

func TestValidateRejections(t *testing.T) {
	key := vectorKey(t)
	base := func(t *testing.T) *pb.Message {
		m, err := message.Sign(&pb.MessageData{
			Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD, Fid: 9, Timestamp: vectorTimestamp, Network: vectorNetwork,
			Body: &pb.MessageData_CastAddBody{CastAddBody: &pb.CastAddBody{Text: "hi"}},
		}, key)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	cases := []struct {
		name   string
		mutate func(*pb.Message) *pb.Message
		mode   message.Mode
		want   message.Reason // "" = accepted
	}{
		{"valid", func(m *pb.Message) *pb.Message { return m }, message.CheckFull, ""},
		{"nil message", func(*pb.Message) *pb.Message { return nil }, message.CheckHash, message.ReasonNoData},
		{"nil message unchecked", func(*pb.Message) *pb.Message { return nil }, message.CheckNone, ""},
		{"no data at all", func(m *pb.Message) *pb.Message { m.Data, m.DataBytes = nil, nil; return m }, message.CheckHash, message.ReasonNoData},
		{"empty data_bytes", func(m *pb.Message) *pb.Message { m.DataBytes = []byte{}; return m }, message.CheckHash, message.ReasonNoData},
		{"hash scheme none", func(m *pb.Message) *pb.Message { m.HashScheme = pb.HashScheme_HASH_SCHEME_NONE; return m }, message.CheckHash, message.ReasonHashScheme},
		{"short hash", func(m *pb.Message) *pb.Message { m.Hash = m.Hash[:19]; return m }, message.CheckHash, message.ReasonHashMismatch},
		{"eip712 scheme", func(m *pb.Message) *pb.Message {
			m.SignatureScheme = pb.SignatureScheme_SIGNATURE_SCHEME_EIP712
			return m
		}, message.CheckFull, message.ReasonSignatureScheme},
		{"eip712 scheme hash mode", func(m *pb.Message) *pb.Message {
			m.SignatureScheme = pb.SignatureScheme_SIGNATURE_SCHEME_EIP712
			return m
		}, message.CheckHash, ""},
		{"short signer", func(m *pb.Message) *pb.Message { m.Signer = m.Signer[:31]; return m }, message.CheckFull, message.ReasonSignerLength},
		{"no signature", func(m *pb.Message) *pb.Message { m.Signature = nil; return m }, message.CheckFull, message.ReasonSignature},
		{"other signer", func(m *pb.Message) *pb.Message {
			other := message.SignBytes(m.Data, m.DataBytes, vectorKeyFromByte(0x42))
			m.Signer = other.Signer
			return m
		}, message.CheckFull, message.ReasonSignature},
		{"data differs from data_bytes", func(m *pb.Message) *pb.Message { m.Data.Fid = 10; return m }, message.CheckHash, message.ReasonDataMismatch},
		{"data differs, unchecked", func(m *pb.Message) *pb.Message { m.Data.Fid = 10; return m }, message.CheckNone, ""},
		{"data differs only by unknown fields", func(m *pb.Message) *pb.Message {
			m.Data.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 30, protowire.VarintType), 1))
			return m
		}, message.CheckFull, ""},
		{"data_bytes in another encoding of the same data", func(m *pb.Message) *pb.Message {
			// fid repeated with the same value (the last one wins): other
			// bytes, same data, as another client's encoder might produce.
			b := append([]byte(nil), m.DataBytes...)
			b = protowire.AppendVarint(protowire.AppendTag(b, 2, protowire.VarintType), 9)
			return message.SignBytes(m.Data, b, key)
		}, message.CheckFull, ""},
		{"signed garbage", func(m *pb.Message) *pb.Message {
			s := message.SignBytes(nil, []byte{0xff, 0xff}, key)
			return s
		}, message.CheckHash, message.ReasonDecode},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := c.mutate(base(t))
			err := message.Validate(m, c.mode, vectorNetwork)
			if c.want == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			wantReason(t, err, c.want)
		})
	}
}

func vectorKeyFromByte(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(repeat(b, ed25519.SeedSize))
}

func TestDecode(t *testing.T) {
	if _, err := message.Decode([]byte{0x0a, 0x05, 0x01}); message.ReasonOf(err) != message.ReasonDecode {
		t.Fatalf("truncated message: got %v, want %q", err, message.ReasonDecode)
	}
	m, err := message.Decode(nil)
	if err != nil {
		t.Fatalf("empty input is an empty message: %v", err)
	}
	wantReason(t, message.Validate(m, message.CheckHash, 0), message.ReasonNoData)
	if _, err := message.Data(m); message.ReasonOf(err) != message.ReasonNoData {
		t.Fatalf("Data of empty message: %v", err)
	}
	if _, err := message.Data(&pb.Message{DataBytes: []byte{0xff}}); message.ReasonOf(err) != message.ReasonDecode {
		t.Fatalf("Data of bad data_bytes: %v", err)
	}
}

func TestParseMode(t *testing.T) {
	cases := []struct {
		in   string
		want message.Mode
		err  bool
	}{
		{"off", message.CheckNone, false},
		{"none", message.CheckNone, false},
		{"", message.CheckNone, false},
		{"hash", message.CheckHash, false},
		{"full", message.CheckFull, false},
		{"FULL", message.CheckNone, true},
		{"strict", message.CheckNone, true},
	}
	for _, c := range cases {
		got, err := message.ParseMode(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v, error %v", c.in, got, err, c.want, c.err)
		}
		if err == nil && c.in != "none" && c.in != "" && got.String() != c.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), c.in)
		}
	}
}

func TestTime(t *testing.T) {
	if got := message.Time(vectorTimestamp); !got.Equal(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("Time(%d) = %v", vectorTimestamp, got)
	}
	if got := message.FarcasterEpoch.Unix(); got != 1609459200 {
		t.Fatalf("epoch unix %d, want 1609459200", got)
	}
	at := time.Date(2025, 6, 1, 12, 0, 0, 999, time.UTC)
	if got := message.Time(message.Timestamp(at)); !got.Equal(at.Truncate(time.Second)) {
		t.Fatalf("round trip %v -> %v", at, got)
	}
}
