package message_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// BenchmarkValidate measures one Validate call per op for each mode, on a
// message that carries data_bytes (hashed as received) and on one that does
// not (hashed over the canonical re-encoding of data).
func BenchmarkValidate(b *testing.B) {
	var cast golden
	for _, g := range goldenVectors() {
		if g.id == "cast_add_basic" {
			cast = g
		}
	}
	withBytes, err := message.Decode(unhex(b, cast.want.messageBytes))
	if err != nil {
		b.Fatal(err)
	}
	withoutBytes := proto.CloneOf(withBytes)
	withoutBytes.DataBytes = nil

	for _, mode := range []message.Mode{message.CheckNone, message.CheckHash, message.CheckFull} {
		for _, c := range []struct {
			name string
			m    *pb.Message
		}{
			{"data_bytes", withBytes},
			{"reencode", withoutBytes},
		} {
			b.Run(mode.String()+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := message.Validate(c.m, mode, vectorNetwork); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
