package message_test

import (
	"encoding/hex"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

func signVector(t *testing.T, g golden) *pb.Message {
	t.Helper()
	m, err := message.Sign(buildData(t, g), vectorKey(t))
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return m
}

func wantReason(t *testing.T, err error, want message.Reason) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want rejection with %q", want)
	}
	var ve *message.Error
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *message.Error", err, err)
	}
	if ve.Reason != want {
		t.Fatalf("reason %q (%v), want %q", ve.Reason, err, want)
	}
}

func TestGoldenVectors(t *testing.T) {
	vectors := goldenVectors()
	if len(vectors) != 13 {
		t.Fatalf("%d vectors, want the corpus's 13", len(vectors))
	}
	for _, g := range vectors {
		t.Run(g.id, func(t *testing.T) {
			if g.want.messageBytes == "" {
				t.Fatalf("no expected values for %s", g.id)
			}
			m := signVector(t, g)
			for _, c := range []struct {
				field string
				got   []byte
				want  string
			}{
				{"data_bytes", m.DataBytes, g.want.dataBytes},
				{"hash", m.Hash, g.want.hash},
				{"signature", m.Signature, g.want.signature},
				{"signer", m.Signer, g.want.signer},
			} {
				if got := hex.EncodeToString(c.got); got != c.want {
					t.Errorf("%s\n got %s\nwant %s", c.field, got, c.want)
				}
			}

			// Message and every MessageData in the corpus have no oneof that
			// Go's encoder moves (see TestOneofOrdering), so the stock
			// encoder reproduces the full wire bytes.
			wire, err := proto.Marshal(m)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			if got := hex.EncodeToString(wire); got != g.want.messageBytes {
				t.Errorf("message_bytes\n got %s\nwant %s", got, g.want.messageBytes)
			}

			decoded, err := message.Decode(unhex(t, g.want.messageBytes))
			if err != nil {
				t.Fatalf("decode corpus bytes: %v", err)
			}
			if !proto.Equal(decoded, m) {
				t.Errorf("corpus bytes decode to %v, want %v", decoded, m)
			}
		})
	}
}

func TestGoldenValidate(t *testing.T) {
	for _, g := range goldenVectors() {
		t.Run(g.id, func(t *testing.T) {
			m, err := message.Decode(unhex(t, g.want.messageBytes))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			for _, mode := range []message.Mode{message.CheckNone, message.CheckHash, message.CheckFull} {
				for _, network := range []pb.FarcasterNetwork{pb.FarcasterNetwork_FARCASTER_NETWORK_NONE, vectorNetwork} {
					if err := message.Validate(m, mode, network); err != nil {
						t.Errorf("Validate(%v, %v): %v", mode, network, err)
					}
				}
			}
			for _, network := range []pb.FarcasterNetwork{pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET, pb.FarcasterNetwork_FARCASTER_NETWORK_TESTNET} {
				wantReason(t, message.Validate(m, message.CheckFull, network), message.ReasonNetwork)
				// The network is a CheckFull concern only.
				if err := message.Validate(m, message.CheckHash, network); err != nil {
					t.Errorf("Validate(hash, %v): %v", network, err)
				}
			}

			// Without data_bytes the hash is checked over the canonical
			// re-encoding, which must reproduce the signed bytes.
			noBytes := proto.CloneOf(m)
			noBytes.DataBytes = nil
			if err := message.Validate(noBytes, message.CheckFull, vectorNetwork); err != nil {
				t.Errorf("without data_bytes: %v", err)
			}
			// With data_bytes only, the data (and its network) come from them.
			bytesOnly := proto.CloneOf(m)
			bytesOnly.Data = nil
			if err := message.Validate(bytesOnly, message.CheckFull, vectorNetwork); err != nil {
				t.Errorf("with data_bytes only: %v", err)
			}
			wantReason(t, message.Validate(bytesOnly, message.CheckFull, pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET), message.ReasonNetwork)
			d, err := message.Data(bytesOnly)
			if err != nil {
				t.Fatalf("Data: %v", err)
			}
			if !proto.Equal(d, m.Data) {
				t.Errorf("Data from data_bytes = %v, want %v", d, m.Data)
			}
		})
	}
}

// TestGoldenBitFlips flips every bit of each signed field in turn; each flip
// must be caught, with the reason that names the field's check.
func TestGoldenBitFlips(t *testing.T) {
	fields := []struct {
		name string
		get  func(*pb.Message) []byte
		// full is the reason under CheckFull; hashOK says CheckHash does
		// not look at the field.
		full   message.Reason
		hashOK bool
	}{
		{"data_bytes", func(m *pb.Message) []byte { return m.DataBytes }, message.ReasonHashMismatch, false},
		{"hash", func(m *pb.Message) []byte { return m.Hash }, message.ReasonHashMismatch, false},
		{"signature", func(m *pb.Message) []byte { return m.Signature }, message.ReasonSignature, true},
		{"signer", func(m *pb.Message) []byte { return m.Signer }, message.ReasonSignature, true},
	}
	for _, g := range goldenVectors() {
		for _, f := range fields {
			t.Run(g.id+"/"+f.name, func(t *testing.T) {
				orig, err := message.Decode(unhex(t, g.want.messageBytes))
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				n := len(f.get(orig)) * 8
				if n == 0 {
					t.Fatalf("field %s is empty", f.name)
				}
				for bit := range n {
					m := proto.CloneOf(orig)
					f.get(m)[bit/8] ^= 1 << (bit % 8)
					err := message.Validate(m, message.CheckFull, vectorNetwork)
					if message.ReasonOf(err) != f.full {
						t.Fatalf("bit %d: got %v, want reason %q", bit, err, f.full)
					}
					err = message.Validate(m, message.CheckHash, vectorNetwork)
					if f.hashOK && err != nil {
						t.Fatalf("bit %d: CheckHash rejected a field it does not check: %v", bit, err)
					}
					if !f.hashOK && message.ReasonOf(err) != f.full {
						t.Fatalf("bit %d: CheckHash got %v, want reason %q", bit, err, f.full)
					}
					if err := message.Validate(m, message.CheckNone, vectorNetwork); err != nil {
						t.Fatalf("bit %d: CheckNone rejected: %v", bit, err)
					}
				}
			})
		}
	}
}
